"""The BN / w/o BN / BN-Free appendix read back from its records: rows, the deck's layout, the pattern, verdicts.

:mod:`mvlib.study.appendix` trains the cells (notebook 06); this module only reads their records, so a
change to how the appendix is tabled, judged or drawn reruns no cell. Intervals and verdict rules:
:mod:`mvlib.study.stats` (docs/METHOD.md, Verdicts).
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats as _st

from .appendix import COLLAPSING, DATASET_LABELS, FLOOR, MODEL_LABELS, STEP, VARIANT_LABELS, Z95
from .deck import deck_numbers
from .stats import AT_FLOOR, Interval, UNRESOLVED, at_floor, holm, paired, t_interval, welch
from .summary import binomial_se, by_seed, latest_per_seed


# ----------------------------------------------------------------- reading
def _runs_by_cell(rows: list[dict[str, Any]], profile: str | None) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in latest_per_seed(r for r in rows if str(r.get("step", "")).startswith(STEP[:2])):
        if profile is None or r.get("profile") == profile:
            out.setdefault((r["model"], r["dataset"], r["variant"]), []).append(r)
    for key, runs in out.items():  # several configurations of one cell: the newest one's runs
        newest = max(runs, key=lambda r: r["run_id"])["group"]
        out[key] = [r for r in runs if r["group"] == newest]
    return out


def cell_interval(runs: list[dict[str, Any]]) -> Interval:
    """Mean top-1 over the runs' seeds with its 95 % interval (one seed: 1.96 binomial s.e. of the test set)."""
    if len(runs) == 1:
        r = runs[0]
        return Interval(r["top1"], math.nan, Z95 * binomial_se(r["top1"], r.get("test_images") or 1), 1)
    return t_interval([r["top1"] for r in runs])


def _run_of_seed(runs: list[dict[str, Any]], seed: int | None) -> dict[str, Any]:
    if seed is not None:
        for r in runs:
            if r.get("seed") is not None and int(r["seed"]) == seed:
                return r
    return min(runs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))


def difference(a: list[dict[str, Any]], b: list[dict[str, Any]],
               seed_var: tuple[float, float] | None = None) -> Interval:
    """``a - b`` in top-1 (points).

    Two or more common seeds: paired per seed (Student t). Otherwise one run a
    side — of the common seed when there is one, else each side's smallest
    seed — and a normal or t interval whose variance is the two test sets'
    binomial variances plus, when ``seed_var = (variance, df)`` is given, the
    seed-to-seed variance of such differences pooled from the multi-seed cells
    (t with its degrees of freedom): a one-seed difference moves with the seed
    as much as a three-seed one does.
    """
    sa, sb = by_seed(a), by_seed(b)
    common = sorted(set(sa) & set(sb))
    if len(common) >= 2:
        return paired(sa, sb)
    seed = common[0] if common else None
    ra, rb = _run_of_seed(a, seed), _run_of_seed(b, seed)
    var = sum(binomial_se(r["top1"], r.get("test_images") or 1) ** 2 for r in (ra, rb))
    df = math.inf
    if seed_var is not None:
        var, df = var + seed_var[0], seed_var[1]
    se = math.sqrt(var)
    return Interval(ra["top1"] - rb["top1"], se, float(_st.t.ppf(0.975, df)) * se, 1, df)


def pooled_seed_variance(pairs: list[tuple[list[dict], list[dict]]]) -> tuple[float, float] | None:
    """``(variance, df)`` of per-seed differences ``a_s - b_s`` pooled over the pairs with two or more common
    seeds (each pair's sample variance weighted by its degrees of freedom); None when there is none."""
    num = df = 0.0
    for a, b in pairs:
        sa, sb = by_seed(a), by_seed(b)
        d = [sa[s] - sb[s] for s in sorted(set(sa) & set(sb))]
        if len(d) >= 2:
            iv = t_interval(d)
            num += (len(d) - 1) * iv.std ** 2
            df += len(d) - 1
    return (num / df, df) if df else None


def appendix_results(rows: list[dict[str, Any]], profile: str | None = None) -> pd.DataFrame:
    """One row per (model, dataset, variant) of the deck's grid (plus our floors): deck and ours over seeds.

    Columns: model, dataset, variant, deck_top1, top1 (mean over seeds), half
    (95 % half-width, see the module docstring), seeds, delta (ours - deck),
    test_images, train_images, width, epochs, seconds, runs (the records).
    """
    by_cell = _runs_by_cell(rows, profile)
    deck = deck_numbers("appendix")
    keys = [(d.model, d.dataset, d.variant, d.top1) for d in deck.itertuples()]
    keys += [(m, d, v, math.nan) for (m, d, v) in sorted(by_cell) if v == FLOOR]
    out = []
    for model, dataset, variant, deck_top1 in keys:
        runs = by_cell.get((model, dataset, variant), [])
        row = {"model": model, "dataset": dataset, "variant": variant, "deck_top1": deck_top1}
        if runs:
            iv = cell_interval(runs)
            first = runs[0]
            row.update(top1=iv.mean, half=iv.half, seeds=iv.n, delta=iv.mean - deck_top1,
                       test_images=first.get("test_images"), train_images=first.get("train_images"),
                       epochs=first.get("epochs"), seconds=sum(r.get("seconds") or 0 for r in runs), runs=runs)
        else:
            row.update(top1=math.nan, half=math.nan, seeds=0, delta=math.nan, test_images=math.nan,
                       train_images=math.nan, epochs=math.nan, seconds=math.nan, runs=[])
        out.append(row)
    return pd.DataFrame(out)


def appendix_table(results: pd.DataFrame) -> pd.DataFrame:
    """The deck's appendix layout: one row per network, columns (dataset, norm, deck | ours | ± | Δ)."""
    grid = results[results.variant.isin(VARIANT_LABELS)]
    models = [m for m in MODEL_LABELS if m in set(grid.model)]
    datasets = [d for d in DATASET_LABELS if d in set(grid.dataset)]
    cols = pd.MultiIndex.from_tuples([(DATASET_LABELS[d], VARIANT_LABELS[v], k) for d in datasets
                                      for v in VARIANT_LABELS for k in ("deck", "ours", "± 95 %", "Δ")])
    idx = grid.set_index(["model", "dataset", "variant"])
    data = [[x for d in datasets for v in VARIANT_LABELS
             for x in ((idx.loc[(m, d, v)].deck_top1, idx.loc[(m, d, v)].top1, idx.loc[(m, d, v)].half,
                        idx.loc[(m, d, v)].delta) if (m, d, v) in idx.index else (math.nan,) * 4)]
            for m in models]
    return pd.DataFrame(data, index=pd.Index([MODEL_LABELS[m] for m in models], name="network"), columns=cols)


# ----------------------------------------------------------------- the pattern
def pattern_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): the top-1 lost without BN and won back by BN-Free, deck and ours, with verdicts.

    ``drop`` = BN - w/o BN, ``gain`` = BN-Free - w/o BN (:func:`difference`: paired over seeds, or one seed
    with the seed variance pooled from the multi-seed drops and gains, ``interval`` says which);
    ``floor_margin`` = w/o BN - the shortcut-only floor (negative: the w/o-BN network learned nothing
    through its branches). The drop and gain verdicts of all rows are one family (Holm).
    """
    cells = []
    for (dataset, model), g in results.groupby(["dataset", "model"], sort=False):
        v = g.set_index("variant")
        if not {"bn", "nobn", "bnfree"} <= set(v.index) or any(not v.loc[k, "runs"] for k in ("bn", "nobn", "bnfree")):
            continue
        cells.append((dataset, model, v))
    pooled = pooled_seed_variance([(v.loc[x, "runs"], v.loc["nobn", "runs"]) for _, _, v in cells
                                   for x in ("bn", "bnfree")])
    out = []
    for dataset, model, v in cells:
        drop = difference(v.loc["bn", "runs"], v.loc["nobn", "runs"], pooled)
        gain = difference(v.loc["bnfree", "runs"], v.loc["nobn", "runs"], pooled)
        floor = difference(v.loc["nobn", "runs"], v.loc[FLOOR, "runs"]) if FLOOR in v.index and v.loc[FLOOR, "runs"] \
            else None
        interval = (f"{drop.n} seeds, t over seeds" if drop.n > 1 else
                    f"1 seed: test sampling + seed spread pooled from the multi-seed cells (df {pooled[1]:.0f})"
                    if pooled else "1 seed: test sampling only")
        out.append({"dataset": dataset, "model": model, "seeds": drop.n, "interval": interval,
                    "nobn_top1": float(v.top1["nobn"]),
                    "deck_drop": v.deck_top1["bn"] - v.deck_top1["nobn"], "drop": drop.mean, "drop_half": drop.half,
                    "drop_se": drop.half / float(_st.t.ppf(0.975, drop.df)) if drop.half == drop.half else math.nan,
                    "drop_df": drop.df, "deck_gain": v.deck_top1["bnfree"] - v.deck_top1["nobn"],
                    "gain": gain.mean, "gain_half": gain.half,
                    "floor_margin": floor.mean if floor else math.nan,
                    "floor_half": floor.half if floor else math.nan,
                    "per_seed_drop": {s: a - b for s, (a, b) in _common(v.loc["bn", "runs"], v.loc["nobn", "runs"])},
                    "_drop": drop, "_gain": gain})
    verdicts = holm([r["_drop"] for r in out] + [r["_gain"] for r in out])
    for i, r in enumerate(out):
        r["drop_verdict"], r["gain_verdict"] = verdicts[i], verdicts[len(out) + i]
        del r["_drop"], r["_gain"]
    return pd.DataFrame(out)


def _common(a, b):
    sa, sb = by_seed(a), by_seed(b)
    return [(s, (sa[s], sb[s])) for s in sorted(set(sa) & set(sb))]


def contrast(summary: pd.DataFrame, dataset: str, model: str, reference: str = "reactnet18") -> Interval | None:
    """How much more ``model`` loses without BN than ``reference`` (points).

    Both with two or more seeds: Welch over the per-seed drops. Otherwise the difference of the two drops
    with the variance of each as :func:`pattern_summary` gives it (one seed: test sampling plus the pooled
    seed spread; several: the variance of their mean) and the smaller degrees of freedom.
    """
    s = summary[summary.dataset == dataset].set_index("model")
    if model not in s.index or reference not in s.index:
        return None
    a, b = s.loc[model], s.loc[reference]
    if len(a.per_seed_drop) >= 2 and len(b.per_seed_drop) >= 2:
        return welch(list(a.per_seed_drop.values()), list(b.per_seed_drop.values()))
    se = math.hypot(a.drop_se, b.drop_se)
    df = min(a.drop_df, b.drop_df)
    return Interval(a["drop"] - b["drop"], se, float(_st.t.ppf(0.975, df)) * se, 1, df)


def contrast_verdicts(summary: pd.DataFrame) -> dict[tuple[str, str], tuple[Interval, str]]:
    """``{(dataset, model): (interval, verdict)}`` of every collapsing network against ReActNet-18, one family
    (Holm); a contrast where either network's w/o-BN top-1 is at chance is :data:`AT_FLOOR` (out of the family)."""
    keys, ivs = [], []
    for dataset in dict.fromkeys(summary.dataset):
        for m in COLLAPSING:
            iv = contrast(summary, dataset, m)
            if iv is None:
                continue
            s = summary[summary.dataset == dataset].set_index("model")
            classes = 100 if dataset == "cifar100" else 10
            floor = any(at_floor(s.loc[x, "nobn_top1"], classes) for x in (m, "reactnet18"))
            keys.append((dataset, m, floor))
            ivs.append(iv)
    verdicts = holm([None if k[2] else iv for k, iv in zip(keys, ivs)])
    return {(d, m): (iv, AT_FLOOR if floor else v) for (d, m, floor), iv, v in zip(keys, ivs, verdicts)}


def _pp(iv_mean: float, half: float) -> str:
    return f"{iv_mean:+.1f} ± {half:.1f} pp" if not math.isnan(half) else f"{iv_mean:+.1f} pp"


def pattern_statement(results: pd.DataFrame) -> str:
    """Per dataset, the deck's pattern checked part by part, each part "yes", "no" or "not resolved at 95 %"."""
    summary = pattern_summary(results)
    if summary.empty:
        return "No complete BN / w/o BN / BN-Free triple in the records: nothing to compare."
    contrasts_of = contrast_verdicts(summary)
    parts = [f"Verdicts at a 5 % family-wise error (Holm): the {2 * len(summary)} drop and gain verdicts are one "
             f"family, the {len(contrasts_of)} contrasts another; a contrast in which a network's w/o-BN top-1 is "
             f"within the floor margin of chance is '{AT_FLOOR}'."]
    for dataset in [d for d in DATASET_LABELS if d in set(summary.dataset)]:
        s = summary[summary.dataset == dataset].set_index("model")
        lines = [f"**{DATASET_LABELS[dataset]}**"]
        for m, r in s.iterrows():
            seeds = r.interval
            floor = "" if math.isnan(r.floor_margin) else (
                f"; w/o BN vs its shortcut-only floor {_pp(r.floor_margin, r.floor_half)}"
                + (" (at or below the floor: its binary branches learned nothing)" if r.floor_margin <= 0 else ""))
            lines.append(f"- {MODEL_LABELS.get(m, m)} ({seeds}): loses {_pp(r['drop'], r.drop_half)} without BN "
                         f"(deck {r.deck_drop:+.1f}) → **{r.drop_verdict}**; BN-Free wins back "
                         f"{_pp(r.gain, r.gain_half)} (deck {r.deck_gain:+.1f}) → **{r.gain_verdict}**{floor}.")
        contrasts, vs = [], []
        for m in COLLAPSING:
            if (dataset, m) in contrasts_of:
                iv, v = contrasts_of[(dataset, m)]
                contrasts.append(f"{MODEL_LABELS[m]} loses more than ReActNet-18: {_pp(iv.mean, iv.half)} → **{v}**")
                vs.append(v)
        if contrasts:
            lines.append("- The deck's contrast (" + "; ".join(contrasts) + ").")
            gains = list(s.gain_verdict)
            appears = ("yes" if all(v == "yes" for v in vs) and all(g == "yes" for g in gains)
                       else "no" if any(v == "no" for v in vs) else AT_FLOOR if all(v == AT_FLOOR for v in vs)
                       else UNRESOLVED)
            lines.append(f"- The deck's pattern (collapse of XNORNet-18 / Bi-RealNet-18 against ReActNet-18, and "
                         f"BN-Free winning it back everywhere) at this scale: **{appears}**.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot_appendix(results: pd.DataFrame, title: str = ""):
    """One panel per dataset: our top-1 per network and norm (bars, 95 % intervals), the deck's as markers,
    the shortcut-only floor as a dotted line."""
    import matplotlib.pyplot as plt
    import numpy as np
    have = results[results.top1.notna()]
    datasets = [d for d in DATASET_LABELS if d in set(have.dataset)] or ["cifar10"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 3.9), squeeze=False)
    models = [m for m in MODEL_LABELS if m in set(results.model)]
    x = np.arange(len(models))
    w = 0.8 / len(VARIANT_LABELS)
    for ax, dataset in zip(axes[0], datasets):
        d = results[results.dataset == dataset].set_index(["model", "variant"])
        for i, (v, label) in enumerate(VARIANT_LABELS.items()):
            pos = x + (i - (len(VARIANT_LABELS) - 1) / 2) * w
            get = lambda col: [d[col].get((m, v), np.nan) for m in models]  # noqa: E731
            bars = ax.bar(pos, get("top1"), w, yerr=[0 if e != e else e for e in get("half")], capsize=2,
                          label=f"ours {label}")
            ax.scatter(pos, get("deck_top1"), marker="_", s=200, color=bars.patches[0].get_facecolor(),
                       linewidths=3, zorder=3, label=f"deck {label}")
        floors = [d["top1"].get((m, FLOOR), np.nan) for m in models]
        ax.hlines(floors, x - 0.4, x + 0.4, colors="k", linestyles=":", label="shortcut-only floor")
        ax.set_xticks(x, [MODEL_LABELS[m] for m in models], rotation=15)
        ax.set_ylabel("top-1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(DATASET_LABELS[dataset])
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
