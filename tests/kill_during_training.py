"""``python -m mvlib.study.train`` that kills itself (SIGKILL) at a chosen point of its training run.

    python tests/kill_during_training.py {checkpoint,epoch} N [mvlib.study.train arguments ...]

``checkpoint N``: right after ``fit`` wrote the checkpoint of epoch N, before
the run's epoch callback (which writes ``history.csv``); ``epoch N``: after
that callback. The resume tests start this script as a subprocess.

How: ``fit`` calls its ``on_epoch`` callback on rank 0 right after each
epoch's checkpoint, so a wrapper around :func:`mvlib.train.fit`, as the study
calls it, that puts a kill before or after the study's own callback reaches
both points. The library itself has no switch that only tests use.
"""
from __future__ import annotations

import functools
import os
import signal
import sys

from mvlib.study import experiment
from mvlib.study import train as train_command

POINTS = ("checkpoint", "epoch")


def with_kill(fit, point: str, at_epoch: int):
    """``fit`` whose ``on_epoch`` callback kills the process at ``point`` of epoch ``at_epoch``."""

    @functools.wraps(fit)
    def fit_then_kill(*args, on_epoch=None, **kwargs):
        def callback(history):
            due = history[-1]["epoch"] == at_epoch
            if due and point == "checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)
            if on_epoch is not None:
                on_epoch(history)
            if due and point == "epoch":
                os.kill(os.getpid(), signal.SIGKILL)

        return fit(*args, on_epoch=callback, **kwargs)

    return fit_then_kill


def main(argv: list[str]) -> int:
    point, at_epoch, rest = argv[0], int(argv[1]), argv[2:]
    if point not in POINTS:
        raise SystemExit(f"the kill point is one of {POINTS}, got {point!r}")
    experiment.fit = with_kill(experiment.fit, point, at_epoch)  # the name train_run calls
    return train_command.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
