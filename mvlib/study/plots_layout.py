"""Layout helpers of the report's figures, and its figures of time.

Helpers: legends beside the data, labels that do not overlap, intervals clipped to the range a percentage can
take, integer epoch ticks, a figure embedded with its caption (:func:`render`). Figures of time: training curves
per epoch (:func:`training_curves`) and the study's notebooks per minute (:func:`timing_figure`).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .report_tables import network

NETWORK_COLORS = {"reactnet18": "tab:blue", "birealnet18": "tab:red", "xnornet18": "tab:green",
                  "reactneta": "tab:purple"}


@dataclass
class Figure:
    """A rendered figure and its caption, shown as one self-contained HTML block (the PNG as a data URI)."""

    png: bytes
    caption: str = ""

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png).decode()
        cap = f'<figcaption style="font-size:13px;max-width:60em">{html.escape(self.caption)}</figcaption>' \
            if self.caption else ""
        return (f'<figure style="margin:0.5em 0 1em 0"><img style="max-width:100%" '
                f'src="data:image/png;base64,{data}"/>{cap}</figure>')

    def __repr__(self) -> str:
        return f"<figure: {len(self.png)} bytes PNG> {self.caption}"


def render(fig, caption: str = "", dpi: int = 110) -> Figure:
    """Draw ``fig`` to PNG (the legends outside the axes included), close it, and pair it with its caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Figure(buf.getvalue(), caption)


def clip_errors(means, halves, lo: float = 0.0, hi: float = 100.0) -> tuple[np.ndarray, int]:
    """Asymmetric error-bar lengths ``[[below], [above]]`` of ``mean ± half`` clipped to ``[lo, hi]``, and how many
    intervals reached beyond it (a missing half-width draws no bar)."""
    m = np.asarray(means, dtype=float)
    h = np.nan_to_num(np.asarray(halves, dtype=float), nan=0.0)
    low, high = np.clip(m - h, lo, hi), np.clip(m + h, lo, hi)
    clipped = int(np.sum(((m - h) < lo) | ((m + h) > hi)))
    return np.vstack([np.maximum(m - low, 0), np.maximum(high - m, 0)]), clipped


def clip_note(clipped: int, why: str = "") -> str:
    """The caption's sentence for clipped intervals (empty when none was clipped)."""
    if not clipped:
        return ""
    return (f" {clipped} interval{'s' if clipped > 1 else ''} reach{'' if clipped > 1 else 'es'} beyond 0–100 % and "
            f"{'are' if clipped > 1 else 'is'} drawn clipped to it" + (f" ({why})" if why else "") + ".")


def legend_outside(ax, where: str = "right", ncol: int = 1, fontsize: int = 8, **kw):
    """A legend beside the axes (``right``) or under them (``below``), never over the data."""
    if where == "below":
        return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=fontsize,
                         frameon=False, **kw)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, fontsize=fontsize, frameon=False, **kw)


def integer_epochs(ax) -> None:
    """Epoch ticks at whole epochs only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _overlaps(box, boxes, pad: float = 1.0) -> bool:
    return any(box.x0 < b.x1 + pad and box.x1 > b.x0 - pad and box.y0 < b.y1 + pad and box.y1 > b.y0 - pad
               for b in boxes)


def place_labels(ax, xs, ys, labels, fontsize: int = 7, color="0.2", yerr=None) -> int:
    """Name each point with a label that overlaps no other label, no point, no error bar and stays inside the axes.

    Candidates are tried at growing distances in eight directions; a label set away from its point gets a thin
    leader line. A label that finds no free place is not drawn. ``color``: one colour, or one per label;
    ``yerr``: the points' vertical error bars as matplotlib takes them (half-widths, or ``[[below], [above]]``;
    None: no bars), kept clear like the points.
    Returns the number of labels left out.
    """
    from matplotlib.transforms import Bbox
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    r = 4.0 * fig.dpi / 72  # marker half-size in pixels
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    if yerr is not None:  # each bar as a thin box, its caps included
        err = np.nan_to_num(np.asarray(yerr, float))
        below, above = (err, err) if err.ndim == 1 else (err[0], err[1])
        ends = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float) + above]))
        starts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float) - below]))
        cap = 2.5 * fig.dpi / 72
        taken += [Bbox.from_extents(px - cap, min(y0, y1), px + cap, max(y0, y1))
                  for (px, y0), (_, y1) in zip(starts, ends) if y0 != y1]
    colors = list(color) if isinstance(color, (list, tuple)) else [color] * len(labels)
    directions = [(1, 0.3), (1, -1), (-1, 0.3), (-1, -1), (0, 1.2), (0, -1.8), (1, 1.2), (-1, 1.2)]
    left_out = 0
    for (px, py), (x, y), text, color in sorted(zip(pts, zip(xs, ys), labels, colors),
                                               key=lambda t: (-t[0][1], t[0][0])):
        placed = None
        for dist in (5, 12, 22, 34, 48, 64, 80):
            for dx, dy in directions:
                offset, ha = (dx * dist, dy * dist), "left" if dx > 0 else "right" if dx < 0 else "center"
                ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
                                  color=color, ha=ha, va="center")
                box = ann.get_window_extent(renderer)
                ann.remove()
                if (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
                        and not _overlaps(box, taken)):
                    placed = (offset, ha, box, dist)
                    break
            if placed:
                break
        if placed is None:
            left_out += 1
            continue
        offset, ha, box, dist = placed
        leader = {"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 0, "shrinkB": 3} if dist > 5 else None
        ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize, color=color, ha=ha,
                    va="center", arrowprops=leader)
        taken.append(box)
    return left_out


# ---------------------------------------------------------------------------------------------- time
def training_curves(histories: dict[str, list[dict]]):
    """Appendix: training loss and validation top-1 per epoch of the runs that trained for two epochs or more;
    a run of one epoch has no curve and is left out (its end point is in the tables)."""
    curves = {k: h for k, h in histories.items() if len(h) >= 2}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    styles = ["-", "--", ":", "-."]
    seen: dict[str, int] = {}
    for label, hist in curves.items():
        model = label.split()[0]
        i = seen[model] = seen.get(model, -1) + 1
        for ax, metric in zip(axes, ("train_loss", "val_top1")):
            ax.plot([r["epoch"] for r in hist], [r[metric] for r in hist], marker="o", ms=3,
                    color=NETWORK_COLORS.get(model, "0.3"), ls=styles[i % len(styles)],
                    label=f"{network(model)} {' '.join(label.split()[1:])}")
    for ax, ylabel in zip(axes, ("training loss", "validation top-1 (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        integer_epochs(ax)
        ax.grid(alpha=0.3)
    legend_outside(axes[1], "right", fontsize=7)
    fig.tight_layout()
    return fig, {"left_out": sorted(set(histories) - set(curves))}


def timing_figure(steps: list[dict], budget_min: float | None = None):
    """§8: each notebook's run from its start to its end (minutes from the study's start), and the budget."""
    import datetime as dt

    def t(stamp):
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()
    timed = [r for r in steps if "started_utc" in r and "finished_utc" in r]
    fig, ax = plt.subplots(figsize=(9, 0.32 * max(len(timed), 1) + 1.3))
    if timed:
        t0 = min(t(r["started_utc"]) for r in timed)
        for i, r in enumerate(reversed(timed)):
            a, b = (t(r["started_utc"]) - t0) / 60, (t(r["finished_utc"]) - t0) / 60
            ax.barh(i, b - a, left=a, color="tab:blue", height=0.6)
        ax.set_yticks(range(len(timed)), [r["step"] for r in reversed(timed)], fontsize=8)
    if budget_min:
        ax.axvline(budget_min, color="tab:red", ls="--", lw=1, label=f"budget {budget_min:.0f} min")
        legend_outside(ax, "right")
    ax.set_xlabel("minutes from the study's start")
    ax.grid(axis="x", alpha=0.3)
    return fig, {"untimed": [r["step"] for r in steps if r not in timed]}
