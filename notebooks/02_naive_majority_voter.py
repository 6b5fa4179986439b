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
# output `sign(s)` (ties +1) instead of `α·s`, nothing else changed, no retraining (docs/SEMANTICS.md).
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, the width-16 baselines of notebook 01 (one per seed), every
# main row on the validation split and the full 10,000-image CIFAR-10 test set; the one-layer-at-a-time sensitivity
# sweep on a class-balanced validation subset (`mv_sensitivity_val_per_class`) of the `sweep_seeds` baselines.
# Profile `paper`: the width-64 baselines, on a GPU.
#
# **Result.** The deck does not say which scale the voter's ±1 output carries into the following BatchNorm, so
# each is a row: `naive` (±1), `naive-alpha` (the layer's weight scale α), `naive-matched` (per channel, the float
# convolution's mean |α·s| on training images), and `naive+recal` (±1, BN statistics re-estimated under the voter,
# no gradient step). Rows are means over the baselines' seeds; the change against the baseline is paired per seed.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"         # ci | cpu | paper
seeds = None            # baselines (seeds of notebook 01) of the main rows (None: the profile's)
sweep_seeds = None      # baselines of the sensitivity sweep (None: the profile's)
mv_output_scales = None # e.g. ["none", "alpha", "matched"] (None: the profile's)
results_dir = None      # where run records go (None: results/)
progress = None         # tqdm bars (False in batch runs)
force = None            # True: evaluate again even where a finished record exists

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.files import write_atomic
from mvlib.study.deck_pattern import main_table
from mvlib.study.experiment import baselines_by_seed
from mvlib.study.records import all_metrics, resolve_results_dir
from mvlib.study.report import show
from mvlib.study.voter_study import layer_sensitivity, substitute, voter_spec
STEP = "02_naive_majority_voter"
show(pd.Series({k: str(cfg[k]) for k in ("profile", "mv_models", "seeds", "sweep_seeds", "width", "mv_output_scales",
    "mv_surrogate_norm", "mv_calib_batches", "mv_recal_batches", "mv_sensitivity_scales",
    "mv_sensitivity_val_per_class")}, name="value").to_frame())

# %% [markdown]
# ## The voter substituted in every binary 3×3 convolution of each baseline (every seed)

# %%
baselines = {name: baselines_by_seed(cfg, name) for name in cfg["mv_models"]}
norm = cfg["mv_surrogate_norm"]
for name, by_seed in baselines.items():
    for seed, base in by_seed.items():
        for scale in cfg["mv_output_scales"]:
            substitute(cfg, STEP, base, voter_spec(norm=norm, output_scale=scale))
        substitute(cfg, STEP, base, voter_spec(norm=norm), recal=True)

# %%
table = main_table(all_metrics(cfg["results_dir"]), cfg["profile"], models=cfg["mv_models"])
table = table[~table.variant.str.startswith("retrain")]
show(table)

# %%
lines = []
for name, g in table.groupby("model", sort=False):
    g = g.set_index("variant")
    rows = [v for v in g.index if v != "baseline" and pd.notna(g.loc[v, "ours top1"])]
    best = max(rows, key=lambda v: g.loc[v, "ours top1"])
    lines.append(f"- **{name}**: the baseline's {g.loc['baseline', 'ours top1']:.2f} % becomes "
                 + ", ".join(f"{g.loc[v, 'ours top1']:.2f} % ({v}, {g.loc[v, 'vs baseline']:+.1f} ± "
                             f"{g.loc[v, 'vs baseline ± 95 %']:.1f})" for v in rows)
                 + f"; the deck's row loses {g.loc['baseline', 'deck top1'] - g.loc['naive', 'deck top1']:.1f} points. "
                 f"The least damaging output handling is **{best}**.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Per-layer sensitivity: the voter in one layer at a time (validation subset)
#
# Each point replaces one binary convolution (forward order, 0 = first block) and evaluates on the validation
# subset; the dashed lines are the same subset with no voter and with the voter everywhere.

# %%
sens = pd.concat([layer_sensitivity(cfg, baselines[name][seed], voter_spec(norm=norm, output_scale=scale),
                                    cfg["mv_sensitivity_val_per_class"])
                  for name in baselines for seed in cfg["sweep_seeds"] for scale in cfg["mv_sensitivity_scales"]],
                 ignore_index=True)
write_atomic(resolve_results_dir(cfg["results_dir"]) / "tables" / f"{STEP}_sensitivity_{cfg['profile']}.csv",
             sens.to_csv(index=False))
show(sens.pivot_table(index="layer", columns=["model", "output_scale"], values="val_top1", sort=False), digits=1)

# %%
fig, axes = plt.subplots(1, len(baselines), figsize=(6 * len(baselines), 3.8), squeeze=False)
for ax, name in zip(axes[0], baselines):
    for scale, df in sens[sens.model == name].groupby("output_scale"):
        df = df.groupby(["index", "layer"], as_index=False, sort=False).val_top1.mean()
        layer_rows = df[(df["index"] >= 0) & (df.layer != "all")]
        line, = ax.plot(layer_rows["index"], layer_rows.val_top1, marker="o", label=f"one layer ({scale})")
        ax.axhline(df[df.layer == "all"].val_top1.iloc[0], ls=":", color=line.get_color(),
                   label=f"all layers ({scale})")
    ax.axhline(sens[(sens.model == name) & (sens.layer == "none")].val_top1.mean(), ls="--", color="k",
               label="no voter")
    ax.set_title(name); ax.set_xlabel("binary conv (forward order)"); ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
axes[0][-1].legend(fontsize=8)
fig.tight_layout()
plt.show()
