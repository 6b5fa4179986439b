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
# # mvlib report — the deck's tables beside this project's numbers
#
# **Reproduces** every table of the deck *Lightweight DNN with Majority Voter*: the CIFAR-10 results
# (baselines, naive majority-voter substitution, retraining through the voter), its plan 3
# (hierarchical voter), its plans 1–2 (real XNOR + popcount and majority kernels) and its appendix
# (BN / without BN / BN-Free, from "BNN − BN = ?"), plus the hardware cost of the voters by synthesis.
#
# **How to read it.** Every "ours" number comes from a run record under `results/runs/` (or a
# benchmark / synthesis result file) written by the notebooks 01–07 of the same profile and the same
# code; every "deck" number from `mvlib/study/deck_numbers.csv`. Nothing is typed in. Rows are means over
# training seeds with a 95 % interval (Student t); changes against a baseline are paired per seed; every
# claim of the deck gets a verdict: yes, no, or not resolved at 95 %. All choices (retraining budget and
# learning rate, surrogate normalization) were made on a validation split held out of the training images;
# the test split is evaluated only for the rows shown. The `cpu` profile runs the whole study on a 2-core
# CPU at reduced width, data and epochs: its accuracies are far below the deck's, and what it can show is
# whether the deck's *pattern* appears at small scale. The `paper` profile (GPU) is the one that reproduces
# the numbers.

# %%
from mvlib.study.config import notebook_config
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"      # the profile whose results are reported
results_dir = None   # where the records are (None: results/)

# %%
cfg = notebook_config(globals(), _names_before_parameters)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from mvlib.study import appendix, report
from mvlib.study.deck_pattern import main_table, verdicts
from mvlib.study.plots import bar_compare, plot_histories
pd.options.display.float_format = "{:,.2f}".format
rows = report.records_of(cfg["results_dir"], cfg["profile"])
prov = report.provenance(rows)
display(Markdown(
    f"**Profile** `{cfg['profile']}` · **{prov['records']} run records** of code `{', '.join(prov['code'])}` · "
    f"commit `{', '.join(c[:10] for c in prov['commits'])}`"
    + (f" (**{prov['dirty']} from a tree with uncommitted changes**)" if prov["dirty"] else " (committed tree)")
    + f" · runs from {prov['first']} to {prov['last']} UTC · **hardware:** {', '.join(prov['machines']) or 'none'}"))

# %% [markdown]
# ## 1 · CIFAR-10: baselines, naive voter, retraining (the deck's first table)
#
# Deck rows first, then this project's added rows: other output scales of the substituted voter
# (`naive-alpha`, `naive-matched`), BN recalibration (`naive+recal`) and retraining with the plain clipped
# STE (`retrain-ste`). "± 95 %" is the half-width of the 95 % interval of the mean over seeds; "vs baseline"
# is the paired change against the same seed's baseline.

# %%
main = main_table(rows, cfg["profile"])
if main.empty or main["ours top1"].isna().all():
    display(Markdown("_no run records for this profile yet_"))
else:
    display(main.round(2).style.hide(axis="index").format(precision=2, na_rep="–"))

# %%
if not main.empty:
    deck_rows = main.dropna(subset=["deck top1"])
    labels = [f"{m}\n{v}" for m, v in zip(deck_rows["model"], deck_rows["variant"])]
    fig = bar_compare(labels, {"deck": list(deck_rows["deck top1"]), f"ours ({cfg['profile']})": list(deck_rows["ours top1"])},
                      errors={f"ours ({cfg['profile']})": list(deck_rows["± 95 %"])},
                      title="top-1, deck vs ours (ours: mean over seeds, 95 % interval)")
    plt.show()

# %% [markdown]
# ### The deck's claims at this scale

# %%
claims, lines = verdicts(rows, cfg["profile"])
if claims.empty:
    print("not enough records for the verdicts")
else:
    display(claims.round(2).style.hide(axis="index").format(precision=2, na_rep="–"))
    display(Markdown("\n".join(f"- {l}" for l in lines)))

# %% [markdown]
# ### Training curves of the runs in this table (validation top-1 after each epoch)

# %%
hist = report.histories(rows, [("01", "baseline"), ("03", "retrain-approx")])
if hist:
    fig = plot_histories(hist, metrics=("train_loss", "val_top1")); plt.show()
else:
    print("no training curves for this profile")

# %% [markdown]
# ## 2 · Hierarchical majority voter (the deck's plan 3)
#
# Accuracy of the hierarchical voter with outer fan-in G substituted into the trained baselines (validation
# subset, the `sweep_seeds` baselines) and retrained where the profile retrains it (validation and test), per tie
# rule. The deck's M512 ≈ M4(M128 × 4) corresponds to G = 4 on a 64-channel layer (M576 ≈ M4(M144 × 4)); the
# deck gives no accuracy for it. Disagreement and tie rates per layer are in notebook 04.

# %%
hmv = report.hmv_table(rows)
if hmv.empty:
    print("no hierarchical-voter records for this profile")
else:
    display(hmv.style.hide(axis="index").format(precision=2, na_rep="–"))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for (model, mode, tie), g in hmv[hmv["mode"].str.startswith("naive")].groupby(["model", "mode", "tie"]):
        g = g[~g["G"].str.contains("x")].assign(Gi=lambda d: d["G"].astype(int)).sort_values("Gi")
        ax.plot(g["Gi"], g["val_top1"], marker="o", label=f"{model} {mode} tie {tie}")
    ax.set_xscale("log", base=2); ax.set_xlabel("outer fan-in G"); ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3); ax.legend(fontsize=7); plt.show()

# %% [markdown]
# ## 3 · Bit kernels (the deck's plans 1–2)
#
# Median over the ResNet-18 CIFAR 3×3 layer shapes of the speed-up against torch fp32 `conv2d`, kernel only
# and including the packing of fp32 activations, on the machine named; then the per-layer rows at the
# largest batch. The roofline, measured in the same benchmark run, bounds these ratios: the XOR-popcount
# micro-kernel's peak (L1-resident data) over torch's fp32 matmul peak (dotted line in the plot).

# %%
bench = report.kernel_results(cfg["results_dir"], cfg["profile"])
if bench is None:
    print("no kernel benchmark for this profile (notebook 05)")
else:
    print("machine:", bench["machine"].get("cpu", bench["machine"]), "| file: results/bench/" + bench["file"].split("/bench/")[-1])
    peak = bench.get("peak")
    if peak:
        print(f"roofline: micro-kernel {peak['binary_tmacs']:.2f} T binary MAC/s, torch fp32 matmul {peak['fp32_gmacs']:.0f} GMAC/s "
              f"-> at most {peak['ceiling']:.1f}x against a torch convolution at its peak")
    summary, layers = report.kernel_tables(bench)
    display(summary[[c for c in ("xnor_ratio", "xnor_pack_ratio", "mv_ratio", "mv_pack_ratio", "hmv_ratio", "mv_vs_xnor", "xnor_tmacs") if c in summary]])
    display(layers)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = range(len(layers))
    for col in ("xnor_ratio", "xnor_pack_ratio", "mv_ratio", "hmv_ratio"):
        if col in layers:
            ax.plot(list(x), layers[col], marker="o", label=col)
    if peak:
        ax.axhline(peak["ceiling"], color="black", ls=":", lw=1, label="peak / peak")
    ax.set_xticks(list(x), layers["shape"], rotation=30, ha="right"); ax.set_ylabel("× faster than torch fp32")
    ax.grid(alpha=0.3); ax.legend(fontsize=8); plt.tight_layout(); plt.show()
    net = bench.get("network") or {}
    if net:
        print(f"whole ReActNet-18 (width {net.get('width')}, batch {net.get('batch')}): float {net['float_images_per_s']:.0f} img/s, "
              f"bit kernels {net['bit_images_per_s']:.0f} img/s ({net['speedup']:.2f}x), identical logits: {net['identical_logits']}")

# %% [markdown]
# ## 4 · Appendix: BN, without BN and BN-Free (from "BNN − BN = ?")
#
# Recipe and scale in notebook 06 (`cpu`: width 8, 3 epochs, 6,000 CIFAR-10 / 9,000 CIFAR-100 training images, three
# seeds for the CIFAR-10 cells of ReActNet-18 and Bi-RealNet-18, one elsewhere; every cell on the full test split).
# "± 95 %" is over seeds, or 1.96 binomial standard errors of the test set for a single-seed cell; the dotted lines
# are the shortcut-only floors.

# %%
res = appendix.appendix_results(rows, cfg["profile"])
if not res.top1.notna().any():
    print("no appendix records for this profile (notebook 06)")
else:
    report.show(appendix.appendix_table(res), index=True, digits=1)
    fig = appendix.plot_appendix(res, title=f"appendix, profile {cfg['profile']}"); plt.show()
    display(Markdown(appendix.pattern_statement(res)))

# %% [markdown]
# ## 5 · Hardware cost of the voters (Yosys synthesis, notebook 07)
#
# The deck's premise is that a majority voter is cheaper than XNOR + popcount. Each circuit is synthesized by
# Yosys + ABC to NAND2 equivalents (GE) and simulated against the reference voters; "saving" is against XNOR +
# popcount + comparison (what a popcount network computes per output). `hmv2_first` is degenerate: its outer tie
# rule returns the first block's vote, so it is half a voter, not a cheaper whole one.

# %%
hw = report.hardware_tables(cfg["results_dir"], cfg["profile"])
if not hw:
    print("no synthesis results for this profile (notebook 07)")
else:
    deck_hw = hw.get("deck_m512")
    if deck_hw is not None:
        t = deck_hw.assign(saving=lambda d: 100 * d["saving_vs_pc_cmp"])[["design", "area_ge", "depth", "saving"]]
        t.columns = ["design (N = 512)", "area (GE)", "logic depth", "saving vs popcount+compare (%)"]
        display(Markdown("**The deck's M512 ≈ M4(M128 × 4)**"))
        display(t.style.hide(axis="index").format({"area (GE)": "{:,.0f}", "saving vs popcount+compare (%)": "{:+.1f}"}))
    costs = hw.get("costs")
    if costs is not None:
        base = costs[costs.circuit == "pc_cmp"].set_index("n").area_ge
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for circuit in ["mv", "hmv4_pos", "hmv16_pos"]:
            c = costs[costs.circuit == circuit].set_index("n").area_ge
            if not c.empty:
                ax.plot(c.index, 100 * (1 - c / base.reindex(c.index)), marker="o", label=circuit)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log", base=2); ax.set_xlabel("fan-in N (inputs of one output)")
        ax.set_ylabel("area saving vs popcount+compare (%)"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
        ax.set_title("synthesized area: the exact voter saves nothing, approximation saves some")
        plt.show()
    net = hw.get("network_totals")
    if net is not None:
        t = net[net.circuit.isin(["pc_cmp", "mv", "hmv4_pos", "hmv16_pos"])].assign(
            gevals=lambda d: d.ge_evals_per_image / 1e6, saving=lambda d: 100 * d.saving_vs_pc_cmp)
        t = t[["circuit", "width", "gevals", "max_depth", "saving"]]
        t.columns = ["circuit", "ReActNet-18 width", "M GE-evaluations / image", "max depth", "saving (%)"]
        display(Markdown("**Logic work of a whole ReActNet-18 per image**"))
        display(t.style.hide(axis="index").format({"M GE-evaluations / image": "{:,.1f}", "saving (%)": "{:+.1f}"}))
    if costs is not None and net is not None:
        from mvlib.hw import flow
        comp = hw.get("composed")
        scatter = flow.mapper_scatter(costs, comp) if comp is not None else 0.0
        display(Markdown(flow.statement(costs, net, scatter)))


# %% [markdown]
# ## 6 · Why the voter hurts one network more than the other (notebook 08)
#
# The deck's substituted voter costs ReActNet-18 8.4 points and Bi-RealNet-18 58.7. The `naive` voter hands a bare
# ±1 to a BN fitted to α·s, so its drop depends on the scale of the latent weights, which the float network does not
# fix. Notebook 08 rescales the weights (the float network unchanged, proven on the test split), compares the rows
# that do not depend on that scale (matched magnitude, BN recalibration, the BN folded into the voter's threshold),
# trains the official code's binary 1×1 downsample and larger / longer networks with one shared recipe, and counts
# per layer the signs the voter flips after the BN. The verdict names which of (a) the output-scale convention,
# (b) the binary downsample, (c) scale and training length, (d) a genuine architectural difference reproduces or
# removes the deck's ordering (Bi-RealNet-18 loses more), with the Welch 95 % interval of the difference of the two
# networks' paired drops.

# %%
from mvlib.study import voter_drop as vd
from mvlib.study.deck import deck_numbers
from mvlib.study.plots import plot_drop_vs_accuracy, plot_layer_flips, plot_rescale_sweep


def vd_table(name):
    return report.step_table("08_voter_drop", name, cfg["results_dir"], cfg["profile"])


vd_rows = vd_table("rows")  # the records of the running code only, as in every other section
if vd_rows is None or vd_rows.empty:
    print("no notebook-08 results of this code for this profile")
else:
    vd_order = vd.ordering_table(vd_rows)
    vd_verdict, vd_lines = vd.factor_verdicts(vd_order)
    fig = plot_rescale_sweep(vd_order, title="(a) naive voter against the weight scale k (validation)")
    plt.show()
    deck = deck_numbers("main").set_index(["model", "variant"]).top1
    points = vd_order[(vd_order.convention == "naive") & (vd_order.kind == "real")]
    fig = plot_drop_vs_accuracy(points, {n: (deck[n, "baseline"], deck[n, "baseline"] - deck[n, "naive"])
                                         for n in vd.MODELS},
                                title="(c) naive drop against float top-1, with the deck's two points")
    plt.show()
    flips, damage = vd_table("flips"), vd_table("damage")
    if flips is not None and damage is not None:
        fig = plot_layer_flips(flips, damage, title="where the voter breaks: sign flips after the BN (k = 1)")
        plt.show()
        display(Markdown("\n".join(f"- {line}" for line in vd.damage_lines(flips, damage))))
    report.show(vd_order[["factor", "condition", "split", "reactnet18 drop", "reactnet18 ± 95 %",
                          "birealnet18 drop", "birealnet18 ± 95 %", "seeds", "difference", "difference ± 95 %",
                          "ordering"]])
    display(Markdown("\n\n".join(vd_lines)))
    vd_timing = vd_table("timing")
    if vd_timing is not None:
        display(Markdown(f"Notebook 08's parts took {vd_timing.wall_s.sum() / 60:.1f} min wall: "
                         + ", ".join(f"{r.part} {r.wall_s:.0f} s" for r in vd_timing.itertuples()) + "."))

# %% [markdown]
# ## 7 · Which voter buys the most accuracy per gate? The accuracy–logic Pareto front (notebook 09)
#
# Beyond the deck. Each point is a network design: the exact voter, hierarchical voters G = 2…16 and voter trees
# down to one channel per leaf, each retrained from the baselines by one shared recipe, and — the control — the
# popcount network and the exact voter at reduced width, trained by notebook 01's recipe. Logic work per image and
# depth come from the synthesized circuit of every binary convolution (notebook 07's flow). The verdict names the
# cheapest voter within 1 and 3 points of the popcount network, and whether an approximate voter beats the narrower
# popcount network at equal cost.

# %%
from mvlib.environment import code_hash
from mvlib.study import pareto
from mvlib.study.records import all_metrics
from mvlib.study.plots import plot_pareto

pa_runs = report.step_table("09_voter_pareto", "runs", cfg["results_dir"], cfg["profile"])
pa_costs = report.step_table("09_voter_pareto", "costs", cfg["results_dir"], cfg["profile"])
if pa_runs is None or pa_runs.empty or pa_costs is None:
    print("no notebook-09 results of this code for this profile")
else:
    pa_runs = pareto.runs_from_csv(pa_runs)
    pa_points = pareto.points_table(pa_runs, pa_costs)
    pa_work, pa_depth = pareto.front(pa_points), pareto.front(pa_points, "max_depth")
    fig = plot_pareto(pa_points, pa_work, pa_depth, title="test top-1 against logic work and depth")
    plt.show()
    report.show(pa_points.assign(**{"front": pa_work, "M GE-evals / image": pa_points.ge_evals_per_image / 1e6})
                [["model", "point", "seeds", "top1", "top1_half", "M GE-evals / image", "max_depth", "front"]])
    pa_note = pareto.recipe_note(all_metrics(cfg["results_dir"]), cfg["profile"], code_hash())
    display(Markdown("\n\n".join(pareto.verdict(pa_runs, pa_points, pareto.studied_width(pa_points),
                                                 pa_note).splitlines())))

# %% [markdown]
# ## 8 · What the study cost: wall time of each notebook
#
# From the pipeline's records of the last run of each notebook (`results/notebooks/<profile>/*.done.json`);
# the `cpu` profile's budget is 90 minutes on 2 idle cores.

# %%
timing = report.study_timing(cfg["results_dir"], cfg["profile"])
if timing is None:
    print("no notebook of this profile has run through the pipeline")
else:
    display(Markdown(report.timing_sentence(timing, budget_min=90 if cfg["profile"] == "cpu" else None)))
