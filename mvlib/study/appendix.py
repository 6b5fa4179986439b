"""The deck's appendix (notebook 06): BN, without BN and BN-Free binary networks.

The deck's appendix Table 2 (taken from "BNN - BN = ?: Training Binary Neural
Networks without Batch Normalization", Chen et al., CVPR Workshops 2021)
gives top-1 of XNORNet-18, Bi-RealNet-18, ReActNet-18 and ReActNet-A, each
with BN, without BN and BN-Free, on CIFAR-10 and CIFAR-100. This module runs
one cell of that grid (:func:`run_cell`) and builds the comparison from the
run records alone (:func:`appendix_results`, :func:`appendix_table`,
:func:`pattern_summary`, :func:`pattern_statement`), so that notebook 06 and
the report show the same numbers.

Run records of this step: step ``06_bn_free``, variant ``bn`` / ``nobn`` /
``bnfree`` (:func:`mvlib.models.variant_name`), dataset ``cifar10`` /
``cifar100``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import DataError, resolve_data_dir
from .deck import deck_numbers
from .summary import binomial_se
from ..models import relative_width, variant_name
from .records import resolve_results_dir

STEP = "06_bn_free"
MODEL_LABELS = {"xnornet18": "XNORNet-18", "birealnet18": "Bi-RealNet-18", "reactnet18": "ReActNet-18",
                "reactneta": "ReActNet-A"}
VARIANT_LABELS = {"bn": "BN", "nobn": "w/o BN", "bnfree": "BN-Free"}
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# a difference counts as real only beyond this many standard errors (about 95 % two-sided)
NOISE_Z = 2.0


# ----------------------------------------------------------------- running
def cell_settings(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The configuration keys of notebook 06's cells on ``dataset`` (appendix keys mapped onto run keys).

    CIFAR-100 trains on ``cifar100_train_file`` (here the 100-per-class
    subset) with its own per-class counts and validation slice, since one
    per-class number cannot fit both datasets.
    """
    c100 = dataset == "cifar100"
    return {"dataset": dataset,
            "train_file": cfg["cifar100_train_file"] if c100 else cfg["train_file"],
            "val_per_class": cfg["cifar100_val_per_class"] if c100 else cfg["val_per_class"],
            "train_per_class": cfg["appendix_cifar100_train_per_class"] if c100 else cfg["appendix_train_per_class"],
            "test_per_class": cfg["appendix_cifar100_test_per_class"] if c100 else cfg["appendix_test_per_class"],
            "batch_size": cfg["appendix_batch_size"] or cfg["batch_size"], "epochs": cfg["appendix_epochs"],
            # threads: only how fast the cells run, not part of any identity
            "threads": cfg["appendix_threads"] or cfg["threads"]}


def data_missing(cfg: dict[str, Any], dataset: str) -> str | None:
    """Why ``dataset``'s notebook-06 files cannot be read, or None when they are there.

    Only looks for the files (no loading): a folder from ``data_dir`` /
    ``$MVLIB_DATA`` must hold the train file and ``test.npz``. Without any
    folder only torchvision's full train split exists, so a named train
    subset file counts as missing.
    """
    s = cell_settings(cfg, dataset)
    try:
        folder = resolve_data_dir(dataset, cfg["data_dir"])
    except DataError as e:
        return str(e)
    if folder is None:
        if s["train_file"] != "train.npz":
            return (f"no data folder (data_dir / $MVLIB_DATA) and torchvision has no {s['train_file']!r} "
                    f"for {dataset}")
        return None  # torchvision download; its own errors are clear
    absent = [n for n in (s["train_file"], "test.npz") if not (folder / n).is_file()]
    return f"{folder} lacks {', '.join(absent)}" if absent else None


def run_cell(cfg: dict[str, Any], model: str, norm: str, dataset: str, log=print):
    """Train (or reuse) one cell of the grid; returns ``(model, run)``.

    ReActNet-A is built at the same fraction of its paper width as the
    ResNet-18s (``relative_width``). Adaptive gradient clipping (``agc_clip``)
    is part of the BN-Free recipe only, so only ``bnfree`` cells use it.
    """
    from .experiment import run_config, train_run  # experiment imports the trainer; keep this module light
    c = run_config(cfg, **cell_settings(cfg, dataset), norm=norm, width=relative_width(model, cfg["appendix_width"]),
                   agc_clip=cfg["agc_clip"] if norm == "bnfree" else 0.0)
    return train_run(c, STEP, model, variant_name(norm), log=log)


# ----------------------------------------------------------------- reading
def _finished_runs(results_dir, step: str = STEP) -> list[dict[str, Any]]:
    root = resolve_results_dir(results_dir) / "runs" / step
    out = []
    for mpath in sorted(root.glob("*/metrics.json")) if root.is_dir() else []:
        m = json.loads(mpath.read_text())
        ppath = mpath.with_name("params.json")
        saved = json.loads(ppath.read_text()) if ppath.is_file() else {}
        m["params"] = saved["identity"]["params"] if "identity" in saved else saved
        m.setdefault("run_id", mpath.parent.name)
        out.append(m)
    return out


def appendix_results(results_dir="results", profile: str | None = None) -> pd.DataFrame:
    """One row per (model, dataset, variant): our latest finished run beside the deck.

    Reads ``runs/06_bn_free/*/metrics.json`` (and ``params.json``) under
    ``results_dir``; ``profile`` keeps only that profile's runs. Where a cell
    was run more than once (another configuration, or ``force``), the newest
    run wins (run ids begin with their UTC start time). Columns: model,
    dataset, variant, deck_top1, top1, delta (ours - deck), se (binomial
    standard error of ours), test_images, train_images, width, epochs,
    seconds, run_id. Deck cells without a run have NaN in our columns.
    """
    rows = {}
    for m in _finished_runs(results_dir):
        if profile is not None and m.get("profile") != profile:
            continue
        key = (m["model"], m["dataset"], m["variant"])
        if key not in rows or m["run_id"] > rows[key]["run_id"]:
            rows[key] = m
    deck = deck_numbers("appendix")
    out = []
    for d in deck.itertuples():
        m = rows.pop((d.model, d.dataset, d.variant), None)
        out.append(_row(d.model, d.dataset, d.variant, d.top1, m))
    # runs outside the deck's grid (should not happen) are kept, not dropped silently
    out += [_row(k[0], k[1], k[2], math.nan, m) for k, m in sorted(rows.items())]
    return pd.DataFrame(out)


def _row(model, dataset, variant, deck_top1, m) -> dict[str, Any]:
    row = {"model": model, "dataset": dataset, "variant": variant, "deck_top1": deck_top1}
    if m is None:
        return {**row, "top1": math.nan, "delta": math.nan, "se": math.nan, "test_images": math.nan,
                "train_images": math.nan, "width": math.nan, "epochs": math.nan, "seconds": math.nan,
                "run_id": None}
    n = m.get("test_images") or 0
    return {**row, "top1": m["top1"], "delta": m["top1"] - deck_top1,
            "se": binomial_se(m["top1"], n) if n else math.nan, "test_images": n or math.nan,
            "train_images": m.get("train_images", math.nan), "width": m["params"].get("width", math.nan),
            "epochs": m.get("epochs", math.nan), "seconds": m.get("seconds", math.nan), "run_id": m["run_id"]}


def appendix_table(results_dir="results", profile: str | None = None,
                   results: pd.DataFrame | None = None) -> pd.DataFrame:
    """The deck's appendix layout: one row per network, columns (dataset, norm, deck | ours | Δ).

    Built from :func:`appendix_results` (pass ``results`` to reuse one
    already read). Δ = ours - deck, in percentage points of top-1.
    """
    df = appendix_results(results_dir, profile) if results is None else results
    models = [m for m in MODEL_LABELS if m in set(df.model)] + sorted(set(df.model) - set(MODEL_LABELS))
    datasets = [d for d in DATASET_LABELS if d in set(df.dataset)]
    variants = [v for v in VARIANT_LABELS if v in set(df.variant)]
    cols = pd.MultiIndex.from_tuples([(DATASET_LABELS[d], VARIANT_LABELS[v], k) for d in datasets for v in variants
                                      for k in ("deck", "ours", "Δ")])
    idx = df.set_index(["model", "dataset", "variant"])
    data = []
    for m in models:
        vals = []
        for d in datasets:
            for v in variants:
                r = idx.loc[(m, d, v)] if (m, d, v) in idx.index else None
                vals += [math.nan, math.nan, math.nan] if r is None else [r.deck_top1, r.top1, r.delta]
        data.append(vals)
    return pd.DataFrame(data, index=pd.Index([MODEL_LABELS.get(m, m) for m in models], name="network"), columns=cols)


# ----------------------------------------------------------------- the pattern
def pattern_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): the top-1 lost without BN and the share BN-Free wins back, deck and ours.

    ``drop`` = BN - w/o BN (pp); ``recovered`` = (BN-Free - w/o BN) /
    (BN - w/o BN), the fraction of the BN gap BN-Free closes (NaN when our
    gap is within noise, where the fraction means nothing). ``*_se``: the
    standard error of our difference (independent binomial errors), and
    ``*_clear``: whether ours exceeds ``NOISE_Z`` of them.
    """
    out = []
    for (dataset, model), g in results.groupby(["dataset", "model"], sort=False):
        v = g.set_index("variant")
        # a triple with a missing run (dataset skipped, step unfinished) says nothing about the pattern
        if not {"bn", "nobn", "bnfree"} <= set(v.index) or v.top1[["bn", "nobn", "bnfree"]].isna().any():
            continue
        deck_drop = v.deck_top1["bn"] - v.deck_top1["nobn"]
        drop = v.top1["bn"] - v.top1["nobn"]
        drop_se = math.hypot(v.se["bn"], v.se["nobn"])
        gain = v.top1["bnfree"] - v.top1["nobn"]
        gain_se = math.hypot(v.se["bnfree"], v.se["nobn"])
        drop_clear = bool(drop > NOISE_Z * drop_se)
        out.append({"dataset": dataset, "model": model,
                    "deck_drop": deck_drop, "drop": drop, "drop_se": drop_se, "drop_clear": drop_clear,
                    "deck_gain": v.deck_top1["bnfree"] - v.deck_top1["nobn"], "gain": gain, "gain_se": gain_se,
                    "gain_clear": bool(gain > NOISE_Z * gain_se),
                    "deck_recovered": (v.deck_top1["bnfree"] - v.deck_top1["nobn"]) / deck_drop,
                    "recovered": gain / drop if drop_clear else math.nan})
    return pd.DataFrame(out)


def _fmt_pp(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.1f} pp"


def pattern_statement(results: pd.DataFrame) -> str:
    """A plain statement, per dataset, of how our pattern compares with the deck's.

    The deck's pattern: without BN, XNORNet-18 and Bi-RealNet-18 collapse
    (lose 16-18 pp on CIFAR-10) while ReActNet-18 barely moves (2 pp), and
    BN-Free wins back much of the loss. Each part is checked on our records
    against the binomial noise of our test set, so that a difference smaller
    than the noise is called that rather than a confirmation.
    """
    summary = pattern_summary(results)
    if summary.empty:
        return "No complete BN / w/o BN / BN-Free triple in the records: nothing to compare."
    parts = []
    for dataset in [d for d in DATASET_LABELS if d in set(summary.dataset)]:
        s = summary[summary.dataset == dataset].set_index("model")
        r = results[(results.dataset == dataset) & results.top1.notna()]
        n = int(r.test_images.min())
        lines = [f"{DATASET_LABELS[dataset]} ({n} test images per cell; one cell's s.e. is up to "
                 f"{r.se.max():.1f} pp, a difference of two cells about {math.sqrt(2) * r.se.max():.1f} pp):"]
        lines.append("  Top-1 lost without BN (BN - w/o BN), ours vs deck: " + "; ".join(
            f"{MODEL_LABELS.get(m, m)} {_fmt_pp(row['drop'])} (deck {_fmt_pp(row['deck_drop'])})"
            + ("" if row["drop_clear"] else ", within noise") for m, row in s.iterrows()) + ".")
        collapse = [m for m in ("xnornet18", "birealnet18") if m in s.index]
        verdicts = []
        if collapse and "reactnet18" in s.index:
            # s["drop"], not s.drop: DataFrame.drop is a method
            drop, drop_se = s["drop"], s["drop_se"]
            collapsed = all(s["drop_clear"][m] for m in collapse)
            react_smaller = all(drop["reactnet18"] < drop[m] for m in collapse)
            react_clear = all(drop[m] - drop["reactnet18"] > NOISE_Z * math.hypot(drop_se[m], drop_se["reactnet18"])
                              for m in collapse)
            names = " and ".join(MODEL_LABELS[m] for m in collapse)
            if collapsed and react_clear:
                verdicts.append(f"the deck's pattern appears: {names} lose clearly more without BN than "
                                f"ReActNet-18 does")
            elif react_smaller:
                verdicts.append(f"the deck's pattern appears only weakly: {names} lose more without BN than "
                                f"ReActNet-18, but " + ("not by more than the noise" if not react_clear else
                                                         "not every loss is beyond the noise"))
            else:
                react_more = all(drop["reactnet18"] - drop[m] > NOISE_Z * math.hypot(drop_se[m], drop_se["reactnet18"])
                                 for m in collapse)
                verdicts.append(f"the deck's pattern does not appear: ReActNet-18 loses "
                                + (f"clearly more without BN than {names}" if react_more else
                                   f"as much without BN as {names} or more (the differences are within noise)"))
        gains = [f"{MODEL_LABELS.get(m, m)} {_fmt_pp(row['gain'])}"
                 + ("" if math.isnan(row["recovered"]) else f" = {100 * row['recovered']:.0f}% of the loss")
                 + f" (deck {100 * row['deck_recovered']:.0f}%)" + ("" if row["gain_clear"] else ", within noise")
                 for m, row in s.iterrows()]
        n_clear = int(s.gain_clear.sum())
        verdicts.append(f"BN-Free beats w/o BN clearly for {n_clear} of {len(s)} networks "
                        f"(deck: {int((s.deck_gain > 0).sum())} of {len(s)})")
        lines.append("  BN-Free over w/o BN: " + "; ".join(gains) + ".")
        lines.append("  So " + "; ".join(verdicts) + ".")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot_appendix(results: pd.DataFrame, title: str = ""):
    """One panel per dataset: our top-1 per network and norm (bars), the deck's as markers."""
    import matplotlib.pyplot as plt
    import numpy as np
    datasets = [d for d in DATASET_LABELS if d in set(results.dataset[results.top1.notna()])] or ["cifar10"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 3.8), squeeze=False)
    models = [m for m in MODEL_LABELS if m in set(results.model)]
    x = np.arange(len(models))
    w = 0.8 / len(VARIANT_LABELS)
    for ax, dataset in zip(axes[0], datasets):
        d = results[results.dataset == dataset].set_index(["model", "variant"])
        for i, (v, label) in enumerate(VARIANT_LABELS.items()):
            pos = x + (i - (len(VARIANT_LABELS) - 1) / 2) * w
            get = lambda col: [d[col].get((m, v), np.nan) for m in models]  # noqa: E731
            bars = ax.bar(pos, get("top1"), w, yerr=get("se"), capsize=2, label=f"ours {label}")
            ax.scatter(pos, get("deck_top1"), marker="_", s=200, color=bars.patches[0].get_facecolor(),
                       linewidths=3, zorder=3, label=f"deck {label}")
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
