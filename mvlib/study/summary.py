"""Rows over seeds: ``summary.csv`` and the lookups the notebooks and the report make in it.

Every finished run's ``metrics.json`` carries its ``group`` (the hash of its
identity without the seed, :func:`mvlib.study.records.group_of`) and its
``seed``. One summary row is one group: the latest run of each seed, their
mean, standard deviation and 95 % interval (:mod:`mvlib.study.stats`) for
top-1 and top-5 on the test split and top-1 on the validation split.

:func:`select` picks the runs of a row by step, model, variant, profile and
dataset (and code hash, by default the running code's); :func:`by_seed`
gives ``{seed: value}`` for paired differences.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from ..environment import code_hash
from .stats import Interval, paired, t_interval

Z95 = 1.959964  # two-sided 95 % normal quantile

KEYS = ("step", "model", "variant", "profile", "dataset")
METRICS = ("top1", "top5", "val_top1")


def binomial_se(top1_percent: float, n: int) -> float:
    """Binomial standard error (percentage points) of an accuracy measured on n images."""
    p = top1_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def latest_per_seed(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of several runs of one group and seed (a forced rerun), the latest (run ids start with their UTC time)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("group"), r.get("seed"))
        if key not in best or r["run_id"] > best[key]["run_id"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r["step"], r["run_id"]))


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per group: identification, ``seeds``, and ``<metric>``, ``_std``, ``_ci95`` per metric."""
    groups: dict[str, list[dict]] = {}
    for r in latest_per_seed(r for r in rows if r.get("group")):
        groups.setdefault(r["group"], []).append(r)
    out = []
    for g, runs in groups.items():
        first = runs[0]
        row = {k: first.get(k) for k in KEYS}
        row["seeds"] = len(runs)
        row["seed_list"] = " ".join(str(r.get("seed")) for r in sorted(runs, key=lambda r: r.get("seed") or 0))
        for m in METRICS:
            vals = [r[m] for r in runs if isinstance(r.get(m), (int, float))]
            iv = t_interval(vals)
            row[m] = round(iv.mean, 4) if vals else None
            row[f"{m}_std"] = None if math.isnan(iv.std) else round(iv.std, 4)
            row[f"{m}_ci95"] = None if math.isnan(iv.half) else round(iv.half, 4)
        n_test = first.get("test_images")
        row["test_images"] = n_test
        row["top1_se_test"] = round(binomial_se(row["top1"], n_test), 4) if n_test and row["top1"] is not None \
            else None
        row["seconds"] = round(sum(r.get("seconds") or 0 for r in runs) / len(runs), 1)
        cpu = [r["cpu_hours"] for r in runs if isinstance(r.get("cpu_hours"), (int, float))]
        row["cpu_hours"] = round(sum(cpu) / len(cpu), 3) if cpu else None  # training runs only: CPU time per run
        row["group"] = g
        row["code_hash"] = first.get("code_hash")
        row["run_ids"] = " ".join(r["run_id"] for r in runs)
        out.append(row)
    return sorted(out, key=lambda r: tuple(str(r[k]) for k in KEYS))


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The latest run of each (group, seed) as a frame (scalar columns only)."""
    latest = latest_per_seed(r for r in rows if r.get("group"))
    return pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in latest])


def select(rows: list[dict[str, Any]], *, step: str | None = None, model: str | None = None,
           variant: str | None = None, profile: str | None = None, dataset: str | None = "cifar10",
           code: str | None = "current", group: str | None = None) -> list[dict[str, Any]]:
    """The runs of one row: filters by step *prefix* and the other keys, then the newest matching group.

    ``code="current"`` keeps the running code's records only; ``None`` any.
    Several groups can match (e.g. a profile value changed between two
    studies): the one with the newest run wins, so a table never mixes
    configurations.
    """
    want = code_hash() if code == "current" else code
    sel = [r for r in latest_per_seed(rows)
           if (step is None or str(r.get("step", "")).startswith(step))
           and (model is None or r.get("model") == model) and (variant is None or r.get("variant") == variant)
           and (profile is None or r.get("profile") == profile) and (dataset is None or r.get("dataset") == dataset)
           and (want is None or r.get("code_hash") == want) and (group is None or r.get("group") == group)]
    if not sel:
        return []
    newest = max(sel, key=lambda r: r["run_id"])["group"]
    return [r for r in sel if r["group"] == newest]


def by_seed(runs: list[dict[str, Any]], metric: str = "top1") -> dict[int, float]:
    """``{seed: metric}`` of the runs of one row."""
    return {int(r["seed"]): float(r[metric]) for r in runs if r.get("seed") is not None and r.get(metric) is not None}


def _seed_run(runs: list[dict[str, Any]], seed: int | None) -> dict[str, Any]:
    """The run of ``seed``, else the one of the lowest seed."""
    for r in runs:
        if seed is not None and r.get("seed") is not None and int(r["seed"]) == seed:
            return r
    return min(runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))


def difference_interval(a_runs: list[dict[str, Any]], b_runs: list[dict[str, Any]], metric: str = "top1",
                        n_key: str = "test_images") -> tuple[Interval, str]:
    """``a - b`` in ``metric`` (points) and what its interval covers: the study's one rule for a difference.

    Two or more common seeds: paired per seed (Student t), the spread over training seeds. Fewer: the runs of
    the one common seed (else each side's lowest seed) and 1.96 standard errors of the two rows' binomial
    sampling of their evaluated images (``n_key``), taken as independent: the interval then covers the sampling
    of the images only, not the spread over seeds, and says so.
    """
    a, b = by_seed(a_runs, metric), by_seed(b_runs, metric)
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        return paired(a, b), f"{len(common)} seeds, paired"
    ra, rb = (_seed_run(runs, common[0] if common else None) for runs in (a_runs, b_runs))
    se = math.sqrt(sum(binomial_se(r[metric], r.get(n_key) or 1) ** 2 for r in (ra, rb)))
    return Interval(ra[metric] - rb[metric], se, Z95 * se, 1), ONE_SEED


ONE_SEED = "1 seed: image sampling only"
