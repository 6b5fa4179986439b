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
# ReActNet-18 92.31 / 90.33 / 92.08, ReActNet-A 82.95 / 77.60 / 83.91 (BN / w/o BN / BN-Free). Its pattern:
# without BN, XNORNet-18 and Bi-RealNet-18 lose ~18 points while ReActNet-18 loses ~2; BN-Free wins most back.
#
# **The recipe**, as "BNN − BN = ?" builds the networks where it matters (read from its official code,
# VITA-Group/BNN_NoBN; file and line in `mvlib/models/norms.py`): without BN the binary weights start at the
# scale the official binary step starts from (U(±1/√N), so the binary branches carry signal from the first
# step; the branch-to-shortcut ratios below show it), BN-Free uses scaled weight standardization and the
# α = 0.2 / β signal-propagation scalings, and adaptive gradient clipping (λ = 0.02, classifier excluded) runs
# in every cell as in the official scripts. Differences that remain, and why: one-step training (the official
# code trains two steps of 256 epochs), no distillation teacher, no augmentation (chosen on validation at this
# scale), Adam lr 2e-3 with cosine decay, weight decay 0, the real 1×1 downsample of this project's ResNet-18s
# (the official code's is binary-weight), CIFAR's 3×3 stem; XNORNet-18 and Bi-RealNet-18 have no public code
# in that repository and are this project's constructions.
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU; ResNet-18s at width 8 and ReActNet-A at width 4 (1/8
# of the paper's widths), 3 epochs; CIFAR-10 on 6,000 training images, CIFAR-100 on all 9,000 of the offline
# 100-per-class train subset outside its 1,000-image validation slice (its full train split is not available
# here: at 90 images per class a network reaches about a tenth of its full-data accuracy, enough to see
# whether a norm collapses, not to compare with the deck's numbers); every cell on the full 10,000-image test
# split. Seeds: three for the CIFAR-10 cells of the deck's two networks (ReActNet-18, Bi-RealNet-18), one
# elsewhere (trimmed: single-seed cells carry only the test set's binomial interval). Each model also gets its
# *shortcut-only* network (every binary branch skipped), the floor a w/o-BN network falls to when its binary
# branches learn nothing. Profile `paper`: the paper's widths, all data, 256 epochs, every cell on every seed.
#
# **Result.** The table, the plot and the statement at the end are computed from the run records
# (`results/runs/06_bn_free/…`); every part of the deck's pattern gets a verdict: yes, no, or not resolved at 95 %.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"          # ci | cpu | paper
appendix_seeds = None    # training seeds of the cells (None: the profile's)
appendix_epochs = None   # training epochs per CIFAR-10 cell (None: the profile's)
appendix_width = None    # ResNet-18 base width of the cells (None: the profile's)
results_dir = None       # where run records go (None: results/)
progress = None          # tqdm bars (False in batch runs)
force = None             # True: train again even where a finished run of the same identity exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import time
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.files import write_atomic
from mvlib.models import relative_width, variant_name
from mvlib.study import appendix, appendix_report
from mvlib.study.plots import plot_histories
from mvlib.study.progress import say
from mvlib.study.records import all_metrics, resolve_results_dir
from mvlib.study.report import show
settings = {}
for dataset in cfg["appendix_datasets"]:
    s = appendix.cell_settings(cfg, dataset)
    settings[dataset] = {"train file": s["train_file"], "train per class": s["train_per_class"] or "all",
                         "validation per class": s["val_per_class"], "test per class": s["test_per_class"] or "all",
                         "batch": s["batch_size"], "epochs": s["epochs"], "augment": s["augment"], "lr": cfg["lr"],
                         "optimizer": cfg["optimizer"], "AGC": f"{cfg['appendix_agc_clip']} on {cfg['appendix_agc_norms']}"}
widths = {m: relative_width(m, cfg["appendix_width"]) for m in cfg["appendix_models"]}
display(Markdown(f"Profile `{cfg['profile']}`; widths {widths}; seeds {cfg['appendix_seeds']} for the CIFAR-10 cells "
                 f"of {cfg['appendix_seed_models']}, the first seed elsewhere."))
show(pd.DataFrame(settings).astype(str), index=True)

# %% [markdown]
# ## Train the grid (or reuse finished runs of this exact configuration, data and code)
#
# One run record per cell and seed: step `06_bn_free`, variant `bn` / `nobn` / `bnfree`, dataset `cifar10` /
# `cifar100`, plus the `shortcut-only` floors. A dataset whose files are absent is skipped with the reason
# printed (CIFAR-10 is required).

# %%
t_grid = time.time()
runs = {}
datasets = []
for dataset in cfg["appendix_datasets"]:
    why = appendix.data_missing(cfg, dataset)
    if why is not None and dataset != "cifar10":
        print(f"skipping {dataset}: {why}")
        continue
    datasets.append(dataset)
for model_name, norm, dataset, seeds in appendix.cells(cfg):
    if dataset not in datasets:
        continue
    for seed in seeds:
        label = f"{dataset} {model_name} {variant_name(norm)} seed {seed}"
        _, runs[(model_name, norm, dataset, seed)] = appendix.run_cell(cfg, model_name, norm, dataset, seed,
                                                                       log=lambda line, l=label: say(f"{l}: {line}"))
floors = {}
if cfg["appendix_floors"]:
    for dataset in datasets:
        for model_name in cfg["appendix_models"]:
            label = f"{dataset} {model_name} shortcut-only"
            _, floors[(model_name, dataset)] = appendix.run_floor(cfg, model_name, dataset,
                                                                   log=lambda line, l=label: say(f"{l}: {line}"))
print(f"grid: {len(runs)} cell runs and {len(floors)} floors in {time.time() - t_grid:.0f} s")

# %% [markdown]
# ## The table, laid out like the deck's appendix
#
# Top-1 (%) per network, dataset and norm: the deck's number, ours (mean over seeds), its 95 % interval (over
# seeds; a single-seed cell: 1.96 binomial standard errors of the test set) and the difference (ours − deck).

# %%
results = appendix_report.appendix_results(all_metrics(cfg["results_dir"]), cfg["profile"])
show(appendix_report.appendix_table(results), index=True, digits=1)

# %%
fig = appendix_report.plot_appendix(results, title=f"BN / w/o BN / BN-Free, profile {cfg['profile']} "
                             "(bars: ours, 95 % interval; dashes: the deck; dotted: shortcut-only floor)")
plt.show()

# %% [markdown]
# ## Training curves (validation top-1 after each epoch, first seed)

# %%
for dataset in datasets:
    hist = {f"{m} {variant_name(n)}": r.history() for (m, n, d, s), r in runs.items()
            if d == dataset and s == cfg["appendix_seeds"][0]}
    fig = plot_histories(hist, title=f"{dataset}, profile {cfg['profile']}", metrics=("train_loss", "val_top1"))
    plt.show()

# %% [markdown]
# ## Do the w/o-BN networks' binary branches carry signal?
#
# Per block, the rms of the binary branch's output over the rms of the shortcut's, at initialization and after
# training (first seed, CIFAR-10, first validation images). Near 0 the block is its shortcut alone.

# %%
ratio_rows = [row for (m, n, d, s), r in runs.items() if n in ("none", "bnfree") and d == "cifar10"
              and s == cfg["appendix_seeds"][0] for row in appendix.branch_ratio_rows(cfg, r)]
ratios = pd.DataFrame(ratio_rows)
write_atomic(resolve_results_dir(cfg["results_dir"]) / "tables" / f"06_bn_free_branch_ratios_{cfg['profile']}.csv",
             ratios.to_csv(index=False))
if not ratios.empty:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    for ax, variant in zip(axes, ("nobn", "bnfree")):
        for (m, when), g in ratios[ratios.variant == variant].groupby(["model", "when"], sort=False):
            ax.plot(range(len(g)), g["ratio"], marker="o", ls="-" if when == "end" else ":", label=f"{m} {when}")
        ax.set_yscale("log"); ax.axhline(1, color="k", lw=0.8); ax.set_title(variant)
        ax.set_xlabel("block (forward order)"); ax.set_ylabel("branch rms / shortcut rms"); ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=2)
    plt.tight_layout(); plt.show()
    show(ratios.groupby(["model", "variant", "when"])["ratio"].describe()[["min", "50%", "max"]], index=True)

# %% [markdown]
# ## The pattern, ours beside the deck's

# %%
show(appendix_report.pattern_summary(results).drop(columns=["per_seed_drop"]), digits=1)
display(Markdown(appendix_report.pattern_statement(results)))
