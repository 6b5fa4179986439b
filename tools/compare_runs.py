"""Compare this checkout's run records with another commit's: which runs give the same numbers.

    python tools/compare_runs.py e8dd1a3 [--profile cpu]

Pairs each run of ``results/runs/`` with the run of the same parameters and data at the given commit (its
``params.json`` identity without the code hash; an upstream run named by ``source_run`` or another ``*_run``
key stands for its step, model and variant, not its time stamp and digest, which the code hash moves) and
reports how many give the same test and validation top-1. A pair that differs is marked ``upstream`` when
the run it starts from differs too (its difference is inherited), ``own`` otherwise (the difference
arises in this run: training, BN recalibration, ...). Used to show that a change of code that should not
move any number (e.g. evaluating through the bit-exact inference engine) did not, up to what the
float order of training moves (threads: the pipeline's thread budget follows which notebooks run at once).
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


def _key(identity: dict) -> str:
    params = {k: (_name(v) if k.endswith("_run") and isinstance(v, str) else v)
              for k, v in identity["params"].items()}
    return json.dumps({"params": params, "data": identity.get("data")}, sort_keys=True)


def load_runs(runs_dir: Path, profile: str) -> pd.DataFrame:
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
        rows.append({"key": _key(identity), "run_id": params_file.parent.name, "step": params_file.parent.parent.name,
                     "source": identity["params"].get("source_run"), "top1": metrics.get("top1"),
                     "val_top1": metrics.get("val_top1")})
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
    j = new.merge(old[["key", "run_id", "top1", "val_top1"]], on="key", how="inner", suffixes=("", "_old"))

    def eq(a, b):
        return (a == b) | (a.isna() & b.isna())
    j["same"] = eq(j.top1, j.top1_old) & eq(j.val_top1, j.val_top1_old)
    differs = set(j.loc[~j.same, "run_id"])
    j["why"] = ["" if s else ("upstream" if src in differs else "own") for s, src in zip(j.same, j.source)]
    return j


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit whose results/runs are the reference")
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    new = load_runs(ROOT / "results" / "runs", args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_runs(_runs_at(args.rev, Path(tmp)), args.profile)
    j = compare(new, old)
    print(f"{len(new)} runs of profile {args.profile} here, {len(j)} with a twin at {args.rev} (same parameters "
          f"and data): {int(j.same.sum())} give the same test and validation top-1, {int((~j.same).sum())} differ "
          f"({int((j.why == 'own').sum())} in the run itself, {int((j.why == 'upstream').sum())} inherited from "
          f"the run they start from); {len(new) - len(j)} have no twin")
    print(j.groupby("step").agg(paired=("same", "size"), same=("same", "sum"),
                                own=("why", lambda w: int((w == "own").sum()))).to_string())
    if (~j.same).any():
        cols = ["why", "run_id", "top1", "top1_old", "val_top1", "val_top1_old"]
        print(j.loc[~j.same, cols].sort_values(["why", "run_id"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
