"""What the pipeline tells the notebook kernels it starts: progress lines, thread budget, deadline.

A notebook run by papermill has no terminal: what it prints lands in the
executed copy. :func:`say` prints a line *and*, when the pipeline has set
``$MVLIB_PROGRESS_FILE``, appends it to that file, which the pipeline tails
and shows live (``[01_baseline] reactnet18 seed 1: epoch 2/4 ...``).

The pipeline reaches a kernel through its environment only (a kernel is a
process papermill starts), so this module is where the study reads it:
:func:`pipeline_threads` and :func:`pipeline_deadline`. The training loop
(:func:`mvlib.train.fit`) reads none of it; the study passes it on.
"""
from __future__ import annotations

import os
import time

ENV = "MVLIB_PROGRESS_FILE"
# A file holding the torch threads the pipeline gives this notebook now: when it runs several notebooks at
# once, a notebook left alone gets every core, and gives them back when another one starts.
THREADS_ENV = "MVLIB_THREADS_FILE"


def pipeline_threads() -> int | None:
    """The torch threads the pipeline's budget gives this notebook now, or None (no budget: torch's default)."""
    path = os.environ.get(THREADS_ENV)
    if not path:
        return None
    try:
        with open(path) as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):  # not written yet, or mid-replace: keep the current threads
        return None


# ``--max-hours`` as a Unix time: no step starts after it, and a training run stops after the epoch that
# crosses it (its checkpoint kept). Set by the pipeline; its children, kernels and torchrun workers inherit it.
DEADLINE_ENV = "MVLIB_DEADLINE"


def pipeline_deadline() -> float | None:
    """``$MVLIB_DEADLINE`` as seconds since the epoch, or None (unset or empty: no limit)."""
    value = os.environ.get(DEADLINE_ENV)
    return float(value) if value else None


def deadline_passed() -> bool:
    """Whether the pipeline's deadline, if any, lies in the past."""
    deadline = pipeline_deadline()
    return deadline is not None and time.time() >= deadline


def say(line: str) -> None:
    """Print ``line`` and append it (with the time) to the pipeline's progress file, if any."""
    print(line, flush=True)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def prefixed(prefix: str):
    """A ``say`` that puts ``prefix`` before every line (e.g. the model and seed of a run)."""
    return lambda line: say(f"{prefix}: {line}")


def error_line(e: BaseException) -> str:
    """One line for an error: an OS error as its reason and the file (``No such file or directory (/x)``),
    anything else as its message."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return str(e.args[0]) if len(e.args) == 1 else str(e)
