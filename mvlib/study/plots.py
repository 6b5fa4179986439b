"""Plots shared by the notebooks: training curves and grouped comparisons."""
from __future__ import annotations

import math
from typing import Mapping

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter


def plot_histories(histories: Mapping[str, list[dict]], title: str = "", metrics=("train_loss", "val_top1")):
    """One panel per metric, one line per run (x = epoch)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, hist in histories.items():
            if hist:
                ax.plot([r["epoch"] for r in hist], [r[metric] for r in hist], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " ") + (" (%)" if "top" in metric else ""))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def bar_compare(labels, series: Mapping[str, list[float]], ylabel: str = "top-1 (%)", title: str = "",
                errors: Mapping[str, list[float]] | None = None):
    """Grouped bars: one group per label, one bar per series (e.g. deck vs ours); ``errors``: half-widths per series."""
    import numpy as np
    x = np.arange(len(labels))
    n = max(1, len(series))
    w = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.8))
    for i, (name, vals) in enumerate(series.items()):
        err = (errors or {}).get(name)
        ax.bar(x + (i - (n - 1) / 2) * w, [float("nan") if v is None else v for v in vals], w, label=name,
               yerr=[0 if e is None or e != e else e for e in err] if err else None, capsize=3)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---- notebook 08 (why the voter hurts): drawn from mvlib.study.voter_drop's tables ----------------------------
NETWORK_COLORS = {"reactnet18": "tab:blue", "birealnet18": "tab:red"}


def plot_rescale_sweep(order, title: str = ""):
    """Experiment 1: each network's naive drop against the weight scale k (left) and their difference (right).

    ``order``: :func:`mvlib.study.voter_drop_verdicts.ordering_table` rows with a ``k`` (mean and 95 % half-widths).
    """
    g = order[order["k"].notna()].sort_values("k")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for net, color in NETWORK_COLORS.items():
        ax.errorbar(g["k"], g[f"{net} drop"], yerr=g[f"{net} ± 95 %"].fillna(0), marker="o", capsize=3,
                    color=color, label=net)
    bx.errorbar(g["k"], g["difference"], yerr=g["difference ± 95 %"].fillna(0), marker="o", capsize=3, color="k",
                label="Bi-RealNet-18 − ReActNet-18")
    bx.axhline(0, color="gray", lw=1)
    for a, ylabel in ((ax, "drop: float − naive voter (points)"), (bx, "difference of drops (points)")):
        a.set_xscale("log", base=2)
        a.set_xticks(list(g["k"]), [f"{k:g}" if k >= 1 else f"1/{1 / k:g}" for k in g["k"]])
        a.set_xlabel("weight scale k (float network unchanged)")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    bx.set_title("> 0: the deck's ordering (Bi-RealNet-18 loses more)", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_drop_vs_accuracy(points, deck_points, title: str = ""):
    """Experiment 4: drop against float top-1 per network and training point, with the deck's two points.

    ``points``: ordering-table rows (one per training point, one convention); ``deck_points``:
    ``{model: (baseline top-1, drop)}``.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for net, color in NETWORK_COLORS.items():
        ax.errorbar(points[f"{net} float"], points[f"{net} drop"], yerr=points[f"{net} ± 95 %"].fillna(0),
                    fmt="o", capsize=3, color=color, label=f"{net} (ours)")
        for _, r in points.iterrows():
            ax.annotate(str(r["recipe"]), (r[f"{net} float"], r[f"{net} drop"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points", color=color)
        x, y = deck_points[net]
        ax.plot([x], [y], marker="*", ms=14, ls="", color=color, mec="k", label=f"{net} (deck)")
    ax.set_xlabel("float network top-1 (%)")
    ax.set_ylabel("drop by the naive voter (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_flips(flips, sensitivity, title: str = ""):
    """Experiment 5: per layer, the fraction of BN outputs whose sign flips under each convention (lines) and
    the accuracy lost with the voter in that layer alone (bars, right axis), one panel per network."""
    nets = [n for n in NETWORK_COLORS if n in set(flips["model"])]
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 3.8), squeeze=False)
    for ax, net in zip(axes[0], nets):
        f = flips[(flips["model"] == net) & (flips["k"] == 1.0)].groupby("index").mean(numeric_only=True)
        s = sensitivity[sensitivity["model"] == net]
        if len(s):
            bx = ax.twinx()
            bx.bar(s["index"], s["damage"], color="gray", alpha=0.25, label="top-1 lost, voter in this layer only")
            bx.set_ylabel("top-1 lost (points)")
            bx.legend(fontsize=7, loc="upper right")
        for col, label in (("flip_none", "±1 (naive)"), ("flip_alpha", "α"), ("flip_matched", "matched"),
                           ("flip_threshold", "BN-folded threshold"), ("vote_change", "MV vote ≠ folded vote")):
            ax.plot(f.index, f[col], marker="o", ms=3, label=label)
        ax.set_title(net)
        ax.set_xlabel("binary conv (forward order)")
        ax.set_ylabel("fraction of outputs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


PARETO_STYLE = {"popcount": ("s", "tab:green"), "mv": ("D", "black"), "hmv": ("o", "tab:blue"),
                "tree": ("^", "tab:purple")}


def _label_points(ax, g, cost, log: bool) -> None:
    """Name each point; points close along x and in top-1 get their labels stacked rather than overprinted."""
    placed = []  # (x, y) of labels already placed, in data units (x in log10 where log)
    xs = [math.log10(v) if log and v > 0 else v for v in g[cost]]
    span = 0.12 * ((max(xs) - min(xs)) or 1.0)  # a label runs about this far to the right of its point
    for _, r in g.sort_values([cost, "top1"]).iterrows():
        x = math.log10(r[cost]) if log and r[cost] > 0 else r[cost]
        level = sum(1 for px, py in placed if abs(px - x) < span and abs(py - r["top1"]) < 4)
        placed.append((x, r["top1"]))
        ax.annotate(r["point"], (r[cost], r["top1"]), fontsize=6, xytext=(3, 2 + 7 * level),
                    textcoords="offset points")


def plot_pareto(points, on_front_work, on_front_depth, title: str = ""):
    """Per network: top-1 against logic work per image (log) and against depth; intervals as bars, fronts dashed.

    ``points``: :func:`mvlib.study.pareto.points_table`; ``on_front_*``: boolean Series of
    :func:`mvlib.study.pareto.front` for each cost. Degenerate voters are drawn hollow.
    """
    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        g = points[points.model == model]
        for ax, cost, on, xlabel in ((row[0], "ge_evals_per_image", on_front_work, "logic work per image "
                                      "(GE-evaluations, log)"), (row[1], "max_depth", on_front_depth,
                                                                 "logic depth (cells on the deepest layer's path)")):
            for kind, (marker, color) in PARETO_STYLE.items():
                k = g[g.kind == kind]
                if k.empty:
                    continue
                half = k["top1_half"].where(k["top1_half"].notna(), 0.0)
                ax.errorbar(k[cost], k["top1"], yerr=half, fmt="none", ecolor=color, alpha=0.5, capsize=2)
                ax.scatter(k[cost], k["top1"], marker=marker, s=36, label=kind,
                           facecolors=["none" if d else color for d in k["degenerate"]], edgecolors=color)
            f = g[on.reindex(g.index, fill_value=False)].sort_values(cost)
            ax.step(f[cost], f["top1"], where="post", ls="--", color="tab:red", lw=1, label="front")
            _label_points(ax, g, cost, log=cost == "ge_evals_per_image")
            if cost == "ge_evals_per_image":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # the minor labels of a short log axis overlap
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test top-1 (%)")
            ax.set_title(model)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
