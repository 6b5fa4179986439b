# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: mvlib (.venv)
#     language: python
#     name: mvlib
# ---

# %% [markdown]
# # 06 · Appendix: binary networks with BN, without BN and BN-Free (CIFAR-10 and CIFAR-100)
#
# **Reproduces** the deck's appendix Table 2, which the deck takes from *"BNN − BN = ?: Training Binary
# Neural Networks without Batch Normalization"* (Chen et al., CVPR Workshops 2021): top-1 of XNORNet-18,
# Bi-RealNet-18, ReActNet-18 and ReActNet-A, each trained with BN, with every BN removed (*w/o BN*) and
# BN-Free (scaled weight standardization, signal-propagation scaling of the residual branches, adaptive
# gradient clipping; `mvlib/models/norms.py`, `mvlib/agc.py`), on CIFAR-10 and CIFAR-100 — 24 cells.
# The deck's CIFAR-10 numbers: XNORNet-18 90.21 / 71.75 / 79.67, Bi-RealNet-18 89.12 / 71.30 / 79.59,
# ReActNet-18 92.31 / 90.33 / 92.08, ReActNet-A 82.95 / 77.60 / 83.91 (BN / w/o BN / BN-Free).
#
# **Hardware and scale.** Profile `cpu`: one torch thread of a 2-core CPU, about 5½ minutes of CPU time
# for all 24 cells (9 minutes of wall time when measured on a shared, busy 2-core machine). The ResNet-18s at width 8 and ReActNet-A at width 4 (1/8 of the paper's widths), 3 epochs on
# 1,000 CIFAR-10 / 2,000 CIFAR-100 train images, and — unlike the other notebooks — evaluated on
# class-balanced **test subsets** of 1,000 images each (binomial standard errors are shown). CIFAR-100
# trains on the offline 100-per-class train subset (its full train split is not available here). Every
# cell is trained by the same plain recipe; no `bn` cell reuses notebook 01's baselines, whose width,
# data and schedule differ. Profile `paper`: the paper's widths, all data, 256 epochs, on a GPU.
#
# **Result.** At the `cpu` scale every cell is far below the deck (tiny networks, 60–120 optimizer
# steps: about 20–28 % top-1 on CIFAR-10 and 1–6 % on CIFAR-100), so only the *pattern* can be compared:
# how much each network loses without BN and how much BN-Free wins back. The statement at the end is
# computed from the run records (`results/runs/06_bn_free/…`) and says plainly whether the deck's
# pattern — without BN collapses for XNORNet-18 and Bi-RealNet-18 but barely for ReActNet-18; BN-Free
# recovers most — appears, taking the test-set noise into account. When this notebook was written it did
# **not** appear at the `cpu` scale: XNORNet-18 and Bi-RealNet-18 lost nothing measurable without BN
# while ReActNet-18 lost the most, and BN-Free won back a clear part only for the ReActNets on CIFAR-10.
# Whether the deck's pattern holds needs the `paper` profile.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"          # ci | cpu | paper
appendix_epochs = None   # training epochs per cell (None: the profile's)
appendix_width = None    # ResNet-18 base width of the cells (None: the profile's)
results_dir = None       # where run records go (None: results/)
progress = None          # tqdm bars (False in batch runs)
force = None             # True: train again even where a finished run of the same identity exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import time
import pandas as pd
from mvlib.models import relative_width, variant_name
from mvlib.study import appendix
settings = {}
for dataset in cfg["appendix_datasets"]:
    s = appendix.cell_settings(cfg, dataset)
    settings[dataset] = {"train file": s["train_file"], "train per class": s["train_per_class"] or "all",
                         "validation per class": s["val_per_class"], "test per class": s["test_per_class"] or "all",
                         "batch": s["batch_size"], "epochs": s["epochs"], "lr": cfg["lr"],
                         "optimizer": cfg["optimizer"], "threads": s["threads"] or "default"}
widths = {m: relative_width(m, cfg["appendix_width"]) for m in cfg["appendix_models"]}
print(f"profile {cfg['profile']}; widths {widths}; adaptive gradient clipping {cfg['agc_clip']} on BN-Free cells only")
pd.DataFrame(settings)

# %% [markdown]
# ## Train the grid (or reuse finished runs of this exact configuration)
#
# One run record per cell: step `06_bn_free`, variant `bn` / `nobn` / `bnfree`, dataset `cifar10` /
# `cifar100`. A dataset whose files are absent is skipped with the reason printed (CIFAR-10 is required).

# %%
t_grid = time.time()
ran = []
for dataset in cfg["appendix_datasets"]:
    why = appendix.data_missing(cfg, dataset)
    if why is not None and dataset != "cifar10":
        print(f"skipping {dataset}: {why}")
        continue
    for model_name in cfg["appendix_models"]:
        for norm in cfg["appendix_norms"]:
            t0 = time.time()
            _, run = appendix.run_cell(cfg, model_name, norm, dataset, log=lambda line: None)
            m = run.metrics
            ran.append(run.run_id)
            print(f"{dataset:9s} {model_name:12s} {variant_name(norm):7s} top1 {m['top1']:6.2f}%  "
                  f"({m['seconds']:.0f} s training, {time.time() - t0:.0f} s here)  {run.run_id}")
print(f"grid: {len(ran)} cells in {time.time() - t_grid:.0f} s")

# %% [markdown]
# ## The table, laid out like the deck's appendix
#
# Top-1 (%) per network, dataset and norm: the deck's number, ours and the difference (ours − deck).
# Built by `mvlib.appendix.appendix_table` from the run records (newest run per cell of this profile).

# %%
results = appendix.appendix_results(cfg["results_dir"], cfg["profile"])
table = appendix.appendix_table(results=results)
table.round(2)

# %%
# every cell with its standard error and what it was trained on
results[["model", "dataset", "variant", "deck_top1", "top1", "se", "delta", "width", "train_images",
         "test_images", "epochs", "seconds", "run_id"]].round(2)

# %%
fig = appendix.plot_appendix(results, title=f"BN / w/o BN / BN-Free, profile {cfg['profile']} "
                             "(bars: ours ± s.e.; dashes: the deck)")

# %% [markdown]
# ## The pattern, ours beside the deck's
#
# Loss without BN (BN − w/o BN) and the gain of BN-Free over w/o BN, per network; a difference smaller
# than twice its standard error is called *within noise*.

# %%
summary = appendix.pattern_summary(results)
summary.round(2)

# %%
print(appendix.pattern_statement(results))
