"""Interleaved timing, shared by the training-step and bit-kernel benchmarks.

On a machine shared with other jobs, timing variant A's repetitions and then
variant B's lets a burst of foreign load fall on one of them only, and the
ratio moves by it. Interleaving (A, B, C, A, B, C, ...) puts every variant in
the same stretches of time, so their ratio is what the machine's state does
not change.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_times(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter,
                      sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each of ``reps`` calls per function, calls interleaved, after ``warmup`` untimed calls each.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock reading.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = clock()
            fn()
            sync()
            times[name].append(clock() - t0)
    return times


def best_and_median(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)
