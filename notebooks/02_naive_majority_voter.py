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
# # 02 · Naive substitution of the majority voter
#
# **Reproduces** the deck's rows *ReActNet-18 with Majority Voter* (**84.93 / 99.25** top-1 / top-5 %) and
# *Bi-RealNet-18 with Majority Voter* (**30.07 / 79.69**): a trained network whose binary 3×3 convolutions
# output `sign(s)` (ties +1) instead of `α·s`, nothing else changed, no retraining (STUDY.md §2).
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, the width-16 baselines of notebook 01, every main row on the
# full 10,000-image CIFAR-10 test set; the one-layer-at-a-time sensitivity sweep on a class-balanced test subset
# (`mv_sensitivity_test_per_class`). Profile `paper`: the width-64 baselines, on a GPU.
#
# **Result.** The deck does not say which scale the voter's ±1 output carries into the following BatchNorm, so
# each is a row: `naive` (±1), `naive-alpha` (the layer's weight scale α), `naive-matched` (per channel, the float
# convolution's mean |α·s| on training images), and `naive+recal` (±1, BN statistics re-estimated under the voter,
# no gradient step). The table and the sentences under it are computed from the run records this notebook writes.

# %%
import mvlib
from mvlib.config import notebook_config
_names_before_parameters = set(globals())
import matplotlib.pyplot as plt
import pandas as pd
from mvlib import records
from mvlib.deck import binomial_se, deck_numbers
from mvlib.experiment import find_baseline
from mvlib.voter_study import layer_sensitivity, runs_table, substitute, voter_spec

# %% tags=["parameters"]
profile = "cpu"  # ci | cpu | paper; any configuration key may be set here too (see mvlib/config.py)

# %%
cfg = notebook_config(globals(), _names_before_parameters)
STEP = "02_naive_majority_voter"
{k: cfg[k] for k in ("profile", "mv_models", "width", "mv_output_scales", "mv_surrogate_norm", "mv_calib_batches",
                     "mv_recal_batches", "mv_sensitivity_scales", "mv_sensitivity_test_per_class")}

# %% [markdown]
# ## Baselines from notebook 01 and the voter substituted in every binary 3×3 convolution

# %%
baselines = {name: find_baseline(cfg, name) for name in cfg["mv_models"]}
runs = {}
for name, base in baselines.items():
    runs[(name, "baseline")] = base
    for scale in cfg["mv_output_scales"]:
        spec = voter_spec(norm=cfg["mv_surrogate_norm"], output_scale=scale)
        run = substitute(cfg, STEP, base, spec)
        runs[(name, run.metrics["variant"])] = run
    run = substitute(cfg, STEP, base, voter_spec(norm=cfg["mv_surrogate_norm"]), recal=True)
    runs[(name, run.metrics["variant"])] = run

# %%
deck = deck_numbers("main").set_index(["model", "variant"])
table = runs_table({f"{m} {v}": r for (m, v), r in runs.items()})
table["± s.e."] = [binomial_se(t, n or 1) for t, n in zip(table.top1, table.test_images)]
table["deck top1"] = [deck.top1.get((m, v)) for m, v in zip(table.model, table.variant)]
table["deck top5"] = [deck.top5.get((m, v)) for m, v in zip(table.model, table.variant)]
table[["model", "variant", "top1", "± s.e.", "top5", "deck top1", "deck top5", "test_images", "run"]].round(2)

# %%
lines = []
for name in baselines:
    b = runs[(name, "baseline")].metrics["top1"]
    naive = {v: r.metrics["top1"] for (m, v), r in runs.items() if m == name and v != "baseline"}
    d = deck.loc[(name, "baseline"), "top1"] - deck.loc[(name, "naive"), "top1"]
    best = max(naive, key=naive.get)
    lines.append(f"{name}: deck loses {d:.1f} points by substitution; here the baseline's {b:.2f}% becomes "
                 + ", ".join(f"{naive[v]:.2f}% ({v})" for v in naive)
                 + f"; the best output handling is {best} ({b - naive[best]:.1f} points below the baseline).")
print("\n".join(lines))

# %% [markdown]
# ## Per-layer sensitivity: the voter in one layer at a time
#
# Each point replaces one binary convolution (forward order, 0 = first block) and evaluates on the sweep subset;
# the dashed lines are the same subset with no voter and with the voter everywhere.

# %%
sens = pd.concat([layer_sensitivity(cfg, STEP, base, voter_spec(norm=cfg["mv_surrogate_norm"], output_scale=scale),
                                    cfg["mv_sensitivity_test_per_class"])
                  for name, base in baselines.items() for scale in cfg["mv_sensitivity_scales"]], ignore_index=True)
out = records.resolve_results_dir(cfg["results_dir"]) / "tables" / f"{STEP}_sensitivity_{cfg['profile']}.csv"
records.write_atomic(out, sens.to_csv(index=False))
sens.pivot_table(index="layer", columns=["model", "output_scale"], values="top1", sort=False).round(1)

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.8), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for scale, df in sens[sens.model == name].groupby("output_scale"):
        layer_rows = df[(df["index"] >= 0) & (df.layer != "all")]
        line, = ax.plot(layer_rows["index"], layer_rows.top1, marker="o", label=f"one layer ({scale})")
        ax.axhline(df[df.layer == "all"].top1.iloc[0], ls=":", color=line.get_color(), label=f"all layers ({scale})")
    ax.axhline(sens[(sens.model == name) & (sens.layer == "none")].top1.iloc[0], ls="--", color="k", label="no voter")
    ax.set_title(name); ax.set_xlabel("binary conv (forward order)"); ax.set_ylabel("top-1 (%)"); ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=8)
fig.tight_layout()
