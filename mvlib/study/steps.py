"""The study's steps: which notebooks there are, what each one reads, and whether its last execution still holds.

A step is a notebook ``NN_name.ipynb`` of the notebook folder, run in file order. Each reads the run records of
some earlier steps (:data:`READS`); the report reads every result file. A finished step is recorded in
``<step>.done.json`` with its key (:meth:`StepGraph.step_key`: the notebook, its resolved configuration and the
code hash) and a digest of what it read (:meth:`StepGraph.upstream_digest`); it is current while both hold.

A fresh clone holds the records and executed notebooks, not the weights (``checkpoints/`` is ignored): a step
that must run and reads weights its clone lacks first re-executes the step that trained them
(:meth:`StepGraph.plan_steps`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..environment import REPO_ROOT, code_hash, notebook_code_hash, source_hash
from . import records
from .config import load_profile
from .records import resolve_results_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# The earlier steps whose run records each notebook reads, by number; a step not listed reads every earlier
# step, the report reads everything. The pipeline's reuse digest and its schedule both follow this.
# (03 reuses 02's naive rows, 04 03's exact-voter retraining, 08 02's naive rows: READS, or they would race.)
READS = {"01": (), "02": ("01",), "03": ("01", "02"), "04": ("01", "03"), "05": ("01",), "06": (), "07": (),
         "08": ("01", "02"), "09": ("01",)}
# notebook 09 reads (and reuses) notebooks 03/04's retrained runs when its recipe and splits are theirs
# (mvlib.study.pareto.shares_runs: the paper profile); it then waits for them
READS_SHARED = {"09": ("01", "03", "04")}
# Steps that time code: they run with the machine to themselves.
ALONE = ("05",)
# keys that change how a step runs, not what it computes: they stay out of its key
RUN_ONLY_KEYS = ("progress", "study_jobs", "study_steps")


def step_number(step: str) -> str:
    """A step's number prefix: ``"01"`` of ``"01_baseline"``."""
    return step.split("_", 1)[0]


def is_report(step: str) -> bool:
    return step.endswith("report")


def step_config(profile: str, overrides: dict, force: bool = False) -> tuple[dict, dict]:
    """(papermill parameters, resolved configuration) of a step of ``profile``."""
    params = {"profile": profile, "progress": False, **overrides, **({"force": True} if force else {})}
    return params, load_profile(profile, {k: v for k, v in params.items() if k != "profile"})


class StepGraph:
    """The steps of one notebook folder, what each reads, and which of them must execute.

    ``code_hash``, ``source_hash`` and ``notebook_code_hash`` give the identities a step's key holds (the running
    code's by default);
    passing others shows what a change of code does to the steps without changing the code.
    """

    def __init__(self, notebook_dir: Path = NOTEBOOK_DIR, code_hash: Callable[[], str] = code_hash,
                 source_hash: Callable[[], str] = source_hash,
                 notebook_code_hash: Callable[[Path], str] = notebook_code_hash):
        self.notebook_dir = Path(notebook_dir)
        self.code_hash, self.source_hash, self.notebook_code_hash = code_hash, source_hash, notebook_code_hash

    def steps(self) -> list[str]:
        """Notebook names in execution order (file name order: 01_…, 02_…, 99_report)."""
        return sorted(p.stem for p in self.notebook_dir.glob("[0-9][0-9]_*.ipynb"))

    def notebook(self, step: str) -> Path:
        return self.notebook_dir / f"{step}.ipynb"

    @staticmethod
    def _reads_table(cfg: dict | None) -> dict:
        from .pareto import shares_runs
        return {**READS, **READS_SHARED} if cfg is not None and shares_runs(cfg) else READS

    def reads(self, step: str, candidates: list[str] | None = None, cfg: dict | None = None) -> list[str]:
        """The number prefixes of the steps whose records ``step`` reads (see :data:`READS`; ``cfg``: the
        configuration, which may add :data:`READS_SHARED`); a step not in the table reads every earlier one
        among ``candidates`` (default: every step)."""
        number, table = step_number(step), self._reads_table(cfg)
        if number in table and not is_report(step):
            return list(table[number])
        earlier = {step_number(s) for s in (candidates if candidates is not None else self.steps())}
        return sorted(n for n in earlier if n < number)

    def waits_for(self, chosen: list[str], cfg: dict) -> dict[str, set[str]]:
        """For a schedule of ``chosen``: the numbers each step waits for (the report: every other step)."""
        numbers = {step_number(s) for s in chosen}
        return {s: numbers - {step_number(s)} if is_report(s) else set(self.reads(s, chosen, cfg)) for s in chosen}

    def _of_this_code(self, metrics: Path) -> bool:
        """Whether a finished record comes from the running code (a step reads no other: identities hold the
        code hash), or was reproduced and reused by it (its ``verified-<code>.json``), so that deleting an older
        study's records changes no digest."""
        if (metrics.parent / records.VERIFIED.format(code=self.code_hash())).is_file():
            return True
        try:
            return json.loads(metrics.read_text()).get("code_hash") == self.code_hash()
        except (OSError, json.JSONDecodeError):
            return True  # a corrupt record is read (and reported) by the step itself

    def upstream_digest(self, results: Path, step: str, cfg: dict | None = None) -> str:
        """Digest of what ``step`` reads: the run records of the running code in the steps it reads (the
        report: every result file)."""
        number, table = step_number(step), self._reads_table(cfg)
        read = set(table[number]) if number in table and not is_report(step) else None

        def is_read(n):
            return n in read if read is not None else n < number
        files = [p for p in results.glob("runs/[0-9][0-9]_*/*/metrics.json")
                 if is_read(p.parent.parent.name[:2]) and self._of_this_code(p)]
        if is_report(step):
            files += [p for pat in ("tables/*.csv", "bench/*.json", "hw/*/*.csv") for p in results.glob(pat)]
        h = hashlib.sha256()
        for p in sorted(files):
            h.update(p.relative_to(results).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
        return h.hexdigest()[:16]

    def step_key(self, src: Path, cfg: dict) -> str:
        """Hash of the notebook's bytes, its resolved configuration and the code hash.

        The code hash is the identity of the code the numbers depend on (:func:`mvlib.environment.code_hash`):
        a change to how results are drawn or tabled does not re-execute a step that loads weights. The report
        reads only files and takes seconds, so its key covers every source byte (:func:`source_hash`).
        """
        h = hashlib.sha256(src.read_bytes())
        h.update(json.dumps({k: v for k, v in cfg.items() if k not in RUN_ONLY_KEYS}, sort_keys=True).encode())
        h.update((self.source_hash() if is_report(src.stem) else self.code_hash()).encode())
        if not is_report(src.stem):  # what only this notebook uses (the benchmark, the synthesis flow)
            paired = src.with_suffix(".py")  # the notebook's source (jupytext pairing), else its code cells
            h.update(self.notebook_code_hash(paired if paired.is_file() else src).encode())
        return h.hexdigest()[:16]

    def is_current(self, step: str, profile: str, overrides: dict, out_dir: Path) -> bool:
        """Whether the step's last execution (``<step>.done.json``) still holds: the same notebook,
        configuration, code and records it reads."""
        done = out_dir / f"{step}.done.json"
        if not done.is_file():
            return False
        _, cfg = step_config(profile, overrides)
        rec = json.loads(done.read_text())
        results = resolve_results_dir(cfg["results_dir"])
        return (rec.get("hash") == self.step_key(self.notebook(step), cfg)
                and rec.get("upstream") == self.upstream_digest(results, step, cfg))

    def runs_without_weights(self, results: Path, number: str) -> list[str]:
        """The finished training runs of the running code in step ``number`` whose checkpoint is missing.

        Checkpoints are not committed (``checkpoints/`` is ignored), so in a fresh clone every training run
        is in this list, but for those with a committed artifact (its weights); of several runs of one
        identity only the newest counts (a run trained again to bring back its weights leaves the older
        record in place).
        """
        newest: dict[str, Path] = {}
        for mpath in sorted(results.glob(f"runs/{number}_*/*/metrics.json")):
            try:
                rec = json.loads(mpath.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # the step that reads it reports it
            if rec.get("code_hash") != self.code_hash() or rec.get("evaluation_only"):
                continue
            ident = json.loads((mpath.parent / "params.json").read_text()).get("identity_hash", mpath.parent.name)
            newest[f"{mpath.parent.parent.name}/{ident}"] = mpath.parent  # sorted: the newest (UTC time) wins
        return sorted(d.name for d in newest.values()
                      if not (run := records.run_from_dir(d)).checkpoint.is_file() and not run.artifact.is_file())

    def plan_steps(self, chosen: list[str], profile: str, overrides: dict, out_dir: Path, force: bool = False,
                   rerun: list[str] | None = None, all_steps: list[str] | None = None) -> tuple[list[str], dict]:
        """The steps to run, and ``{step: run ids}`` of the steps added or re-executed to bring back weights.

        A step that executes (forced, asked with ``rerun``, or not :meth:`is_current`) loads the weights of
        the runs it reads; when a step it reads has finished training runs without their checkpoint (a
        fresh clone holds the records, not the weights), that step is re-executed too, before it: its
        finished runs with weights are reused, the others trained again. A study whose every step is
        current executes nothing.
        """
        all_steps = all_steps or self.steps()
        cfg = load_profile(profile, overrides)
        results = resolve_results_dir(cfg["results_dir"])
        execute = {s for s in chosen
                   if force or s in (rerun or []) or not self.is_current(s, profile, overrides, out_dir)}
        restore: dict[str, list[str]] = {}
        todo = sorted(execute)
        while todo:
            step = todo.pop()
            if is_report(step):  # the report reads files, not weights
                continue
            for number in self.reads(step, all_steps, cfg):
                for up in (s for s in all_steps if step_number(s) == number and s not in execute):
                    missing = self.runs_without_weights(results, number)
                    if missing:
                        restore[up] = missing
                        execute.add(up)
                        todo.append(up)
        return [s for s in all_steps if s in chosen or s in restore], restore
