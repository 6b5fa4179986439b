"""Plots shared by the notebooks: training curves and grouped comparisons."""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt


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
