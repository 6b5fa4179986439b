"""Progress lines that reach the terminal from inside a notebook kernel.

A notebook run by papermill has no terminal: what it prints lands in the
executed copy. :func:`say` prints a line *and*, when the pipeline has set
``$MVLIB_PROGRESS_FILE``, appends it to that file, which the pipeline tails
and shows live (``[01_baseline] reactnet18 seed 1: epoch 2/4 ...``).
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
