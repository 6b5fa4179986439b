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
# # 09 · Which voter buys the most accuracy per gate? The accuracy–logic Pareto front
#
# **Beyond the deck.** Notebook 07 found that in synthesized logic an exact majority voter is *not* lighter than
# XNOR + popcount + compare: only approximation saves. So the question is which approximate voter gives the best
# accuracy for a given logic budget, and whether it beats the cheap alternative every reviewer asks about: a
# **narrower popcount network**. Each point below is a network design, retrained and measured over seeds, and costed
# from synthesized circuits (the same Yosys flow and cache as notebook 07):
#
# * voters at the base width, each a parameter of the same layers: the exact voter (`MV`), hierarchical voters
#   `HMV G=…` with a tie rule, and **trees** of nested fan-ins down to one input channel's 3×3 taps per leaf
#   (`tree 4x4`, `tree 2x2x2x2` at width 16). Degenerate cases are named and drawn hollow: with G = 2 and tie
#   `first` a level reads only its first child (a voter over half the inputs); G = 2 with `pos` is the OR of two
#   half-voters, with `neg` their AND.
# * the **control**: the popcount network and the exact voter at reduced widths, trained by notebook 01's recipe.
#
# **Hardware and scale.** Profile `cpu`: a 2-core CPU, ReActNet-18 and Bi-RealNet-18 at width 16, two seeds. Every
# voter point is retrained by one *shared short recipe* from notebook 01's baselines (`pareto_retrain_*`: one epoch,
# 1,000 images), so the points compare with each other, not with notebook 03's longer retraining; one tie rule per
# voter is retrained, chosen on the validation split by the lowest disagreement with the exact voter (the paper
# profile retrains every tie rule). Every point is evaluated on the same 1,000 validation and 2,000 test images
# (class-balanced), through the bit-exact inference engine. Profile `paper`: every G and tie, trees down to one
# channel per leaf at width 64, three control widths, three seeds, on a GPU.
#
# **Result.** The plot, the table and the verdict at the end are generated from the run records
# (`results/runs/09_voter_pareto`) and the synthesis cache (`results/hw/cache`).

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"                 # ci | cpu | paper
pareto_seeds = None             # training seeds of every point (None: the profile's)
pareto_groups = None            # single-level voters G, e.g. [2, 4, 8, 16] (None: the profile's)
pareto_trees = None             # voter trees, e.g. [[4, 4], [2, 2, 2, 2]] (None: the profile's)
pareto_width_fractions = None   # control widths as fractions of the width, e.g. [0.75] (None: the profile's)
results_dir = None              # where run records go (None: results/)
progress = None                 # tqdm bars (False in batch runs)
force = None                    # True: train and evaluate again even where finished records exist

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.files import write_atomic
from mvlib.hw import flow
from mvlib.study import pareto
from mvlib.study.pareto_runs import STEP, disagreement, point_baselines, point_plan, run_points
from mvlib.study.plots import plot_pareto
from mvlib.study.records import resolve_results_dir
from mvlib.study.report import show

TABLES = resolve_results_dir(cfg["results_dir"]) / "tables"
width = cfg["width"]
# every choice is checked before any work: a bad width fraction, fan-in or seed is an error here
plan = point_plan(cfg)
show(plan.summary(cfg).to_frame())
timing = []

# %% [markdown]
# ## Disagreement with the exact voter on real activations, and the tie rule of each voter
#
# Measured on each baseline's own activations (the popcount networks of notebook 01) on validation images: the
# fraction of a layer's outputs where the approximate voter and the exact one disagree, averaged over the 16 layers.

# %%
t0 = time.time()
baselines = point_baselines(cfg)
dis, chosen, ties = disagreement(cfg, plan, baselines)
summary = dis.groupby(["fanins", "tie"], sort=False)[["disagree_rate", "outer_tie_rate"]].mean().mul(100).unstack("tie")
show(summary.round(2))
display(Markdown("Tie rule with the lowest disagreement, per voter: "
                 + ", ".join(f"`{k}` → **{v}**" for k, v in chosen.items())
                 + ("" if cfg["pareto_tie_choice"] == "all" else " (the rules retrained below)") + "."))
timing.append({"part": "disagreement", "seconds": time.time() - t0})

# %% [markdown]
# ## Logic cost per network, from synthesized circuits
#
# Each binary 3×3 convolution's circuit is synthesized at its fan-in (cached); a network's **logic work** is the
# area (NAND2 equivalents) times the outputs per image, summed over its 16 binary convolutions; its **depth** is the
# deepest layer's longest path in cells; its **area** is one circuit per layer, summed (a layer-serial design).

# %%
t0 = time.time()
to_synthesize, designs = pareto.profile_circuits(cfg)
costs = flow.cost_rows(to_synthesize, allow_synth=cfg["hw_allow_synth"], jobs=cfg["hw_jobs"],
                       vectors=cfg["hw_check_vectors"])
net = pareto.network_costs(costs, designs)
base_work = float(net[(net.circuit == "popcount") & (net.width == width)].ge_evals_per_image.iloc[0])
show(net.assign(**{"M GE-evaluations / image": net.ge_evals_per_image / 1e6,
                   "vs popcount": net.ge_evals_per_image / base_work - 1}).drop(columns="ge_evals_per_image"), digits=3)
timing.append({"part": "synthesis", "seconds": time.time() - t0})

# %% [markdown]
# ## The points: retrained voters, and the control networks

# %%
t0 = time.time()
runs = run_points(cfg, plan, baselines, ties)
timing.append({"part": "training and evaluation", "seconds": time.time() - t0})

# %% [markdown]
# ## The front

# %%
points = pareto.points_table(runs, net)
rates = dis.groupby(["fanins", "tie"])["disagree_rate"].mean().mul(100)  # % of outputs, over layers and seeds
points["disagree % (vs exact)"] = [rates.get((f, t)) if k in ("hmv", "tree") else None
                                   for f, t, k in zip(points.fanins, points.tie, points.kind)]
on_work, on_depth = pareto.front(points), pareto.front(points, "max_depth")
points["front (work)"], points["front (depth)"] = on_work, on_depth
fig = plot_pareto(points, on_work, on_depth, title=f"accuracy against logic ({cfg['profile']} profile)")
plt.show()
show(points.assign(**{"M GE-evals / image": points.ge_evals_per_image / 1e6})
     .drop(columns=["ge_evals_per_image", "circuit"]), digits=2)
vs = pareto.against_popcount(runs, points)
show(vs, digits=3)
for name, table in (("runs", runs), ("costs", net), ("points", points), ("disagreement", dis), ("vs_popcount", vs),
                    ("timing", pd.DataFrame(timing))):
    write_atomic(TABLES / f"{STEP}_{name}_{cfg['profile']}.csv", table.to_csv(index=False))

# %% [markdown]
# ## Verdict

# %%
text = pareto.verdict(runs, points, width)
display(Markdown("\n\n".join(f"**{line}**" if i == 0 else line for i, line in enumerate(text.splitlines()))))
show(pd.DataFrame(timing), digits=1)
