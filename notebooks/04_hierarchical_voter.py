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
# # 04 · Hierarchical majority voter
#
# **Reproduces** the deck's third plan, a hierarchical voter such as **M512 ≈ M4(M128, M128, M128, M128)**: the input
# channels split into G contiguous blocks, an inner voter per block (tie +1), an outer voter over the G votes with a
# tie rule (`pos` +1, `neg` −1, `first` the first block's vote), nested trees as `hmv-g4x2-…` (docs/SEMANTICS.md). The deck
# gives no accuracy for it; this notebook measures it.
#
# **Where the deck's case falls.** A 3×3 layer with 64 input channels has fan-in 576, so G = 4 is
# **M576 ≈ M4(M144 × 4)**, the nearest case to M512 ≈ M4(M128 × 4) in these networks (stage 1 at width 64, stage 3
# at the `cpu` profile's width 16). The 512-input voter itself is checked exactly in `tests/test_voters.py`.
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, the width-16 baselines of the `sweep_seeds` (trimmed: one
# seed in `cpu`); disagreement and tie rates on real activations of a few validation batches; the G × tie sweep on
# a class-balanced validation subset (`hmv_sweep_val_per_class`); retrained rows on the validation split and the
# full 10,000-image test set, only for `hmv_retrain_groups` × `hmv_retrain_ties` (G = 4, tie +1 in `cpu`; the full
# grid in `paper`).
#
# **Result.** Tables and plots below, from the run records; with G = 2 about half of all random inputs tie at the
# outer level, so small G mostly measures the tie rule: tie rates are shown beside accuracies.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"                # ci | cpu | paper
sweep_seeds = None             # baselines (seeds of notebook 01) of the sweeps and retraining (None: the profile's)
hmv_groups = None              # outer fan-ins G, e.g. [2, 4, 8, 16] (None: the profile's)
hmv_ties = None                # tie rules, e.g. ["pos", "neg", "first"] (None: the profile's)
hmv_sweep_val_per_class = None # validation images per class of the sweep (None: the profile's)
results_dir = None             # where run records go (None: results/)
progress = None                # tqdm bars (False in batch runs)
force = None                   # True: evaluate / retrain again even where a finished record exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import math
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from mvlib.files import write_atomic
from mvlib.study.experiment import baselines_by_seed
from mvlib.study.records import resolve_results_dir
from mvlib.study.report import show
from mvlib.study.voter_study import (disagreement_table, retrain, retrained_voters, substitute, sweep_voters,
                                     voter_spec)
STEP = "04_hierarchical_voter"
groups = [g for g in cfg["hmv_groups"] if cfg["width"] % g == 0]  # G must divide every layer's input channels
nested = [list(f) for f in cfg["hmv_nested"] if cfg["width"] % math.prod(f) == 0]
sweep = sweep_voters(cfg)  # the same G (and trees) with every tie rule, as VoterSpecs
norm = cfg["mv_surrogate_norm"]
sweep_vpc = cfg["hmv_sweep_val_per_class"]
tables_dir = resolve_results_dir(cfg["results_dir"]) / "tables"
show(pd.Series({"groups": str(groups), "nested": str(nested), **{k: str(cfg[k]) for k in ("profile", "mv_models",
    "sweep_seeds", "width", "hmv_ties", "hmv_sweep_val_per_class", "hmv_recal", "hmv_disagreement_batches",
    "hmv_retrain_groups", "hmv_retrain_ties")}}, name="value").to_frame())

# %% [markdown]
# ## Disagreement with the exact voter and outer tie rate, per layer, on real activations
#
# Measured on each baseline's own activations (the popcount network of notebook 01), on the sweep's validation
# subset.

# %%
baselines = {name: baselines_by_seed(cfg, name, cfg["sweep_seeds"]) for name in cfg["mv_models"]}
dis = pd.concat([disagreement_table(cfg, base, groups + nested, cfg["hmv_ties"], cfg["hmv_disagreement_batches"],
                                    sweep_vpc).assign(seed=seed)
                 for by_seed in baselines.values() for seed, base in by_seed.items()], ignore_index=True)
write_atomic(tables_dir / f"{STEP}_disagreement_{cfg['profile']}.csv", dis.to_csv(index=False))
summary = (dis.groupby(["model", "fanins", "tie"], sort=False)[["disagree_rate", "outer_tie_rate", "exact_tie_rate"]]
           .mean().mul(100).round(2))
summary.columns = ["disagree % (mean over layers)", "outer tie %", "exact-voter tie %"]
show(summary)

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.6), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for f, df in dis[(dis.model == name) & (dis.tie == "pos")].groupby("fanins", sort=False):
        df = df.groupby("layer", sort=False)[["disagree_rate", "outer_tie_rate"]].mean()
        line, = ax.plot(range(len(df)), 100 * df.disagree_rate, marker="o", label=f"G={f} disagree")
        ax.plot(range(len(df)), 100 * df.outer_tie_rate, ls=":", color=line.get_color(), label=f"G={f} outer tie")
    ax.set_title(f"{name} (tie +1)"); ax.set_xlabel("binary conv (forward order)"); ax.set_ylabel("% of outputs")
    ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# **The deck's case, M4(M144 × 4):** G = 4 on the layers with 64 input channels.

# %%
deck_case = dis[(dis.in_channels == 64) & (dis.fanins == "4")]
show(deck_case[["model", "seed", "layer", "fanin", "block_fanin", "tie", "disagree_rate", "outer_tie_rate"]], digits=4)

# %% [markdown]
# ## Accuracy with the hierarchical voter substituted (no retraining), against G — validation subset

# %%
runs = {}
for name, by_seed in baselines.items():
    for seed, base in by_seed.items():
        for recal in [False] + ([True] if cfg["hmv_recal"] else []):
            runs[(name, seed, "mv", "-", recal)] = substitute(cfg, STEP, base, voter_spec(norm=norm), recal=recal,
                                                              sweep_val_per_class=sweep_vpc)
            for voter in sweep:
                runs[(name, seed, voter.fanin_text(), voter.tie, recal)] = substitute(
                    cfg, STEP, base, voter, recal=recal, sweep_val_per_class=sweep_vpc)
acc = pd.DataFrame([{"model": k[0], "seed": k[1], "G": k[2], "tie": k[3], "recal": k[4],
                     "val_top1": r.metrics["val_top1"], "val_images": r.metrics["val_images"],
                     "variant": r.metrics["variant"]} for k, r in runs.items()])
show(acc.pivot_table(index=["model", "G"], columns=["recal", "tie"], values="val_top1", sort=False))

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.8), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for recal, ls in ((False, "-"), (True, "--")):
        sub = acc[(acc.model == name) & (acc.recal == recal)].groupby(["G", "tie"], as_index=False).val_top1.mean()
        if sub.empty:
            continue
        exact = sub[sub.G == "mv"].val_top1.iloc[0]
        for tie in cfg["hmv_ties"]:
            pts = sub[(sub.tie == tie) & sub.G.isin([str(g) for g in groups])].assign(
                Gi=lambda d: d.G.astype(int)).sort_values("Gi")
            ax.plot(pts.Gi, pts.val_top1, ls=ls, marker="o", label=f"tie {tie}{' +recal' if recal else ''}")
        ax.axhline(exact, ls=ls, color="k", lw=0.8, label=f"exact voter{' +recal' if recal else ''}")
    base_val = sum(b.metrics["val_top1"] for b in baselines[name].values()) / len(baselines[name])
    ax.axhline(base_val, color="g", lw=0.8, label="baseline (whole validation split)")
    ax.set_xscale("log", base=2); ax.set_xlabel("outer fan-in G"); ax.set_ylabel("validation top-1 (%)")
    ax.set_title(name); ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Retraining through the hierarchical voter (validation and full test set), beside the exact voter's

# %%
main = {}
for name, by_seed in baselines.items():
    for seed, base in by_seed.items():
        for voter in retrained_voters(cfg):
            _, run = retrain(cfg, STEP, base, voter)
            main[(name, seed, run.metrics["variant"])] = run
        # the exact voter retrained in notebook 03 (reused when that run exists)
        main[(name, seed, "retrain-approx")] = retrain(cfg, "03_mv_retraining", base, voter_spec(norm=norm))[1]
        main[(name, seed, "baseline")] = base
table = pd.DataFrame([{"model": m, "seed": s, "variant": v, "val_top1": r.metrics["val_top1"],
                       "top1": r.metrics["top1"], "top5": r.metrics["top5"],
                       "below baseline": main[(m, s, "baseline")].metrics["top1"] - r.metrics["top1"],
                       } for (m, s, v), r in main.items()])
show(table)
