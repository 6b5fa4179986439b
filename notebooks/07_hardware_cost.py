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
# # 07 — Hardware cost of the voters by real logic synthesis
#
# **What this reproduces.** The deck's premise: a majority voter (MV), which outputs only the sign of the
# XNOR dot product, is much cheaper in hardware than XNOR + popcount + comparison, and a hierarchical
# voter (the deck's M512 ≈ M4(M128 × 4)) cheaper still. The deck gives no number for it. Here every
# circuit is generated as Verilog (`mvlib.hw.verilog`, balanced compressor trees), synthesized with
# Yosys + ABC onto a gate library with Nangate45-derived NAND2-equivalent (GE) areas
# (`mvlib.hw.cost`), simulated bit for bit against `mvlib.voters` (random, threshold and forced-tie
# vectors), and costed per ReActNet-18 layer.
#
# **Result (profiles `cpu` and `paper`, which are identical here; Yosys 0.23).** In synthesized digital logic
# the MV is **not** lighter. At N = 576 it maps to 5,069 GE against 5,070 GE for popcount + compare
# (0.0 % saved); at N = 4608 it is 40,946 against 40,934 GE (−0.03 %). Over all N the difference is
# −0.3 to +0.8 %, the size of the differences the mapper leaves between equivalent circuits (flat vs
# composed hierarchical voter: median 0.3 %, up to 3 % at N = 144). The sign still needs all N XNORs and a
# full counting tree (about N full adders, ~8.8 GE per input); only the final adder and comparator go,
# and the tool removes most of those from popcount + compare by itself. The hierarchical voter saves a little and is
# shallower: G = 4 saves 2.4 % at N = 576 (4,949 GE, depth 22 vs 26), 0.7 % at N = 4608, and 3.1 % for
# the deck's M4(M128 × 4) against M512; G = 16 saves up to 17 %, less as N grows. Over ReActNet-18 at width 64
# (4.83 G GE-evaluations per image for popcount + compare) the MV saves 0.0 %, HMV G = 4 1.1 % and
# G = 16 4.9 %. The deck's premise can only hold for analog or in-memory voters, which this notebook does not model.
#

# %%
import matplotlib.pyplot as plt
import pandas as pd

from mvlib.hw import cost, flow, synth
from mvlib.study.config import notebook_config
from mvlib.study.records import resolve_results_dir
from mvlib.study.report import show as show_table

_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"      # ci | cpu | paper
results_dir = None   # where tables go (None: results/)

# %%
cfg = notebook_config(globals(), _names_before_parameters)

# %% [markdown]
# ## Circuits, flow, check
#
# Circuits (inputs `a[N]`, `w[N]`, bit 1 = +1, one XNOR per pair, `p` = popcount, `s = 2p − N`):
# `popcount` (integer out), `pc_cmp` = popcount + `count >= ceil(N/2)` (the baseline), `pc_thr` =
# popcount + a runtime threshold (how BN is folded in BNN accelerators), `mv` = the voter built as the
# same compressor tree feeding only the carry that decides `p >= ceil(N/2)`, and `hmv<G>_<tie>` = G inner
# voters on contiguous blocks (a conv layer's channel blocks with all their taps) and an outer vote with
# tie rule pos / neg / first. Every netlist is simulated against the reference voters before it is
# reported; results are cached in `results/hw/cache/` keyed by circuit, N and the generator/flow hash.
# Synthesis runs only on a cache miss (and then needs Yosys).

# %%
widths, groups, ties = cfg["hw_widths"], cfg["hw_groups"], cfg["hw_ties"]
ns = flow.study_fanins(widths)
names = flow.circuits(groups, ties)
kw = dict(allow_synth=cfg["hw_allow_synth"], jobs=cfg["hw_jobs"], vectors=cfg["hw_check_vectors"])
print("Yosys:", synth.yosys_version() if synth.have_yosys() else "not installed (cached results only)")
df = flow.sweep(ns, names, **kw)
comp = flow.composed(ns, groups=groups, ties=ties, **kw)
scatter = flow.mapper_scatter(df, comp)
print(f"fan-ins {ns}; {len(df)} flat and {len(comp)} composed circuits")
print(f"every netlist matched mvlib.voters on >= {df.check_vectors.min()} vectors; "
      f"Yosys time of the flat circuits (from the cache) {df.synth_seconds.sum():.0f} s")

# %% [markdown]
# ## Area (NAND2 equivalents) and logic depth against N

# %%
print("area, GE"); show_table(flow.pivot(df, "area_ge"), digits=0)
print("logic depth, cells on the longest path"); show_table(flow.pivot(df, "depth"), digits=0)
print("area per input, GE / N"); show_table(flow.pivot(df, "area_ge") / flow.pivot(df, "area_ge").columns.values, digits=2)

# %%
n_show = 576 if 576 in ns else ns[len(ns) // 2]
by_type = pd.DataFrame({c: r for c, r in df[df.n == n_show].set_index("circuit")["cells"].items()}).T.fillna(0).astype(int)
print(f"cell counts by type at N={n_show}")
show_table(by_type[sorted(by_type.columns, key=lambda k: -by_type[k].sum())], index=True)

# %%
show = flow.circuits(groups, ("pos",))  # the base circuits and every G with tie +1
area, depth = flow.pivot(df, "area_ge"), flow.pivot(df, "depth")
fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
for c in show:
    style = "-o" if not c.startswith("hmv") else "--."
    ax[0].loglog(area.columns, area.loc[c], style, label=c)
    ax[1].semilogx(depth.columns, depth.loc[c], style, label=c)
ax[0].set(xlabel="fan-in N", ylabel="area (NAND2 equivalents)", title="area vs N")
ax[1].set(xlabel="fan-in N", ylabel="logic depth (cells)", title="depth vs N")
ax[0].legend(fontsize=8); ax[1].legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Savings against XNOR + popcount + comparison
#
# Positive = smaller than `pc_cmp` at the same N. `hmv2_first` is degenerate: with two blocks and
# "tie = first block's vote" the output *is* the first block's vote, so synthesis drops the second
# block (half the area, and half the inputs ignored). The flat-vs-composed difference of the same
# hierarchical voter measures the mapper's scatter, the resolution of every saving here.

# %%
sav = flow.savings(df)
show_table((100 * sav).rename_axis("saving % vs pc_cmp"))
fig, ax = plt.subplots(figsize=(7, 4))
for c in [c for c in show if c != "pc_cmp"]:
    ax.semilogx(sav.columns, 100 * sav.loc[c], "-o" if not c.startswith("hmv") else "--.", label=c)
ax.axhspan(-100 * scatter, 100 * scatter, color="grey", alpha=0.2, label="mapper scatter")
ax.axhline(0, color="k", lw=0.5)
ax.set(xlabel="fan-in N", ylabel="area saving vs popcount+compare (%)"); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()
m = df.merge(comp, on=["circuit", "n"], suffixes=("_flat", "_composed"))
m["diff_%"] = 100 * (m.area_ge_composed / m.area_ge_flat - 1)
show_table(m.pivot_table(index="circuit", columns="n", values="diff_%").rename_axis("composed vs flat, %"))
print(f"median |composed - flat| = {100 * scatter:.2f} % of the area")

# %% [markdown]
# ## The deck's M512 vs M4(M128 × 4)

# %%
deck = flow.deck_table(allow_synth=cfg["hw_allow_synth"], jobs=cfg["hw_jobs"])
show_table(deck.drop(columns=["circuit"]).assign(saving_vs_pc_cmp=lambda d: 100 * d.saving_vs_pc_cmp)
           .rename(columns={"saving_vs_pc_cmp": "saving vs pc_cmp (%)"}), digits=1)

# %% [markdown]
# ## Per-network totals: ReActNet-18 (16 binary 3×3 layers)
#
# Layer i needs one voter of fan-in C_in·9 per output, C_out·H·W outputs per image; area × outputs
# summed over the layers is the logic work per image in GE-evaluations (a proxy for logic energy, not a
# chip area: hardware reuses circuits).

# %%
net = flow.network_table(df, widths, names)
show_table(net.assign(ge_evals_per_image=net.ge_evals_per_image / 1e6, saving_vs_pc_cmp=100 * net.saving_vs_pc_cmp)
           .rename(columns={"ge_evals_per_image": "M GE-evals / image", "saving_vs_pc_cmp": "saving %"})
           .drop(columns=["cell_evals_per_image"]), digits=1)
show_table(pd.DataFrame(cost.reactnet18_layers(max(widths))).set_index("layer"), digits=0)
fig, ax = plt.subplots(figsize=(9, 3.5))
for i, w in enumerate(widths):
    t = net[net.width == w].set_index("circuit").loc[show]
    ax.bar([j + 0.4 * i for j in range(len(show))], t.ge_evals_per_image / 1e6, 0.4, label=f"width {w}")
ax.set_xticks([j + 0.2 for j in range(len(show))], show, rotation=30, fontsize=8)
ax.set(ylabel="M GE-evaluations / image", yscale="log"); ax.legend()
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Are the voters lighter in digital logic?

# %%
print(flow.statement(df, net, scatter))
out = resolve_results_dir(cfg["results_dir"]) / "hw" / cfg["profile"]
for p in flow.write_tables(df, out, composed=comp, network_totals=net, deck_m512=deck):
    print("wrote", p.relative_to(resolve_results_dir(cfg["results_dir"]).parent))
