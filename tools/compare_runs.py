"""Compare this checkout's run records with another commit's: which runs give the same numbers.

    python tools/compare_runs.py e8dd1a3 [--profile cpu]

Pairs each run of ``results/runs/`` with the run of the same parameters and data at the given commit (its
``params.json`` identity without the code hash; an upstream run named by ``source_run`` or another ``*_run``
key stands for its step, model and variant, not its time stamp and digest, which the code hash moves) and
reports how many give the same test and validation top-1. A pair that differs is marked ``upstream`` when
the run it starts from (``source_run``, ``init_run``, ``teacher_run``) differs too (its difference is
inherited), ``threads`` when the two ran on different torch thread counts (``cpu_threads`` of their
``env.json``: the float order of training differs, and the pipeline's thread budget follows which notebooks
run at once), ``own`` otherwise (the difference arises in this run on the same thread count). Used to show
that a change of code that should not move any number (e.g. evaluating through the bit-exact inference
engine) did not. ``--code`` keeps this checkout's runs of one code hash (a results folder that still holds
the reference's runs beside the new ones).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\d{8}-\d{6}-(.*)-[0-9a-f]{10}$")  # <date>-<time>-<name>-<digest>


def _name(run_id: str) -> str:
    m = STAMP.match(str(run_id))
    return m.group(1) if m else str(run_id)


def _key(identity: dict, drop: frozenset = frozenset()) -> str:
    params = {k: (_name(v) if k.endswith("_run") and isinstance(v, str) else v)
              for k, v in identity["params"].items() if k not in drop}
    return json.dumps({"params": params, "data": identity.get("data")}, sort_keys=True)


def new_default_keys(new_dir: Path, old_dir: Path, profile: str) -> frozenset:
    """Parameters that only this checkout's runs record, each at its schema default in every one of them: a key
    added to the configuration since the reference (e.g. ``compile: false``), which the reference's runs ran
    with as well; left out of the pairing."""
    from mvlib.study.config import SCHEMA

    def names(d):
        out = {}
        for f in d.glob("*/*/params.json"):
            p = json.loads(f.read_text())["identity"]["params"]
            if p.get("profile") == profile:
                for k, v in p.items():
                    out.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
        return out
    new, old = names(new_dir), names(old_dir)
    return frozenset(k for k, vals in new.items() if k not in old and k in SCHEMA
                     and vals == {json.dumps(SCHEMA[k].default, sort_keys=True)})


def load_runs(runs_dir: Path, profile: str, drop: frozenset = frozenset()) -> pd.DataFrame:
    """One row per finished run: its pairing key, the run it starts from, and its test / validation top-1."""
    rows = []
    for params_file in sorted(runs_dir.glob("*/*/params.json")):
        metrics_file = params_file.with_name("metrics.json")
        if not metrics_file.exists():
            continue
        identity = json.loads(params_file.read_text())["identity"]
        if identity["params"].get("profile") != profile:
            continue
        metrics = json.loads(metrics_file.read_text())
        env_file = params_file.with_name("env.json")
        env = json.loads(env_file.read_text()) if env_file.exists() else {}
        p = identity["params"]
        rows.append({"key": _key(identity, drop), "run_id": params_file.parent.name, "step": params_file.parent.parent.name,
                     "source": p.get("source_run") or p.get("init_run") or p.get("teacher_run"),
                     "code": identity.get("code_hash"), "threads": env.get("cpu_threads"),
                     "top1": metrics.get("top1"), "val_top1": metrics.get("val_top1")})
    return pd.DataFrame(rows)


def _runs_at(rev: str, into: Path) -> Path:
    archive = into / "runs.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", rev, "results/runs"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(into, filter="data")
    return into / "results" / "runs"


def compare(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """``new`` with the old twin's numbers (``*_old``), ``same`` and, where they differ, ``why``."""
    j = new.merge(old[["key", "run_id", "threads", "top1", "val_top1"]], on="key", how="inner", suffixes=("", "_old"))

    def eq(a, b):
        return (a == b) | (a.isna() & b.isna())
    j["same"] = eq(j.top1, j.top1_old) & eq(j.val_top1, j.val_top1_old)
    differs = set(j.loc[~j.same, "run_id"])
    j["why"] = ["" if s else "upstream" if src in differs else "threads" if t != t_old else "own"
                for s, src, t, t_old in zip(j.same, j.source, j.threads, j.threads_old)]
    return j


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit whose results/runs are the reference")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--code", help="keep this checkout's runs of this code hash only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = _runs_at(args.rev, Path(tmp))
        drop = new_default_keys(ROOT / "results" / "runs", old_dir, args.profile)
        old = load_runs(old_dir, args.profile, drop)
    new = load_runs(ROOT / "results" / "runs", args.profile, drop)
    if args.code:
        new = new[new.code.astype(str).str.startswith(args.code)]
    if drop:
        print(f"parameters new since {args.rev}, at their defaults here, left out of the pairing: {sorted(drop)}")
    j = compare(new, old)
    print(f"{len(new)} runs of profile {args.profile} here, {len(j)} with a twin at {args.rev} (same parameters "
          f"and data): {int(j.same.sum())} give the same test and validation top-1, {int((~j.same).sum())} differ "
          f"({int((j.why == 'own').sum())} in the run itself on the same thread count, "
          f"{int((j.why == 'threads').sum())} on another thread count, {int((j.why == 'upstream').sum())} inherited "
          f"from the run they start from); {len(new) - len(j)} have no twin")
    print(j.groupby("step").agg(paired=("same", "size"), same=("same", "sum"),
                                threads=("why", lambda w: int((w == "threads").sum())),
                                own=("why", lambda w: int((w == "own").sum()))).to_string())
    if (~j.same).any():
        cols = ["why", "run_id", "threads", "threads_old", "top1", "top1_old", "val_top1", "val_top1_old"]
        print(j.loc[~j.same, cols].sort_values(["why", "run_id"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
