"""Means over seeds, their intervals, paired and unpaired differences, and the verdicts built on them.

The study's method (docs/METHOD.md): a row is a mean over training seeds with
its standard deviation and a 95 % interval; a difference between two rows
that share a baseline (a drop, a recovery) is paired per seed; a claim about
the deck is "yes", "no" or "not resolved at 95 %".

* :func:`t_interval` -- Student-t interval of a mean over n seeds:
  ``mean ± t(0.975, n-1) · std / sqrt(n)`` (std with n-1 in the
  denominator). With one seed there is no interval (``nan``).
* :func:`paired` -- the same interval for ``a_s - b_s`` over the seeds both
  have (a drop of the same baseline under a voter, say).
* :func:`welch` -- the interval of ``mean(a) - mean(b)`` for two independent
  groups (two networks), with Welch's degrees of freedom.
* :func:`verdict` -- "yes" when the interval lies above 0, "no" when it lies
  below, "not resolved at 95 %" when it contains 0 (or there is none).
* :func:`holm` -- the verdicts of a *family* of claims with the family-wise
  error held at 5 % (Holm's step-down on the two-sided p-values of the
  intervals): a claim is "yes" / "no" only if it survives the correction.
* :func:`at_floor` -- the floor rule: a top-1 within :data:`FLOOR_MARGIN`
  points of chance (100 / classes) is at the floor, and a drop or a
  difference of drops measured against it says nothing (a network at chance
  cannot lose more); such a claim is :data:`AT_FLOOR`, not a verdict, and is
  left out of its family.

These intervals are over training seeds on a fixed test set: they measure how
much a result moves with initialization and data order, not the sampling
error of the 10,000 test images (the binomial standard error, ~0.5 points at
50 %, is reported beside single-seed rows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats as _st

LEVEL = 0.95
UNRESOLVED = "not resolved at 95 %"
AT_FLOOR = "at the floor: says nothing"
FLOOR_MARGIN = 2.0  # points above chance: ~7 binomial standard errors of a 10,000-image test at 10 %


@dataclass(frozen=True)
class Interval:
    """A mean (or difference of means) with its spread: ``lo = mean - half``, ``hi = mean + half``."""

    mean: float
    std: float
    half: float   # half-width of the 95 % interval (nan with fewer than 2 values)
    n: int
    df: float = math.inf  # degrees of freedom of its t quantile (inf: a normal interval)

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def fmt(self, digits: int = 2) -> str:
        """``12.34 ± 0.56 (n=3)``, or ``12.34 (n=1)`` without an interval."""
        if math.isnan(self.half):
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f} (n={self.n})"


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean, sample std and the Student-t half-width of the mean of ``values``."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(v) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, half, n, n - 1)


def paired(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """Interval of ``a[s] - b[s]`` over the seeds ``s`` present in both."""
    common = sorted(set(a) & set(b))
    return t_interval([a[s] - b[s] for s in common], level)


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Interval of ``mean(a) - mean(b)`` for independent samples (Welch-Satterthwaite degrees of freedom).

    ``std`` of the result is the standard error of the difference. Needs two
    values on each side for an interval.
    """
    ia, ib = t_interval(a, level), t_interval(b, level)
    diff = ia.mean - ib.mean
    if ia.n < 2 or ib.n < 2:
        return Interval(diff, math.nan, math.nan, min(ia.n, ib.n))
    va, vb = ia.std ** 2 / ia.n, ib.std ** 2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, 0.0, 0.0, min(ia.n, ib.n))
    df = (va + vb) ** 2 / (va ** 2 / (ia.n - 1) + vb ** 2 / (ib.n - 1))
    half = float(_st.t.ppf(0.5 + level / 2, df)) * se
    return Interval(diff, se, half, min(ia.n, ib.n), df)


def verdict(iv: Interval) -> str:
    """Whether the quantity is positive: "yes" (interval above 0), "no" (below 0), or not resolved."""
    if math.isnan(iv.half) or math.isnan(iv.mean):
        return UNRESOLVED
    if iv.lo > 0:
        return "yes"
    if iv.hi < 0:
        return "no"
    return UNRESOLVED


def contains(iv: Interval, value: float) -> str:
    """Where ``value`` lies against the interval: "inside", "below" or "above" (or "no interval")."""
    if math.isnan(iv.half):
        return "no interval"
    if value < iv.lo:
        return "below"
    if value > iv.hi:
        return "above"
    return "inside"


def p_value(iv: Interval, level: float = LEVEL) -> float:
    """Two-sided p-value of "the quantity is 0", from the interval (its half-width, level and degrees of freedom)."""
    if math.isnan(iv.half) or math.isnan(iv.mean):
        return math.nan
    if iv.half == 0:
        return 0.0 if iv.mean != 0 else 1.0
    se = iv.half / float(_st.t.ppf(0.5 + level / 2, iv.df))
    return float(2 * _st.t.sf(abs(iv.mean) / se, iv.df))


def holm(intervals: Sequence[Interval | None], level: float = LEVEL) -> list[str]:
    """Verdicts of a family of claims, family-wise error at ``1 - level`` (Holm 1979, step-down).

    Each claim is "is this quantity positive?". The p-values are sorted; the
    i-th smallest (0-based) is compared with ``alpha / (m - i)``, and the
    first that fails stops the procedure: it and every larger one are
    :data:`UNRESOLVED`. A rejected claim is "yes" or "no" by the sign of its
    mean. ``None`` entries and intervals without a half-width are not tested
    (:data:`UNRESOLVED`) and do not count in ``m``.
    """
    alpha = 1 - level
    ps = [(p_value(iv, level) if iv is not None else math.nan, i) for i, iv in enumerate(intervals)]
    tested = sorted((p, i) for p, i in ps if not math.isnan(p))
    out = [UNRESOLVED] * len(intervals)
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (m - rank):
            break
        out[i] = "yes" if intervals[i].mean > 0 else "no"
    return out


def at_floor(top1: float, classes: int = 10, margin: float = FLOOR_MARGIN) -> bool:
    """Whether a top-1 (percent) lies within ``margin`` points of chance, ``100 / classes``."""
    return top1 <= 100.0 / classes + margin
