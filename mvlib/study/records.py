"""Run records: one folder per run, identified by a hash of its resolved configuration.

Layout::

    results/runs/<step>/<run_id>/params.json    resolved configuration + config_hash
                                 env.json       git commit and dirty flag, versions, device
                                 history.csv    one row per epoch
                                 metrics.json   final numbers (written last: its presence = finished)
    checkpoints/<step>/<run_id>/last.pt         outside git (ignored folder)

``run_id = <UTC time>-<model>-<variant>-<hash>``. A finished run of the same
configuration (metrics and checkpoint present, or an evaluation-only record)
is reused unless ``force``; an
unfinished one is resumed from its checkpoint; otherwise a new folder is made.
Nothing is ever overwritten: ``force`` makes a new folder. Every file is
written atomically (temporary file + ``os.replace``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..environment import environment_info
from ..files import write_atomic, write_json
from .config import REPO_ROOT

SUMMARY_COLUMNS = ["step", "run_id", "model", "variant", "profile", "dataset", "top1", "top5", "seconds"]


def config_hash(params: dict[str, Any]) -> str:
    """First 10 hex digits of the sha256 of the canonical JSON of ``params``."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def resolve_results_dir(results_dir: str | Path) -> Path:
    p = Path(results_dir)
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass
class Run:
    """One run folder (and its checkpoint folder)."""

    step: str
    run_id: str
    dir: Path
    checkpoint_dir: Path
    params: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def finished(self) -> bool:
        return (self.dir / "metrics.json").is_file()

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.dir / "metrics.json").read_text())

    def history(self) -> list[dict[str, Any]]:
        path = self.dir / "history.csv"
        if not path.is_file():
            return []
        with open(path) as f:
            return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        write_atomic(self.dir / "history.csv", buf.getvalue())

    def finish(self, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json`` (marks the run finished) and refresh the summary."""
        required = {"model", "variant", "profile", "dataset", "top1", "top5", "seconds"}
        missing = required - set(metrics)
        if missing:
            raise ValueError(f"metrics of run {self.run_id} lack {sorted(missing)}")
        write_json(self.dir / "metrics.json", {**metrics, "step": self.step, "run_id": self.run_id})
        update_summary(self.dir.parent.parent.parent)


def _num(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except (TypeError, ValueError):
            pass
    return v


def open_run(step: str, model: str, variant: str, params: dict[str, Any], results_dir="results",
             force: bool = False, device: str = "cpu") -> Run:
    """Find or create the run of this configuration (see the module docstring)."""
    results = resolve_results_dir(results_dir)
    params = {**params, "step": step, "model": model, "variant": variant}
    h = config_hash(params)
    step_dir = results / "runs" / step
    ck_root = results.parent / "checkpoints" / step if results.name == "results" else results / "checkpoints" / step
    candidates = sorted(p for p in step_dir.glob(f"*-{h}*") if (p / "params.json").is_file()) if step_dir.is_dir() else []
    for path in reversed(candidates):  # newest first
        run = Run(step, path.name, path, ck_root / path.name, params)
        if run.finished and not force and (run.checkpoint.is_file() or run.metrics.get("evaluation_only")):
            return run  # reuse: a trained run with its checkpoint, or an evaluation-only record
        if not run.finished:
            return run  # resume an interrupted run
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_id = f"{stamp}-{model}-{variant}-{h}"
    n = 1
    while (step_dir / run_id).exists():
        n += 1
        run_id = f"{stamp}-{model}-{variant}-{h}-{n}"
    run = Run(step, run_id, step_dir / run_id, ck_root / run_id, params)
    run.dir.mkdir(parents=True)
    write_json(run.dir / "params.json", {**params, "config_hash": h})
    write_json(run.dir / "env.json", environment_info(device))
    return run


def latest_finished(step: str, model: str, variant: str, params: dict[str, Any], results_dir="results") -> Run | None:
    """The newest finished run of exactly this configuration, or None."""
    results = resolve_results_dir(results_dir)
    params = {**params, "step": step, "model": model, "variant": variant}
    h = config_hash(params)
    step_dir = results / "runs" / step
    for path in sorted(step_dir.glob(f"*-{h}*"), reverse=True) if step_dir.is_dir() else []:
        if (path / "metrics.json").is_file():
            ck_root = results.parent / "checkpoints" / step if results.name == "results" else results / "checkpoints" / step
            return Run(step, path.name, path, ck_root / path.name, params)
    return None


def update_summary(results_dir="results") -> Path:
    """Regenerate ``summary.csv`` from every ``metrics.json`` (one row per run)."""
    results = resolve_results_dir(results_dir)
    rows = []
    for mpath in sorted(results.glob("runs/*/*/metrics.json")):
        try:
            m = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"corrupt run record {mpath}: {e}") from None
        m.setdefault("step", mpath.parent.parent.name)
        m.setdefault("run_id", mpath.parent.name)
        rows.append(m)
    extra = sorted({k for r in rows for k in r if not isinstance(r[k], (dict, list))} - set(SUMMARY_COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS + extra, extrasaction="ignore")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["step"], r["run_id"])))
    out = results / "summary.csv"
    write_atomic(out, buf.getvalue())
    return out


def run_from_dir(path: Path) -> Run:
    """The :class:`Run` of an existing run folder (its parameters read from ``params.json``)."""
    path = Path(path)
    params = json.loads((path / "params.json").read_text())
    results = path.parent.parent.parent
    step = path.parent.name
    ck_root = results.parent / "checkpoints" / step if results.name == "results" else results / "checkpoints" / step
    return Run(step, path.name, path, ck_root / path.name, params)


def latest_run_of(results_dir, step_prefix: str, model: str, variant: str, profile: str) -> Run | None:
    """Newest finished run with this model, variant and profile in steps starting with ``step_prefix``."""
    results = resolve_results_dir(results_dir)
    found = []
    for mpath in results.glob(f"runs/{step_prefix}*/*/metrics.json"):
        m = json.loads(mpath.read_text())
        if (m.get("model"), m.get("variant"), m.get("profile")) == (model, variant, profile):
            found.append(mpath.parent)
    return run_from_dir(max(found, key=lambda p: p.name)) if found else None
