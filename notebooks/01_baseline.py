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
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, width 16, 20,000 training images, 3 epochs,
# evaluated on the full 10,000-image test set (about 5 minutes per model). Profile `paper`: width 64,
# all 50,000 images, 256 epochs with two-step training and distillation, on a GPU.
#
# **Result.** The table below is built from the run records this notebook writes
# (`results/runs/01_baseline/…`); the `cpu` profile lands far below the deck (small model, few epochs):
# it is the starting point for the voter experiments of notebooks 02–04, not a reproduction of 93.38.

# %%
import mvlib
from mvlib.config import notebook_config
_names_before_parameters = set(globals())
import pandas as pd
from mvlib.experiment import train_baseline
from mvlib.plots import plot_histories
from mvlib.deck import deck_numbers, binomial_se

# %% tags=["parameters"]
profile = "cpu"  # ci | cpu | paper; any configuration key may be set here too (see mvlib/config.py)

# %%
cfg = notebook_config(globals(), _names_before_parameters)
{k: cfg[k] for k in ("profile", "models", "width", "train_per_class", "epochs", "batch_size", "lr", "two_step", "distill")}

# %% [markdown]
# ## Train (or reuse finished runs of this exact configuration)

# %%
runs = {}
for name in cfg["models"]:
    model, run = train_baseline(cfg, name)
    runs[name] = run

# %% [markdown]
# ## Results beside the deck

# %%
deck = deck_numbers("main").query("variant == 'baseline'").set_index("model")
rows = []
for name, run in runs.items():
    m = run.metrics
    rows.append({"model": name, "deck top1": deck.top1.get(name), "ours top1": m["top1"],
                 "± s.e.": binomial_se(m["top1"], m["test_images"]), "deck top5": deck.top5.get(name),
                 "ours top5": m["top5"], "train s": m["seconds"], "run": run.run_id})
table = pd.DataFrame(rows).set_index("model")
table["Δ top1"] = table["ours top1"] - table["deck top1"]
table.round(2)

# %%
fig = plot_histories({n: r.history() for n, r in runs.items()}, title=f"baselines, profile {cfg['profile']}",
                     metrics=("train_loss", "train_top1", "test_top1"))
