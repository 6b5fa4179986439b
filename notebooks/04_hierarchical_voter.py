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
# tie rule (`pos` +1, `neg` −1, `first` the first block's vote), nested trees as `hmv-g4x2-…` (STUDY.md §2). The deck
# gives no accuracy for it; this notebook measures it.
#
# **Where the deck's case falls.** A 3×3 layer with 64 input channels has fan-in 576, so G = 4 is
# **M576 ≈ M4(M144 × 4)**, the nearest case to M512 ≈ M4(M128 × 4) in these networks (stage 1 at width 64, stage 3
# at the `cpu` profile's width 16). The 512-input voter itself is checked exactly in `tests/test_voters.py`.
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, width-16 baselines; disagreement and tie rates on real
# activations of a few test batches; the G × tie sweep on a class-balanced test subset (`hmv_sweep_test_per_class`),
# retrained rows on the full 10,000-image test set; retraining only for `hmv_retrain_groups` ×
# `hmv_retrain_ties` (G = 4, tie +1 in `cpu`; the full grid in `paper`).
#
# **Result.** Tables and plots below, from the run records; with G = 2 about half of all random inputs tie at the
# outer level, so small G mostly measures the tie rule: tie rates are shown beside accuracies.

# %%
import mvlib
from mvlib.config import notebook_config
_names_before_parameters = set(globals())
import matplotlib.pyplot as plt
import pandas as pd
from mvlib import records
from mvlib.experiment import find_baseline
from mvlib.voter_study import disagreement_table, retrain, runs_table, substitute, voter_spec

# %% tags=["parameters"]
profile = "cpu"  # ci | cpu | paper; any configuration key may be set here too (see mvlib/config.py)

# %%
cfg = notebook_config(globals(), _names_before_parameters)
STEP = "04_hierarchical_voter"
groups = [g for g in cfg["hmv_groups"] if cfg["width"] % g == 0]  # G must divide every layer's input channels
nested = [list(f) for f in cfg["hmv_nested"] if cfg["width"] % __import__("math").prod(f) == 0]
norm = cfg["mv_surrogate_norm"]
tables_dir = records.resolve_results_dir(cfg["results_dir"]) / "tables"
{"groups": groups, "nested": nested, **{k: cfg[k] for k in ("profile", "mv_models", "width", "hmv_ties",
 "hmv_sweep_test_per_class", "hmv_recal", "hmv_disagreement_batches", "hmv_retrain_groups", "hmv_retrain_ties")}}

# %% [markdown]
# ## Disagreement with the exact voter and outer tie rate, per layer, on real activations
#
# Measured on each baseline's own activations (the popcount network of notebook 01), on the sweep's test subset.

# %%
baselines = {name: find_baseline(cfg, name) for name in cfg["mv_models"]}
dis = pd.concat([disagreement_table(cfg, base, groups + nested, cfg["hmv_ties"], cfg["hmv_disagreement_batches"],
                                    cfg["hmv_sweep_test_per_class"])
                 for base in baselines.values()], ignore_index=True)
records.write_atomic(tables_dir / f"{STEP}_disagreement_{cfg['profile']}.csv", dis.to_csv(index=False))
summary = (dis.groupby(["model", "fanins", "tie"], sort=False)[["disagree_rate", "outer_tie_rate", "exact_tie_rate"]]
           .mean().mul(100).round(2))
summary.columns = ["disagree % (mean over layers)", "outer tie %", "exact-voter tie %"]
summary

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.6), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for f, df in dis[(dis.model == name) & (dis.tie == "pos")].groupby("fanins", sort=False):
        line, = ax.plot(range(len(df)), 100 * df.disagree_rate, marker="o", label=f"G={f} disagree")
        ax.plot(range(len(df)), 100 * df.outer_tie_rate, ls=":", color=line.get_color(), label=f"G={f} outer tie")
    ax.set_title(f"{name} (tie +1)"); ax.set_xlabel("binary conv (forward order)"); ax.set_ylabel("% of outputs")
    ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=7, ncol=2)
fig.tight_layout()

# %% [markdown]
# **The deck's case, M4(M144 × 4):** G = 4 on the layers with 64 input channels.

# %%
deck_case = dis[(dis.in_channels == 64) & (dis.fanins == "4")]
deck_case[["model", "layer", "fanin", "block_fanin", "tie", "disagree_rate", "outer_tie_rate"]].round(4)

# %% [markdown]
# ## Accuracy with the hierarchical voter substituted (no retraining), against G

# %%
sweep_tpc = cfg["hmv_sweep_test_per_class"]
runs = {}
for name, base in baselines.items():
    for recal in [False] + ([True] if cfg["hmv_recal"] else []):
        runs[(name, "mv", "-", recal)] = substitute(cfg, STEP, base, voter_spec(norm=norm), recal=recal,
                                                    test_per_class=sweep_tpc)
        for g in groups + nested:
            for tie in cfg["hmv_ties"]:
                runs[(name, "x".join(map(str, g)) if isinstance(g, list) else str(g), tie, recal)] = substitute(
                    cfg, STEP, base, voter_spec(g, tie, norm=norm), recal=recal, test_per_class=sweep_tpc)
acc = pd.DataFrame([{"model": k[0], "G": k[1], "tie": k[2], "recal": k[3], "top1": r.metrics["top1"],
                     "top5": r.metrics["top5"], "test_images": r.metrics["test_images"], "variant": r.metrics["variant"]}
                    for k, r in runs.items()])
acc.pivot_table(index=["model", "G"], columns=["recal", "tie"], values="top1", sort=False).round(2)

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.8), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for recal, ls in ((False, "-"), (True, "--")):
        sub = acc[(acc.model == name) & (acc.recal == recal)]
        if sub.empty:
            continue
        exact = sub[sub.G == "mv"].top1.iloc[0]
        for tie in cfg["hmv_ties"]:
            pts = sub[(sub.tie == tie) & sub.G.isin([str(g) for g in groups])]
            ax.plot(pts.G.astype(int), pts.top1, ls=ls, marker="o", label=f"tie {tie}{' +recal' if recal else ''}")
        ax.axhline(exact, ls=ls, color="k", lw=0.8, label=f"exact voter{' +recal' if recal else ''}")
    ax.axhline(baselines[name].metrics["top1"], color="g", lw=0.8, label="baseline (full test set)")
    ax.set_xscale("log", base=2); ax.set_xlabel("outer fan-in G"); ax.set_ylabel("top-1 (%)"); ax.set_title(name)
    ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Retraining through the hierarchical voter (full test set), beside the exact voter's

# %%
main = {}
for name, base in baselines.items():
    for g in cfg["hmv_retrain_groups"]:
        for tie in cfg["hmv_retrain_ties"]:
            if cfg["width"] % g == 0:
                _, run = retrain(cfg, STEP, base, voter_spec(g, tie, norm=norm))
                main[(name, run.metrics["variant"])] = run
    # the exact voter retrained in notebook 03 (reused when that run exists)
    _, main[(name, "retrain-approx")] = retrain(cfg, "03_mv_retraining", base, voter_spec(norm=norm))
    main[(name, "baseline")] = base
table = runs_table({f"{m} {v}": r for (m, v), r in main.items() if r is not None})
table["below baseline"] = [baselines[m].metrics["top1"] - t for m, t in zip(table.model, table.top1)]
table[["model", "variant", "top1", "top5", "below baseline", "test_images", "run"]].round(2)
