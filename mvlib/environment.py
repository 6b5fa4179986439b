"""Provenance: which code ran, on what machine, from which commit.

:func:`code_hash` is the identity of the code a result came from: a sha256
over the sources of ``mvlib/`` and ``cuda_numba/`` (path and bytes of every
``.py`` file), taken once per process. A run record carries it, and a
finished run is reused only by a process whose code hash is the same
(:mod:`mvlib.study.records`). Left out are the modules that compute nothing
that enters a record: they read records and draw or orchestrate
(:data:`CODE_IDENTITY_EXCLUDES`), so a change to a plot does not retrain a
network.

:func:`environment_info` says where a result came from: the commit, whether
the code, notebooks or configuration differed from it (``git_dirty``: results
files being written do not count), package versions, CPU and GPU names.
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("mvlib", "cuda_numba")
# Modules that read results and present or orchestrate them; no number in a run record depends on them.
CODE_IDENTITY_EXCLUDES = (
    "mvlib/study/report.py",     # tables for the report, from records
    "mvlib/study/plots.py",      # figures
    "mvlib/study/pipeline.py",   # runs notebooks in order
    "mvlib/study/deck.py",       # the deck's printed numbers
    "mvlib/study/pareto.py",     # notebook 09's points, front and verdict, from its rows and the cost tables
)
# What a source tree that produced committed results must not differ in from its commit.
TRACKED_SOURCES = ("mvlib", "cuda_numba", "notebooks", "configs", "pyproject.toml")


def code_files(root: Path = REPO_ROOT) -> list[Path]:
    """The source files whose contents make up :func:`code_hash`, in a fixed order."""
    files = []
    for pkg in CODE_PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if rel not in CODE_IDENTITY_EXCLUDES:
                files.append(p)
    return files


def compute_code_hash(root: Path = REPO_ROOT) -> str:
    """sha256 (16 hex digits) of the relative path and bytes of every file of :func:`code_files`."""
    h = hashlib.sha256()
    for p in code_files(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_hash() -> str:
    """The code identity of this process (computed on first use, then fixed for the process)."""
    return compute_code_hash(REPO_ROOT)


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
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
