"""Run records: one folder per run, identified by its parameters, its data and its code.

Layout::

    results/runs/<step>/<run_id>/params.json   identity: parameters, data, code hash (+ identity and group hashes)
                                 env.json      commit and dirty flag, versions, machine
                                 history.csv   one row per finished epoch (training runs)
                                 metrics.json  final numbers; written last: its presence = finished
                                 verified-<code>.json  written once, when code <code> reproduced the run's
                                               artifact and reused the run (mvlib.study.run_artifacts)
    results/runs/<step>/.<hash>.lock           held while a process works on that identity
    results/artifacts/<profile>/<step>/<run_id>.npz   the run's weights and predictions (``artifacts`` on)
    checkpoints/<step>/<run_id>/last.pt        outside git (ignored folder)

A run's *identity* is the resolved parameters (every data and training key
of :mod:`mvlib.study.config` plus the run's own arguments), the identity of
the data it read (file contents, split membership; :func:`mvlib.data.split_identity`)
and the code hash (:func:`mvlib.environment.code_hash`). ``run_id =
<UTC time>-<model>-<variant>-<identity hash>``. A finished run of the same
identity is reused (training runs only while their checkpoint is there) unless
``force``; an unfinished one is resumed; otherwise a new folder is made.
Nothing is overwritten: ``force`` makes a new folder.

:func:`claim_run` holds a lock on the identity for as long as the caller
works on it, so two processes never train the same run at once: the second
stops with :class:`RunBusy`, naming the first. ``Run.finish`` refuses to mark
a run finished when its history, checkpoint and metrics disagree.

The *group* of a run is its identity without the seed and the seed's own
source runs: the runs of one group are one row of ``summary.csv``, a mean
over seeds (:mod:`mvlib.study.stats`).

A run that later code reproduced from its artifact and reused stays one run,
in its own folder under the code that trained it: nothing is copied, no
second ``metrics.json`` is written. Its ``verified-<code>.json`` markers say
which code reproduced it; the summaries list it once, as a run of the code
that verified it last (``code_hash``; ``trained_under`` names the code that
trained it), so that it is a row beside the runs that code trained.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..environment import REPO_ROOT, code_hash, environment_info
from ..files import remove_stale_temporaries, write_atomic, write_json

RUNS_COLUMNS = ["step", "run_id", "model", "variant", "profile", "dataset", "seed", "top1", "top5", "val_top1",
                "seconds", "group", "code_hash", "trained_under"]
VERIFIED = "verified-{code}.json"  # a run folder's marker: code <code> reproduced and reused this run
# parameters that differ between the seeds of one row (the seed, and the runs of that seed it started from)
SEED_FIELDS = ("seed", "source_run", "init_run", "teacher_run")


class RunBusy(RuntimeError):
    """Another process is working on a run of the same identity."""


class RecordError(RuntimeError):
    """A run record that would not be true (history, checkpoint and metrics disagree)."""


def canonical_hash(obj: Any, digits: int = 10) -> str:
    """First ``digits`` hex digits of the sha256 of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:digits]


def resolve_results_dir(results_dir: str | Path) -> Path:
    p = Path(results_dir)
    return p if p.is_absolute() else REPO_ROOT / p


def _checkpoint_root(results: Path, step: str) -> Path:
    # the repository's results/ keeps checkpoints beside it in the ignored checkpoints/; elsewhere inside
    return (results.parent / "checkpoints" / step) if results == REPO_ROOT / "results" else (
        results / "checkpoints" / step)


def identity_of(step: str, model: str, variant: str, params: dict[str, Any], data: dict[str, Any]) -> dict:
    """The full identity of a run: its parameters, data and code."""
    return {"params": {**params, "step": step, "model": model, "variant": variant}, "data": data,
            "code_hash": code_hash()}


_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<what>.+)-[0-9a-f]{10}(-\d+)?$")


def group_of(identity: dict[str, Any]) -> str:
    """Hash of the identity without the seed fields: the runs that are one row over seeds.

    A run that starts from or evaluates another (``source_run``, ``init_run``, ``teacher_run``) names a
    run of its own seed; what stays in the group is what that run *is* — its model and variant, the run
    id without its time stamp and identity hash — so that evaluations of two different networks (a real
    and a binary 1x1 shortcut, say) are two rows, not one.
    """
    params = {k: v for k, v in identity["params"].items() if k not in SEED_FIELDS}
    sources = {k: (m.group("what") if (m := _RUN_ID.match(str(v))) else str(v))
               for k, v in identity["params"].items() if k in SEED_FIELDS and k != "seed" and v}
    return canonical_hash({**identity, "params": params, **({"sources": sources} if sources else {})})


@dataclass
class Run:
    """One run folder (and its checkpoint folder)."""

    step: str
    run_id: str
    dir: Path
    checkpoint_dir: Path
    identity: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return self.identity["params"]

    @property
    def checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def artifact(self) -> Path:
        """Where its artifact is (:mod:`mvlib.study.run_artifacts`): beside ``runs/``, so committed with it."""
        return self.dir.parents[2] / "artifacts" / str(self.params.get("profile")) / self.step / f"{self.run_id}.npz"

    @property
    def finished(self) -> bool:
        return (self.dir / "metrics.json").is_file()

    @property
    def metrics(self) -> dict[str, Any]:
        return read_record_json(self.dir / "metrics.json")

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

    def finish(self, metrics: dict[str, Any], epochs: int | None = None, checkpoint_epoch: int | None = None) -> None:
        """Write ``metrics.json`` (marks the run finished) and refresh the summaries.

        A training run (``epochs`` given) is finished only if its history has
        exactly ``epochs`` rows and its checkpoint is of epoch ``epochs``;
        every number must be finite.
        """
        required = {"model", "variant", "profile", "dataset", "val_top1", "seconds"}
        missing = required - set(metrics)
        if missing:
            raise RecordError(f"metrics of run {self.run_id} lack {sorted(missing)}")
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not (v == v and abs(v) != float("inf"))]
        if bad:
            raise RecordError(f"run {self.run_id}: non-finite metrics {bad}; not recorded as finished")
        if not (self.dir / "env.json").is_file():
            raise RecordError(f"run {self.run_id}: {self.dir / 'env.json'} is missing (was the disk full?); "
                              f"not recorded as finished, run it again to complete it")
        if epochs is not None:
            rows = len(self.history())
            if rows != epochs or checkpoint_epoch != epochs:
                raise RecordError(f"run {self.run_id}: history has {rows} epochs and the checkpoint "
                                  f"{checkpoint_epoch}, but {epochs} were asked; not recorded as finished")
        write_json(self.dir / "metrics.json", {**metrics, "step": self.step, "run_id": self.run_id,
                                               "seed": self.params.get("seed"), "group": group_of(self.identity),
                                               "code_hash": self.identity["code_hash"]})
        update_summary(self.dir.parent.parent.parent)


def read_record_json(path: Path) -> dict[str, Any]:
    """A record file's JSON; a truncated or corrupt one is a :class:`RecordError` naming it and the way out."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"corrupt run record {path} ({e}); delete its run folder {Path(path).parent} "
                          f"to run it again") from None


def verifications(run_dir: Path) -> list[dict[str, Any]]:
    """The ``verified-<code>.json`` markers of a run folder, oldest first (``verified_at`` is UTC ISO time)."""
    found = [read_record_json(p) for p in Path(run_dir).glob(VERIFIED.format(code="*"))]
    return sorted(found, key=lambda v: v.get("verified_at", ""))


def _num(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except (TypeError, ValueError):
            pass
    return v


def _candidates(step_dir: Path, h: str) -> list[Path]:
    """Folders named ``...-<h>`` or ``...-<h>-<n>``, oldest first (names start with their UTC time)."""
    if not step_dir.is_dir():
        return []
    pat = re.compile(rf"-{h}(-\d+)?$")
    return sorted((p for p in step_dir.iterdir() if p.is_dir() and pat.search(p.name)), key=lambda p: p.name)


def _runs_of(results: Path, step: str, identity: dict[str, Any]) -> list[Run]:
    """Existing run folders of exactly this identity, oldest first."""
    h = canonical_hash(identity)
    step_dir = results / "runs" / step
    out = []
    for path in _candidates(step_dir, h):
        ppath = path / "params.json"
        if not ppath.is_file():
            continue
        saved = read_record_json(ppath)
        if saved.get("identity") != json.loads(json.dumps(identity, default=str)):
            continue  # a hash prefix collision, or a folder of an older record format
        out.append(Run(step, path.name, path, _checkpoint_root(results, step) / path.name, identity))
    return out


def find_finished(step: str, model: str, variant: str, params: dict[str, Any], data: dict[str, Any],
                  results_dir="results") -> Run | None:
    """The newest finished run of this identity, or None (no lock: finished runs never change)."""
    results = resolve_results_dir(results_dir)
    identity = identity_of(step, model, variant, params, data)
    done = [r for r in _runs_of(results, step, identity) if r.finished]
    return done[-1] if done else None


@contextlib.contextmanager
def hold_identity(step: str, model: str, variant: str, params: dict[str, Any], data: dict[str, Any],
                  results_dir="results") -> Iterator[None]:
    """The lock :func:`claim_run` takes on this identity, without making or choosing a folder.

    Held while a run of other code is verified for it, so that two processes never verify, mark and
    reuse (or train) the same identity at once.
    """
    identity = identity_of(step, model, variant, params, data)
    h = canonical_hash(identity)
    with _identity_lock(resolve_results_dir(results_dir) / "runs" / step, h, f"run {step}/{model}-{variant} ({h})"):
        yield


@contextlib.contextmanager
def _identity_lock(step_dir: Path, h: str, what: str, wait: bool = False) -> Iterator[None]:
    """An exclusive lock on ``step_dir/.<h>.lock``; the OS drops it when the holder dies (no stale locks)."""
    step_dir.mkdir(parents=True, exist_ok=True)
    path = step_dir / f".{h}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunBusy(f"{what} is being worked on by {holder}; wait for it to finish (or stop it) "
                          f"and run this again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim_run(step: str, model: str, variant: str, params: dict[str, Any], data: dict[str, Any],
              results_dir="results", force: bool = False, device: str = "cpu",
              reusable=lambda run: True) -> Iterator[Run]:
    """Lock this identity and yield its run: finished (reuse), unfinished (resume) or new.

    A finished run is reused when ``reusable(run)`` (training runs: their
    checkpoint exists) and not ``force``; otherwise a new folder is made. The
    lock is released when the ``with`` block ends, also on errors; stale
    temporary files of killed writers are removed from the run's folders.
    """
    results = resolve_results_dir(results_dir)
    identity = identity_of(step, model, variant, params, data)
    h = canonical_hash(identity)
    step_dir = results / "runs" / step
    with _identity_lock(step_dir, h, f"run {step}/{model}-{variant} ({h})"):
        runs = _runs_of(results, step, identity)
        run = None
        for r in reversed(runs):
            if r.finished and not force and reusable(r):
                run = r
                break
            if not r.finished:
                run = r  # resume the interrupted one
                break
        if run is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            run_id = f"{stamp}-{model}-{variant}-{h}"
            n = 1
            while (step_dir / run_id).exists():
                n += 1
                run_id = f"{stamp}-{model}-{variant}-{h}-{n}"
            run = Run(step, run_id, step_dir / run_id, _checkpoint_root(results, step) / run_id, identity)
            run.dir.mkdir(parents=True)
            try:
                write_json(run.dir / "params.json", {"identity": identity, "identity_hash": h,
                                                     "group": group_of(identity)})
            except BaseException:  # a folder without its identity would never be found again (a full disk)
                shutil.rmtree(run.dir, ignore_errors=True)
                raise
        if not run.finished and not (run.dir / "env.json").is_file():  # new, or a start cut short (a full disk)
            write_json(run.dir / "env.json", environment_info(device))
        for folder in (run.dir, run.checkpoint_dir, results):
            remove_stale_temporaries(folder)
        yield run


def run_from_dir(path: Path) -> Run:
    """The :class:`Run` of an existing run folder (its identity read from ``params.json``)."""
    path = Path(path)
    saved = read_record_json(path / "params.json")
    results, step = path.parent.parent.parent, path.parent.name
    return Run(step, path.name, path, _checkpoint_root(results, step) / path.name, saved["identity"])


def all_metrics(results_dir="results", on_corrupt: Callable[[RecordError], None] | None = None) -> list[dict[str, Any]]:
    """Every finished run's ``metrics.json`` (with ``step`` / ``run_id`` / ``dir`` filled in).

    A corrupt one raises :class:`RecordError`, or is skipped after ``on_corrupt(error)`` when given.
    """
    results = resolve_results_dir(results_dir)
    rows = []
    for mpath in sorted(results.glob("runs/*/*/metrics.json")):
        try:
            m = read_record_json(mpath)
        except RecordError as e:
            if on_corrupt is None:
                raise
            on_corrupt(e)
            continue
        m.setdefault("step", mpath.parent.parent.name)
        m.setdefault("run_id", mpath.parent.name)
        ppath = mpath.parent / "params.json"
        if ppath.is_file():  # the group by the current rule, not the one the record was written under
            try:
                identity = read_record_json(ppath)["identity"]
                verified = verifications(mpath.parent)
                if verified:  # a row of the code that reproduced it last, beside the runs that code trained
                    m["trained_under"], m["code_hash"] = identity["code_hash"], verified[-1]["verified_under"]
                    identity = {**identity, "code_hash": m["code_hash"]}
                m["group"] = group_of(identity)
            except (RecordError, KeyError) as e:
                if on_corrupt is None:
                    raise RecordError(f"corrupt run record {ppath}: {e}") from None
                on_corrupt(e if isinstance(e, RecordError) else RecordError(f"corrupt run record {ppath}: {e}"))
                continue
        m["dir"] = str(mpath.parent)
        rows.append(m)
    return rows


def update_summary(results_dir="results") -> Path:
    """Regenerate ``runs.csv`` (one row per run) and ``summary.csv`` (one row per group, over seeds)."""
    from .summary import summary_rows  # the aggregation lives beside the statistics
    results = resolve_results_dir(results_dir)
    # read inside the lock: two steps finishing runs at once must not write each other's stale view
    with _identity_lock(results, "summary", "the summary", wait=True):
        # a corrupt record of some run must not keep every other run out of the summaries: it is named and left out
        rows = all_metrics(results, on_corrupt=lambda e: print(f"warning: {e}; left out of the summaries",
                                                               file=sys.stderr))
        _write_csv(results / "runs.csv", RUNS_COLUMNS, sorted(rows, key=lambda r: (r["step"], r["run_id"])))
        agg = summary_rows(rows)
        cols = list(dict.fromkeys(k for r in agg for k in r)) if agg else ["step"]
        _write_csv(results / "summary.csv", cols, agg)
    return results / "summary.csv"


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, buf.getvalue())
