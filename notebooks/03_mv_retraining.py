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
# # 03 · Retraining through the majority voter
#
# **Reproduces** the deck's rows *Our ReActNet-18* (**92.09 / 99.61** top-1 / top-5 %) and *Our Bi-RealNet-18*
# (**87.66 / 98.72**): each baseline retrained with the voter in every binary 3×3 convolution, forward exactly the
# voter, backward through its sign by the ApproxSign surrogate on u = s / c (`retrain-approx`, the deck's STE +
# ApproxSign). The clipped STE (`retrain-ste`) is this project's added ablation.
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, the width-16 baselines of notebook 01, a short retraining
# (`mv_retrain_epochs` epochs on `mv_retrain_train_per_class` images per class, budget and learning rate chosen on
# the validation split by `tools/probe_retrain.py`), `retrain-approx` from every seed's baseline, `retrain-ste` from
# the `sweep_seeds` ones; evaluated on the validation split and the full 10,000-image test set. Profile `paper`:
# width 64, all of CIFAR-10, on a GPU.
#
# **Result.** The table and the verdicts below (deck 93.38 → 84.93 → 92.09 and 88.77 → 30.07 → 87.66) are computed
# from the run records: means over seeds, changes paired per seed, each claim "yes", "no" or "not resolved at 95 %".

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"                   # ci | cpu | paper
seeds = None                      # baselines (seeds of notebook 01) retrained with ApproxSign (None: the profile's)
sweep_seeds = None                # baselines retrained with the other estimators (None: the profile's)
mv_retrain_epochs = None          # epochs of retraining (None: the profile's)
mv_retrain_lr = None              # peak learning rate of retraining (None: the profile's)
mv_retrain_train_per_class = None # training images per class of retraining (None: the profile's)
results_dir = None                # where run records go (None: results/)
progress = None                   # tqdm bars (False in batch runs)
force = None                      # True: retrain even where a finished run of the same identity exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.study.deck_pattern import main_table, verdicts
from mvlib.study.experiment import baselines_by_seed
from mvlib.study.plots import plot_histories
from mvlib.study.records import all_metrics
from mvlib.study.report import show
from mvlib.study.voter_study import retrain, substitute, voter_spec
STEP = "03_mv_retraining"
show(pd.Series({k: str(cfg[k]) for k in ("profile", "mv_models", "seeds", "sweep_seeds", "width", "mv_surrogate_norm",
    "mv_retrain_estimators", "mv_retrain_epochs", "mv_retrain_lr", "mv_retrain_train_per_class")}, name="value").to_frame())

# %% [markdown]
# ## Retrain each baseline through the exact voter

# %%
norm = cfg["mv_surrogate_norm"]
runs = {}
for name in cfg["mv_models"]:
    for seed, base in baselines_by_seed(cfg, name).items():
        # the substituted row of notebook 02 (its record is reused; evaluated here if 02 has not run)
        substitute(cfg, "02_naive_majority_voter", base, voter_spec(norm=norm))
        for est in cfg["mv_retrain_estimators"]:
            if est == "approxsign" or seed in cfg["sweep_seeds"]:
                _, run = retrain(cfg, STEP, base, voter_spec(estimator=est, norm=norm))
                runs[(name, run.metrics["variant"], seed)] = run

# %%
rows = all_metrics(cfg["results_dir"])
table = main_table(rows, cfg["profile"], models=cfg["mv_models"])
show(table[table.variant.isin(["baseline", "naive", "retrain-approx", "retrain-ste"])])

# %% [markdown]
# ## Training curves of the retraining runs (validation top-1 after the epoch)

# %%
fig = plot_histories({f"{m} {v} seed {s}": r.history() for (m, v, s), r in runs.items()},
                     title=f"retraining through the voter, profile {cfg['profile']}",
                     metrics=("train_loss", "train_top1", "val_top1"))
plt.show()

# %% [markdown]
# ## The deck's claims, checked at this scale

# %%
claims, sentences = verdicts(rows, cfg["profile"])
show(claims)
display(Markdown("\n".join(f"- {s}" for s in sentences)))
