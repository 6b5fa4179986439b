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
# # 01 · Baselines: ReActNet-18 and Bi-RealNet-18 on CIFAR-10
#
# **Reproduces** the deck's baseline rows (*Results with CIFAR-10*): ReActNet-18 **93.38 / 99.80** and
# Bi-RealNet-18 **88.77 / 98.25** top-1 / top-5 (%).
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, width 16, 20,000 training images (2,000 per class, taken
# outside the 5,000-image validation split), 4 epochs, one run per seed of `seeds` (3), evaluated on the
# validation split after every epoch and on the full 10,000-image test set once at the end. Profile `paper`:
# width 64, all 45,000 training images, 256 epochs with two-step training and distillation, on a GPU.
#
# **Result.** The table below is built from the run records this notebook writes (`results/runs/01_baseline/…`):
# mean over seeds with a 95 % interval. The `cpu` profile lands far below the deck (small model, few epochs): it is
# the starting point for the voter experiments of notebooks 02–04, not a reproduction of 93.38.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"         # ci | cpu | paper
seeds = None            # training seeds, e.g. [0, 1, 2] (None: the profile's)
models = None           # e.g. ["reactnet18", "birealnet18"] (None: the profile's)
width = None            # channels of stage 1 (None: the profile's)
epochs = None           # training epochs (None: the profile's)
train_per_class = None  # training images per class (None: the profile's)
lr = None               # peak learning rate (None: the profile's)
results_dir = None      # where run records go (None: results/)
progress = None         # tqdm bars (False in batch runs)
force = None            # True: train again even where a finished run of the same identity exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.study.experiment import train_baseline, with_seed
from mvlib.study.plots import plot_histories
from mvlib.study.deck_pattern import main_table
from mvlib.study.records import all_metrics
from mvlib.study.report import show
show(pd.Series({k: str(cfg[k]) for k in ("profile", "models", "seeds", "width", "train_per_class", "val_per_class",
                                         "epochs", "batch_size", "lr", "two_step", "distill")}, name="value").to_frame())

# %% [markdown]
# ## Train (or reuse finished runs of this exact configuration, data and code), one run per model and seed

# %%
runs = {(name, seed): train_baseline(with_seed(cfg, seed), name)[1] for name in cfg["models"] for seed in cfg["seeds"]}

# %% [markdown]
# ## Results beside the deck (mean over seeds, 95 % interval)

# %%
table = main_table(all_metrics(cfg["results_dir"]), cfg["profile"], models=cfg["models"])
table = table[(table.variant == "baseline") & table.model.isin(cfg["models"])]
show(table.drop(columns=["vs baseline", "vs baseline ± 95 %"]))

# %%
fig = plot_histories({f"{n} seed {s}": r.history() for (n, s), r in runs.items()},
                     title=f"baselines, profile {cfg['profile']} (validation top-1 per epoch)",
                     metrics=("train_loss", "train_top1", "val_top1"))
plt.show()

# %%
display(Markdown("\n".join(
    f"- **{r.model}**: {r['ours top1']:.2f} % top-1 on the test split "
    + (f"(± {r['± 95 %']:.2f} over {r.seeds} seeds, 95 % interval)" if r.seeds > 1 else "(one seed)")
    + f", {r['deck top1'] - r['ours top1']:.1f} points below the deck's {r['deck top1']:.2f} % at full scale."
    for _, r in table.iterrows())))
