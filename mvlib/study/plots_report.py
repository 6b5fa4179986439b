"""The report's figures: one per claim of the deck, drawn from the frames the report's tables come from.

Each function returns ``(figure, notes)``: a matplotlib figure (legends beside or under the axes, never over
the data; accuracy intervals clipped to 0-100 %) and a dict of what its caption must say (how many intervals
were clipped, which runs were left out). :func:`mvlib.study.plots_layout.render` turns it into the PNG shown.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .plots_layout import NETWORK_COLORS, clip_errors, legend_outside, place_labels
from .report import fanin_key
from .report_tables import HOW, fanin_label, network

DECK_ROWS = ("baseline", "naive", "retrain-approx")


def deck_bars(main: pd.DataFrame, profile: str, classes: int = 10):
    """§1: the deck's three rows per network (baseline, voter substituted, retrained) beside ours."""
    rows = main[main["variant"].isin(DECK_ROWS)]
    short = {"baseline": "baseline", "naive": "voter substituted", "retrain-approx": "retrained"}
    fig, ax = plt.subplots(figsize=(10, 3.8))
    labels, x = [], np.arange(len(rows))
    err, clipped = clip_errors(rows["ours top1"], rows["± 95 %"])
    ax.bar(x - 0.2, rows["deck top1"], 0.4, color="0.65", label="deck")
    ax.bar(x + 0.2, rows["ours top1"], 0.4, yerr=err, capsize=3, color="tab:blue",
           label=f"ours ({profile} profile): mean over seeds, 95 % interval")
    for _, r in rows.iterrows():
        labels.append(f"{network(r['model'])}\n{short[r['variant']]}")
    ax.axhline(100 / classes, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    legend_outside(ax, "below", ncol=3)
    return fig, {"clipped": clipped}


def hmv_figure(costs: pd.DataFrame):
    """§2: the cost of the hierarchical voter against the exact voter (points, 95 % interval) per outer fan-in,
    per network and application; retrained rows as stars."""
    fans = sorted(set(costs["G"]), key=fanin_key)
    pos = {g: i for i, g in enumerate(fans)}
    fig, ax = plt.subplots(figsize=(9, 4))
    styles = {"naive+recal": ("-", "o"), "naive": (":", "s"), "retrained": ("", "*")}
    groups = list(costs.groupby(["how", "model"], sort=False))
    for k, ((how, model), g) in enumerate(groups):
        g = g.sort_values("G", key=lambda s: s.map(fanin_key))
        shift = (k - (len(groups) - 1) / 2) * 0.06
        ls, marker = styles.get(how, ("-", "o"))
        ax.errorbar([pos[x] + shift for x in g["G"]], g["cost"], yerr=g["half"].fillna(0), ls=ls or "none",
                    marker=marker, ms=12 if marker == "*" else 5, capsize=3, color=NETWORK_COLORS.get(model, "0.3"),
                    label=f"{network(model)}, {HOW.get(how, how)}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(fans)), [fanin_label(f) for f in fans])
    ax.set_xlabel("hierarchical voter (outer fan-in G, or a two-level tree)")
    ax.set_ylabel("cost: exact − hierarchical voter top-1 (points)")
    ax.grid(alpha=0.3)
    legend_outside(ax, "right")
    return fig, {}


def kernel_figure(bench: dict, goals: dict[str, float]):
    """§3: per layer shape at the largest batch, the speed-up of each kernel against torch fp32 ``conv2d``, with the
    project's goals and the roofline ratio of the same run."""
    layers = pd.DataFrame(bench["layers"])
    big = layers[layers["batch"] == layers["batch"].max()]
    series = {"xnor_ratio": "XNOR + popcount, kernel only", "xnor_pack_ratio": "XNOR + popcount, with packing",
              "mv_ratio": "majority voter, kernel only", "hmv_ratio": "hierarchical voter G = 4, kernel only"}
    series = {c: n for c, n in series.items() if c in big}
    fig, ax = plt.subplots(figsize=(10, 4))
    x, w = np.arange(len(big)), 0.8 / len(series)
    for i, (col, name) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, big[col], w, label=name)
    for (what, goal), ls in zip(goals.items(), ("--", "-.")):
        ax.axhline(goal, color="k", ls=ls, lw=1, label=f"goal {goal:.0f}× ({what})")
    peak = bench.get("peak")
    if peak:
        ax.axhline(peak["ceiling"], color="tab:red", ls=":", lw=1.2,
                   label=f"roofline: kernel peak / torch peak = {peak['ceiling']:.1f}×")
    ax.set_xticks(x, [s.replace("->", "→") for s in big["shape"]], fontsize=8)
    ax.set_xlabel(f"ResNet-18 3×3 layer (in→out channels @ size, stride), batch {int(big['batch'].max())}")
    ax.set_ylabel("× faster than torch fp32 conv2d")
    ax.set_ylim(0, max([*goals.values(), big[list(series)].max().max()]) * 1.1)
    ax.grid(axis="y", alpha=0.3)
    legend_outside(ax, "right")
    return fig, {}


def appendix_figure(results: pd.DataFrame):
    """§4: our top-1 per network and normalization (bars, 95 % intervals clipped to 0-100 %), the deck's as black
    ticks, the shortcut-only floor dotted; one panel per dataset."""
    from .appendix import DATASET_LABELS, FLOOR, MODEL_LABELS, VARIANT_LABELS
    have = results[results.top1.notna()]
    datasets = [d for d in DATASET_LABELS if d in set(have.dataset)] or ["cifar10"]
    models = [m for m in MODEL_LABELS if m in set(results.model)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 3.8), squeeze=False)
    x, w, clipped = np.arange(len(models)), 0.8 / len(VARIANT_LABELS), 0
    colors = {"bn": "tab:blue", "nobn": "tab:orange", "bnfree": "tab:green"}
    for ax, dataset in zip(axes[0], datasets):
        d = results[results.dataset == dataset].set_index(["model", "variant"])
        for i, (v, label) in enumerate(VARIANT_LABELS.items()):
            at = x + (i - (len(VARIANT_LABELS) - 1) / 2) * w
            top = [d["top1"].get((m, v), np.nan) for m in models]
            err, n = clip_errors(top, [d["half"].get((m, v), np.nan) for m in models])
            clipped += n
            ax.bar(at, top, w, yerr=err, capsize=2, color=colors[v], label=f"ours, {label}")
            ax.scatter(at, [d["deck_top1"].get((m, v), np.nan) for m in models], marker="_", s=180, color="k",
                       linewidths=2, zorder=3, label="deck" if i == 0 else None)
        ax.hlines([d["top1"].get((m, FLOOR), np.nan) for m in models], x - 0.4, x + 0.4, colors="k",
                  linestyles=":", label="shortcut-only floor (ours)")
        ax.set_xticks(x, [MODEL_LABELS[m] for m in models], fontsize=8)
        ax.set_ylabel("test top-1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(DATASET_LABELS[dataset], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    legend_outside(axes[0][-1], "right")
    fig.tight_layout()
    return fig, {"clipped": clipped}


def hardware_figure(costs: pd.DataFrame, scatter: float, circuits=("mv", "hmv4_pos", "hmv16_pos")):
    """§5: area saving against XNOR + popcount + compare per fan-in N, with the band within which synthesis cannot
    tell two circuits apart (twice the mapper's scatter, at least 2 %)."""
    from ..hw import flow
    from .report_tables import circuit_label
    sv = flow.savings(costs)
    noise = max(0.02, 2 * scatter)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.axhspan(-100 * noise, 100 * noise, color="0.85", label=f"synthesis resolution (±{100 * noise:.0f} %)")
    for c in circuits:
        if c in sv.index:
            s = sv.loc[c].dropna()
            ax.plot(s.index, 100 * s.values, marker="o", label=circuit_label(c))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log", base=2)
    ns = sorted(sv.columns)
    ax.set_xticks(ns, [str(n) for n in ns], rotation=45, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("fan-in N (inputs of one output)")
    ax.set_ylabel("area saved vs popcount + compare (%)")
    ax.grid(alpha=0.3)
    legend_outside(ax, "right")
    return fig, {}


ORDER_COLORS = {"deck's ordering": "tab:green", "reversed": "tab:red", "not resolved at 95 %": "tab:blue",
                "at the floor: says nothing": "0.6"}


def ordering_forest(order: pd.DataFrame, deck_difference: float):
    """§6: Bi-RealNet-18's drop minus ReActNet-18's per condition (Welch 95 % interval), grouped by factor,
    coloured by its verdict, beside the deck's difference."""
    from .report_tables import FACTORS
    o = order.reset_index(drop=True)
    o = o.assign(_f=o["factor"].map({k: i for i, k in enumerate(FACTORS)})).sort_values("_f", kind="stable")
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(o) + 1.4))
    y = np.arange(len(o))[::-1]
    for verdict, color in ORDER_COLORS.items():
        sel = (o["ordering"] == verdict).to_numpy()
        if sel.any():
            ax.errorbar(o["difference"][sel], y[sel], xerr=o["difference ± 95 %"][sel].fillna(0), fmt="o", ms=4,
                        capsize=2, color=color, label=verdict)
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(deck_difference, color="k", ls="--", lw=1, label=f"deck: {deck_difference:+.1f} points")
    ax.set_yticks(y, [f"({f}) {c}" for f, c in zip(o["factor"], o["condition"])], fontsize=7)
    ax.set_ylim(-0.7, len(o) - 0.3)
    ax.set_xlabel("Bi-RealNet-18 drop − ReActNet-18 drop (points; > 0: the deck's ordering)")
    ax.grid(axis="x", alpha=0.3)
    legend_outside(ax, "right")
    return fig, {}


def drop_vs_accuracy(points: pd.DataFrame, deck_points: dict[str, tuple[float, float]]):
    """Appendix: the naive drop against the float network's top-1 per training point, with the deck's two points;
    labels placed so that none overlaps another."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    xs, ys, names, colors, halves = [], [], [], [], []
    for net, color in NETWORK_COLORS.items():
        if f"{net} float" not in points:
            continue
        ax.errorbar(points[f"{net} float"], points[f"{net} drop"], yerr=points[f"{net} ± 95 %"].fillna(0), fmt="o",
                    capsize=3, color=color, label=f"{network(net)} (ours)")
        xs += list(points[f"{net} float"])
        ys += list(points[f"{net} drop"])
        halves += list(points[f"{net} ± 95 %"].fillna(0))
        names += [str(r) for r in points["recipe"]]
        colors += [color] * len(points)
        if net in deck_points:
            dx, dy = deck_points[net]
            ax.plot([dx], [dy], marker="*", ms=14, ls="", color=color, mec="k", label=f"{network(net)} (deck)")
    ax.set_xlabel("float network top-1 (%)")
    ax.set_ylabel("drop by the naive voter (points)")
    ax.grid(alpha=0.3)
    legend_outside(ax, "right")
    left = place_labels(ax, xs, ys, names, color=colors, yerr=halves)
    return fig, {"labels_left_out": left}


PARETO_STYLE = {"popcount": ("s", "tab:green"), "mv": ("D", "black"), "hmv": ("o", "tab:blue"),
                "tree": ("^", "tab:purple")}


def short_point(name: str) -> str:
    """``HMV G=4 tie neg`` -> ``G4``; ``popcount w8`` -> ``pc w8``; ``tree 4x4 tie first`` -> ``4×4``."""
    s = name.replace("popcount", "pc").replace("HMV G=", "G").replace("tree ", "")
    return s.split(" tie ")[0].replace("x", "×")


def _pareto_points(ax, g: pd.DataFrame) -> tuple[np.ndarray, int]:
    """One panel's designs: markers by kind (hollow: degenerate), 95 % bars clipped to 0-100 %; returns the bars
    in ``g``'s row order (for the label placer) and how many were clipped."""
    bars, clipped = [], 0
    for kind, (marker, color) in PARETO_STYLE.items():
        k = g[g.kind == kind]
        if k.empty:
            continue
        err, n = clip_errors(k["top1"], k["top1_half"])
        clipped += n
        bars.append(pd.DataFrame(err.T, index=k.index))
        ax.errorbar(k["work"], k["top1"], yerr=err, fmt="none", ecolor=color, alpha=0.35, capsize=2)
        ax.scatter(k["work"], k["top1"], marker=marker, s=36, label=kind, edgecolors=color,
                   facecolors=["none" if d else color for d in k["degenerate"]], zorder=3)
    return pd.concat(bars).reindex(g.index).fillna(0).to_numpy().T, clipped


def pareto_figure(points: pd.DataFrame, on_front: pd.Series):
    """§7: per network (columns), top: test top-1 against logic work per image (log) of every design, intervals
    clipped to 0-100 %, the front dashed, the base-width designs of about the same cost boxed; bottom: those
    designs enlarged (they crowd at one place of the log axis). Each point is named by a label placed clear of
    the others and of the bars; degenerate voters hollow."""
    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 8.2), squeeze=False,
                             gridspec_kw={"height_ratios": [1.0, 0.85]})
    clipped = left = 0
    for col, model in enumerate(models):
        ax, zoom = axes[0][col], axes[1][col]
        g = points[points.model == model].assign(work=lambda d: d["ge_evals_per_image"] / 1e6)
        # the designs that crowd: the base width's within a factor 1.5 of its most costly (a degenerate voter
        # reading a fraction of the inputs costs far less and stands apart)
        at_base = g[g.width == g.width.max()]
        base = at_base[at_base["work"] >= at_base["work"].max() / 1.5]
        err, n = _pareto_points(ax, g)
        clipped += n
        f = g[on_front.reindex(g.index, fill_value=False)].sort_values("work")
        ax.step(f["work"], f["top1"], where="post", ls="--", color="tab:red", lw=1, label="front")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # the minor labels of a short log axis overlap
        ax.set_ylim(0, 100)
        ax.set_xlabel("logic work per image (millions of GE-evaluations, log scale)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(network(model), fontsize=10)
        ax.grid(alpha=0.3)
        lo, hi = base["work"].min(), base["work"].max()
        ax.add_patch(plt.Rectangle((lo / 1.06, 0.5), hi * 1.06 - lo / 1.06, 99, fill=False, ls=":", lw=0.8,
                                   color="0.4"))
        out = ~g.index.isin(base.index)  # the boxed designs are named below
        left += place_labels(ax, list(g["work"][out]), list(g["top1"][out]),
                             [short_point(p) for p in g["point"][out]], yerr=err[:, out])
        zerr, _ = _pareto_points(zoom, base)
        span = max(hi - lo, 1e-9)
        zoom.set_xlim(lo - 0.25 * span, hi + 0.25 * span)
        tops = base["top1"].to_numpy()
        zoom.set_ylim(max(0.0, float(np.min(tops - zerr[0])) - 3), min(100.0, float(np.max(tops + zerr[1])) + 3))
        zoom.set_xlabel(f"logic work per image (M GE-evaluations), boxed width-{int(g.width.max())} designs")
        zoom.set_ylabel("test top-1 (%)")
        zoom.grid(alpha=0.3)
        left += place_labels(zoom, list(base["work"]), list(base["top1"]), [short_point(p) for p in base["point"]],
                             yerr=zerr)
    legend_outside(axes[0][-1], "right")
    fig.tight_layout()
    return fig, {"clipped": clipped, "labels_left_out": left}
