"""Provenance: which code ran, on what machine, from which commit.

Two identities of the code, each a sha256 (16 hex digits) taken once per process:

* :func:`code_hash` — what the *numbers* of a run record depend on. It
  covers the modules of ``mvlib/`` and ``cuda_numba/`` that the modules
  making run records reach by imports (:data:`RECORD_ROOTS`: training,
  evaluation, voter substitution, the appendix, the voter-drop study), each
  reduced to its code — comments, docstrings, blank lines and trailing
  spaces do not count (:func:`normalized_source`). The reach stops at the
  modules that only read, write, check, schedule or present results
  (:data:`CODE_IDENTITY_EXCLUDES`). A module no record-making module
  imports (a benchmark, the synthesis flow, a new tool) is not part of it.
  A run record carries this hash, and a finished run is reused only by a
  process whose hash is the same (:mod:`mvlib.study.records`): rewording a
  docstring, changing a plot, the kernel benchmark or an unused module
  retrains nothing.
* :func:`notebook_code_hash` — the same over what one notebook reaches; part
  of its step's key, so that notebook 05 re-executes when the benchmark
  changes and notebook 07 when the synthesis flow does.
* :func:`source_hash` — every byte of every ``.py`` file of both packages. A
  pipeline step is re-executed when it changes (:mod:`mvlib.study.pipeline`),
  so a rendered notebook always comes from the code in the tree; its runs are
  then reused from their records when :func:`code_hash` is unchanged.

:func:`environment_info` says where a result came from: the commit, whether
the code, notebooks or configuration differed from it (``git_dirty``: results
files being written do not count), package versions, CPU and GPU names.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import platform
import subprocess
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("mvlib", "cuda_numba")
# Modules through which no number of a run record is computed: they parse the configuration (its values reach a
# record as the run's parameters), read and write files (their tests check that what is read is what was
# written), summarize, check, schedule, estimate or draw.
CODE_IDENTITY_EXCLUDES = (
    "mvlib/environment.py",        # this file
    "mvlib/files.py",              # atomic writes
    "mvlib/checkpoint.py",         # checkpoint files: save, safe load, architecture check
    "mvlib/study/config.py",       # keys, types and checks of the configuration
    "mvlib/study/records.py",      # run folders and their identity
    "mvlib/study/summary.py",      # rows over seeds, rebuilt from the records
    "mvlib/study/stats.py",        # means, intervals, verdict rules
    "mvlib/study/progress.py",     # progress lines
    "mvlib/study/estimate.py",     # time estimates before a study starts
    "mvlib/study/train.py",        # the train command (runs go through experiment.py)
    "mvlib/study/pipeline.py",     # runs notebooks in order: the command
    "mvlib/study/steps.py",        # which notebooks run, what each reads, whether one is current
    "mvlib/study/runner.py",       # one notebook under papermill, its HTML
    "mvlib/study/scheduler.py",    # several notebooks at once on a shared core budget
    "mvlib/study/report.py",       # tables for the report, from records
    "mvlib/study/plots.py",        # figures
    "mvlib/study/report_tables.py",   # the report's tables, shaped from records and result files
    "mvlib/study/report_verdicts.py", # the report's verdicts where no notebook module states one
    "mvlib/study/report_sections.py", # the report's sections: one call per table, figure and verdict
    "mvlib/study/plots_report.py",    # the report's figures
    "mvlib/study/plots_layout.py",    # the report's figure layout (legends, labels, clipping) and figures of time
    "mvlib/study/deck.py",         # the deck's printed numbers
    "mvlib/study/deck_pattern.py", # the deck's claims as verdicts on records
    "mvlib/study/appendix_report.py",      # notebook 06's rows, table, verdicts and figure, from its records
    "mvlib/study/voter_drop_verdicts.py",  # notebook 08's verdicts, from its rows
    "mvlib/study/engine_check.py", # engine against float model on trained runs (a command; no step runs it)
    "mvlib/study/pareto.py",       # notebook 09's front and verdict, from its rows and the cost tables
)
# What a source tree that produced committed results must not differ in from its commit.
TRACKED_SOURCES = ("mvlib", "cuda_numba", "notebooks", "configs", "pyproject.toml")


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every ``.py`` file of the two packages, in a fixed order (what :func:`source_hash` covers)."""
    return [p for pkg in CODE_PACKAGES for p in sorted((root / pkg).rglob("*.py"))]


# Where run records are made (trained, evaluated, written): a record's code identity is everything these modules
# reach. The notebooks' own code and what only they import (the kernel benchmark, the synthesis flow) make no run
# record; each step's key covers its notebook's reach instead (:func:`notebook_code_hash`), so a change to the
# benchmark re-executes notebook 05 and retrains nothing.
RECORD_ROOTS = ("mvlib/study/experiment.py", "mvlib/study/voter_study.py", "mvlib/study/appendix.py",
                "mvlib/study/voter_drop.py", "mvlib/study/pareto_runs.py", "mvlib/study/airbench_run.py",
                "mvlib/study/ddp_worker.py", "mvlib/study/train.py")


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` of the two packages under ``root`` (None for anything else)."""
    parts = dotted.split(".")
    if not dotted or parts[0] not in CODE_PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def python_source(path: Path) -> str:
    """The Python code of a module, or of a notebook (its code cells; IPython's ``%`` / ``!`` lines left out)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return text
    cells = [c for c in json.loads(text).get("cells", []) if c.get("cell_type") == "code"]
    lines = [line for c in cells for line in "".join(c.get("source", "")).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))) + "\n"


def imported_files(root: Path, path: Path) -> set[Path]:
    """The files of the two packages that ``path`` imports (at module level or inside functions).

    Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those count; a name taken
    from a package (``from .models import build_model``) is that package, or the submodule of that name.
    """
    rel = path.relative_to(root).with_suffix("").parts if path.is_relative_to(root) else (path.stem,)
    in_package = rel[0] in CODE_PACKAGES
    module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel) if in_package else ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[Path] = set()
    for node in ast.walk(ast.parse(python_source(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                f = _module_file(root, ".".join(parts[:i]))
                if f is not None:
                    found.add(f)
    return found


def reached_files(root: Path, starts: list[Path]) -> list[Path]:
    """The package files that ``starts`` reach by imports, transitively, in :func:`source_files` order.

    An excluded module (:data:`CODE_IDENTITY_EXCLUDES`) is neither counted nor followed: what it imports
    counts only where a computing module imports it too. A start that is an excluded module is followed.
    """
    excluded = {root / rel for rel in CODE_IDENTITY_EXCLUDES}
    todo, seen = list(starts), set(starts)
    while todo:
        path = todo.pop()
        for f in imported_files(root, path) - seen:
            seen.add(f)
            if f not in excluded:
                todo.append(f)
    return [p for p in source_files(root) if p in seen and p not in excluded]


def code_files(root: Path = REPO_ROOT) -> list[Path]:
    """The source files whose code makes up :func:`code_hash` (the reach of :data:`RECORD_ROOTS`), in order."""
    return reached_files(root, [root / rel for rel in RECORD_ROOTS if (root / rel).is_file()])


def _docstring_lines(tree: ast.AST, lines: list[str]) -> set[int]:
    """Line numbers (1-based) of docstrings that stand on lines of their own."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                continue
            # ast's columns count UTF-8 bytes
            alone = (not lines[first.lineno - 1].encode()[:first.col_offset].strip()
                     and lines[first.end_lineno - 1].encode()[first.end_col_offset:].strip() in (b"", b";"))
            if alone:
                found.update(range(first.lineno, first.end_lineno + 1))
    return found


def normalized_source(text: str) -> str:
    """The code of a Python source without comments, docstrings, blank lines and trailing spaces.

    Positions come from :mod:`ast` (docstrings) and :mod:`tokenize` (comments),
    both the same on every supported Python, so the result does not depend on
    the interpreter. A docstring sharing a line with code is kept.
    """
    lines = text.splitlines()
    drop = _docstring_lines(ast.parse(text), lines)
    cuts: dict[int, int] = {}   # line -> column where a comment starts
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            cuts[tok.start[0]] = tok.start[1]
    kept = []
    for i, line in enumerate(lines, start=1):
        if i in drop:
            continue
        line = line[:cuts[i]] if i in cuts else line
        if line.strip():
            kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


def _hash_files(root: Path, files: list[Path], content) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(content(p) + b"\0")
    return h.hexdigest()[:16]


def compute_code_hash(root: Path = REPO_ROOT) -> str:
    """sha256 (16 hex digits) of the relative path and normalized code of every file of :func:`code_files`."""
    return _hash_files(root, code_files(root), lambda p: normalized_source(p.read_text(encoding="utf-8")).encode())


def notebook_code_hash(notebook: Path, root: Path = REPO_ROOT) -> str:
    """sha256 (16 hex digits) of the normalized code of every package file ``notebook`` reaches by imports.

    Part of a step's key: a change to a module only that notebook uses (the kernel benchmark of notebook 05,
    the synthesis flow of notebook 07) re-executes that step, while the records of the others stay reusable.
    """
    return _hash_files(root, reached_files(root, [Path(notebook)]),
                       lambda p: normalized_source(p.read_text(encoding="utf-8")).encode())


def compute_source_hash(root: Path = REPO_ROOT) -> str:
    """sha256 (16 hex digits) of the relative path and bytes of every file of :func:`source_files`."""
    return _hash_files(root, source_files(root), lambda p: p.read_bytes())


@lru_cache(maxsize=1)
def code_hash() -> str:
    """The code identity of this process (computed on first use, then fixed for the process)."""
    return compute_code_hash(REPO_ROOT)


@lru_cache(maxsize=1)
def source_hash() -> str:
    """The identity of every source byte of this process's packages (computed on first use)."""
    return compute_source_hash(REPO_ROOT)


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> dict[str, Any]:
    """``git_commit`` (None outside a checkout) and ``git_dirty``: code, notebooks or configs differ from it."""
    commit = _git("rev-parse", "HEAD") or None
    dirty = bool(_git("status", "--porcelain", "--", *TRACKED_SOURCES)) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info(device: str = "cpu") -> dict[str, Any]:
    """Commit and dirty flag, code hash, package versions, machine and device names."""
    import numpy
    import torch
    info = {
        **git_state(),
        "code_hash": code_hash(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
    }
    try:  # the bit kernels' and fused passes' threads: like torch's, they set the float order of a training run
        import numba
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
