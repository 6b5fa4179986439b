"""Verdicts of the report's sections that no notebook module states: hierarchical voter, kernels, hardware, cost.

Each function reads numbers that the records or result files hold and says, in sentences built from them,
what the data shows, by the study's rule (:mod:`mvlib.study.stats`, docs/METHOD.md): "yes", "no" or "not
resolved at 95 %", a family of claims held at a 5 % family-wise error (Holm), and a difference measured against
a row within the floor margin of chance is "at the floor: says nothing". Where a quantity is measured once
(a benchmark ratio, a synthesized area), the verdict compares it with its goal or with the resolution of its
method, and says which.
"""
from __future__ import annotations

import pandas as pd

from cuda_numba.bench_machine import binary_peak_text

from ..voter_spec import VoterSpec
from .report import fanin_key, occasions_clause
from .report_tables import HOW, TIE_LABELS, fanin_label, model_rank, network, number, pm
from .stats import AT_FLOOR, FLOOR_MARGIN, UNRESOLVED, at_floor, holm
from .summary import difference_interval, select

# The project's goals for the bit kernels: XNOR + popcount against torch fp32 conv2d at batch 128.
KERNEL_GOALS = {"kernel only": 20.0, "with packing": 10.0}


# ---------------------------------------------------------------------------------------------- §2
def hmv_costs(rows: list[dict], profile: str, code: str | None = "current", ties=("pos",)) -> pd.DataFrame:
    """Per network, fan-in and application: the exact voter's top-1, the hierarchical voter's, and the cost
    (exact - hierarchical) with its interval and verdict.

    Substituted rows (notebook 04, ``naive`` / ``naive+recal``) compare with notebook 04's exact voter on the
    same validation subset; retrained rows (``retrain-approx``) with notebook 03's retrained exact voter on the
    test split. The verdicts of all rows are one family (Holm); a cost against an exact-voter row within the
    floor margin of chance is :data:`AT_FLOOR`. Only the outer tie rules in ``ties`` are tested.
    """
    keys = set()
    for r in rows:
        tagged = VoterSpec.from_variant(str(r.get("variant", "")))
        if tagged is None or not str(r.get("step", "")).startswith("04") or r.get("profile") != profile:
            continue
        voter, mode = tagged
        if voter.tie in ties:
            keys.add((r["model"], voter.fanin_text(), voter.tie, mode, r["variant"]))
    out, ivs = [], []
    for model, fan, tie, mode, variant in keys:
        retrained = mode == "retrain-approx"
        metric, n_key = ("top1", "test_images") if retrained else ("val_top1", "val_images")
        ref = select(rows, step="03" if retrained else "04", model=model, variant=mode, profile=profile, code=code)
        hmv = select(rows, step="04", model=model, variant=variant, profile=profile, code=code)
        ref, hmv = [r for r in ref if r.get(metric) is not None], [r for r in hmv if r.get(metric) is not None]
        if not ref or not hmv:
            continue
        iv, how = difference_interval(ref, hmv, metric, n_key)
        exact = sum(r[metric] for r in ref) / len(ref)
        images = hmv[0].get(n_key)
        floor = at_floor(exact)
        out.append({"model": model, "G": fan, "tie": tie, "how": "retrained" if retrained else mode,
                    "evaluated": ("test split" if retrained else "validation subset")
                    + (f", {images:,} images" if images else ""),
                    "exact": exact, "hmv": sum(r[metric] for r in hmv) / len(hmv), "cost": iv.mean, "half": iv.half,
                    "seeds": iv.n, "interval": how, "at_floor": floor})
        ivs.append(None if floor else iv)
    for r, v in zip(out, holm(ivs)):
        r["verdict"] = AT_FLOOR if r["at_floor"] else v
    order = {"retrained": 0, "naive+recal": 1, "naive": 2}
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    frame["_k"] = [(order.get(h, 3), model_rank(m), fanin_key(g))
                   for h, m, g in zip(frame.how, frame.model, frame.G)]
    return frame.sort_values("_k").drop(columns="_k").reset_index(drop=True)


def hmv_verdict(costs: pd.DataFrame) -> str:
    """The section's verdict: what the hierarchical voter costs against the exact voter, per application."""
    if costs.empty:
        return "No hierarchical-voter row has its exact-voter counterpart in the records: nothing to compare."
    ties = ", ".join(TIE_LABELS.get(t, t) for t in dict.fromkeys(costs.tie))
    lines = [f"**Does the hierarchical voter cost accuracy against the exact voter?** Cost = exact-voter top-1 − "
             f"hierarchical-voter top-1 of the same baseline and seed (outer {ties}); the {len(costs)} costs are one "
             f"family at a 5 % family-wise error (Holm); a cost against an exact-voter row within "
             f"{FLOOR_MARGIN:.0f} points of chance is '{AT_FLOOR}'."]
    for how, g in costs.groupby("how", sort=False):
        one = (g.interval == "1 seed: image sampling only").all()
        head = f"- {HOW.get(how, how)[0].upper() + HOW.get(how, how)[1:]} ({g.evaluated.iloc[0]}" + (
            "; one seed: the intervals count the sampling of the images only, not the spread over seeds)"
            if one else ")")
        parts = []
        for model, m in g.groupby("model", sort=False):
            parts.append(f"{network(model)} " + ", ".join(
                f"{fanin_label(r.G)} {pm(r.cost, r.half, signed=True)} → **{r.verdict}**" for r in m.itertuples()))
        lines.append(head + ": " + "; ".join(parts) + ".")
    deck = costs[(costs.G == "4") & (costs.how == "retrained")]
    if len(deck):
        lines.append("- The deck's case (M512 ≈ M4(M128 × 4), here G = 4 retrained): " + "; ".join(
            f"{network(r.model)} loses {number(r.cost)} points to the exact voter ({r.exact:.1f} → {r.hmv:.1f} %)"
            f" → **{r.verdict}**" for r in deck.itertuples()) + ".")
    counts = costs.verdict.value_counts()
    lines.append(f"- Over all {len(costs)} costs: {counts.get('yes', 0)} resolved as a loss (yes), "
                 f"{counts.get('no', 0)} as a gain (no), {counts.get(UNRESOLVED, 0)} not resolved at 95 %"
                 + (f", {counts.get(AT_FLOOR, 0)} at the floor" if counts.get(AT_FLOOR, 0) else "") + ".")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- §3
def bit_exact(bench: dict | None, engine: dict | None, trained: dict | None) -> tuple[str, list[str]]:
    """("yes" / "no" / "not measured", the checks it rests on) from the benchmark files' own comparisons."""
    checks, ok = [], []
    net = (bench or {}).get("network") or {}
    if "identical_logits" in net:
        ok.append(bool(net["identical_logits"]))
        checks.append(f"the converted ReActNet-18 (width {net.get('width')}, batch {net.get('batch')}) gives "
                      f"{'identical' if net['identical_logits'] else 'different'} logits to the float simulation")
    flags = (engine or {}).get("identical_logits") or {}
    if flags:
        same = sum(bool(v) for v in flags.values())
        ok.append(same == len(flags))
        checks.append(f"the fused engine's logits equal the float model's in {same} of {len(flags)} "
                      "(variant, batch) runs")
    if trained and "all_predictions_identical" in trained:
        ok.append(bool(trained["all_predictions_identical"]))
        checks.append(f"{trained.get('models_checked', '?')} trained networks on the test split: "
                      f"{'no' if trained['all_predictions_identical'] else 'some'} prediction differs (largest "
                      f"logit difference {trained.get('max_abs_logit_diff', float('nan')):g})")
    return ("not measured" if not ok else "yes" if all(ok) else "no"), checks


def kernel_verdict(bench: dict, engine: dict | None = None, trained: dict | None = None,
                   goals: dict[str, float] = KERNEL_GOALS) -> str:
    """Bit-exact yes / no, the measured speed-ups at the largest batch against torch fp32 ``conv2d``, and whether
    they reach the project's goals, with the roofline of the same run that bounds them."""
    layers = pd.DataFrame(bench["layers"])
    batch = int(layers["batch"].max())
    big = layers[layers["batch"] == batch]
    exact, checks = bit_exact(bench, engine, trained)
    lines = [f"**Bit-exact: {exact}**" + (" — " + "; ".join(checks) + "." if checks else ".")]
    speed = []
    for col, what in (("xnor_ratio", "kernel only"), ("xnor_pack_ratio", "with packing")):
        med, goal = big[col].median(), goals[what]
        speed.append(f"{what} {med:.1f}× (median over {len(big)} layer shapes, {big[col].min():.1f}–"
                     f"{big[col].max():.1f}×): the {goal:.0f}× goal **{'reached' if med >= goal else 'not reached'}**")
    lines.append(f"**Speed-up of XNOR + popcount against torch fp32 conv2d at batch {batch}** — " + "; ".join(speed)
                 + f". The majority voter: {big['mv_ratio'].median():.1f}× kernel only; the hierarchical voter "
                 f"(G = 4): {big['hmv_ratio'].median():.1f}×.")
    peak = bench.get("peak")
    if peak:
        # torch's convolutions measured against the fp32 figure: above 100 %, that figure is no peak of torch's
        frac = big["torch_frac_peak"].max() if "torch_frac_peak" in big else float("nan")
        bound = frac == frac and frac <= 1.0
        above = [f"{g:.0f}×" for g in goals.values() if g > peak["ceiling"]]
        if "torch_mm_gmacs" in peak:  # the FMA micro-kernel's peak, with torch's matmul beside it
            fp32 = (f"the fp32 FMA micro-kernel at {peak['fp32_gmacs']:.0f} GMAC/s (torch's matmul "
                    f"{peak['torch_mm_gmacs']:.0f}; int8 peak {peak['int8_gmacs']:.0f} GMAC/s, {peak['int8_path']})")
        else:  # a results file of the earlier roofline: torch's matmul stood for the fp32 peak
            fp32 = f"torch's fp32 matmul at {peak['fp32_gmacs']:.0f} GMAC/s"
        text = (f"Roofline of the same run: the binary peak is {binary_peak_text(peak)}, {fp32}, a ratio of "
                f"{peak['ceiling']:.1f}×; torch's convolutions "
                f"at this batch reach up to {100 * frac:.0f} % of that fp32 figure")
        if not bound:
            text += ", so it is not torch's peak on this machine and the ratio bounds nothing."
        elif above:
            text += (f", so the ratio bounds the speed-up against them: the {' and '.join(above)} "
                     f"goal{'s lie' if len(above) > 1 else ' lies'} above it.")
        else:
            text += ", so the ratio bounds the speed-up against them; every goal lies within it."
        lines.append(text)
    net = bench.get("network") or {}
    if net:
        lines.append(f"A whole ReActNet-18 (width {net.get('width')}, batch {net.get('batch')}) with its binary "
                     f"convolutions on the kernels runs {net['speedup']:.2f}× the float model's images per second.")
    if engine and str(batch) in engine.get("summary", {}):
        s = engine["summary"][str(batch)]
        lines.append(f"The fused inference engine (popcount) at batch {batch}: {s['engine_popcount']:,.0f} images/s, "
                     f"{s['engine_vs_torch_fp32']:.1f}× torch fp32 and {s['engine_vs_best_torch']:.2f}× the fastest "
                     "torch path measured" + (f"; its 16 binary blocks run at {s['stage_roofline']['blocks']:.0%} of "
                                              f"the binary peak, {binary_peak_text(engine['peak'])}"
                                              if "stage_roofline" in s else "") + ".")
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------- §5
def hardware_verdict(costs: pd.DataFrame, net: pd.DataFrame | None, scatter: float, deck: pd.DataFrame | None = None,
                     g: int = 4) -> str:
    """The deck's premise in synthesized logic, verdict first: is the majority voter cheaper than XNOR + popcount +
    compare? "yes" where its median saving over N exceeds the synthesis resolution (twice the mapper's scatter,
    at least 2 %), "no" where every saving lies within it (or it costs more beyond it)."""
    from ..hw import flow
    sv, area = flow.savings(costs), flow.pivot(costs)
    mv = sv.loc["mv"].dropna()
    noise = max(0.02, 2 * scatter)
    cheaper = "yes" if mv.median() > noise else "no"
    within = mv.abs().max() < noise
    lines = [f"**Is the majority voter cheaper than XNOR + popcount + compare in synthesized logic? {cheaper}.** "
             f"Across N = {min(mv.index)}…{max(mv.index)} inputs it saves {number(100 * mv.min(), 1, True)} to "
             f"{number(100 * mv.max(), 1, True)} % of the area"
             + (f", within the ±{100 * noise:.0f} % resolution of heuristic synthesis (twice the mapper's scatter "
                f"of {100 * scatter:.1f} %, at least 2 %)." if within else
                f" (median {number(100 * mv.median(), 1, True)} %; resolution ±{100 * noise:.0f} %).")]
    hm = VoterSpec.hierarchical(g, "pos").circuit_name()
    if hm in sv.index:
        h = sv.loc[hm].dropna()
        lines.append(f"The hierarchical voter G = {g} (tie +1) saves {number(100 * h.min(), 1, True)} to "
                     f"{number(100 * h.max(), 1, True)} % — "
                     + ("beyond the resolution at every N." if h.min() > noise else
                        f"beyond the resolution at {int((h > noise).sum())} of {len(h)} N."))
    if deck is not None and len(deck):
        d = deck.set_index("circuit")
        parts = [f"{r.design} {r.area_ge:,.0f} GE ({number(100 * r.saving_vs_pc_cmp, 1, True)} %)"
                 for r in d.itertuples() if r.Index in ("pc_cmp", "mv", hm)]
        lines.append("At the deck's N = 512: " + "; ".join(parts) + ".")
    if net is not None and len(net):
        for w in sorted(net["width"].unique()):
            t = net[net.width == w].set_index("circuit")
            if "mv" in t.index:
                lines.append(f"A whole ReActNet-18 of width {w}: the voter saves "
                             f"{number(100 * t.loc['mv', 'saving_vs_pc_cmp'], 1, True)} % of the logic work per "
                             "image" + (f", G = {g} {number(100 * t.loc[hm, 'saving_vs_pc_cmp'], 1, True)} %"
                                        if hm in t.index else "") + ".")
    degenerate = sorted(c for c in sv.index if flow.degenerate(c))
    if degenerate:
        lines.append(f"Left out of the ranges: {', '.join(degenerate)} (degenerate: the outer tie rule returns one "
                     "block's vote, so it reads part of its inputs).")
    lines.append("Not measured here: analog or in-memory voters, wires and placement, switching energy, memory "
                 "traffic.")
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------- §8
def timing_verdict(timing: dict, budget_min: float | None) -> str:
    """The study's wall time against its budget, then the share of the longest notebooks."""
    steps = timing["steps"]
    longest = sorted(steps.items(), key=lambda kv: -kv[1])[:3]
    share = ", ".join(f"{k} {v / 60:.1f} min" for k, v in longest)
    if timing["wall_s"] is None:
        head = f"The notebooks took {timing['sum_s'] / 60:.1f} min one at a time (no start times recorded)."
    else:
        wall = timing["wall_s"] / 60
        head = (f"**Within the {budget_min:.0f}-minute budget: {'yes' if wall <= budget_min else 'no'}** — "
                if budget_min else "") + (f"the study took {wall:.1f} min of wall time while its notebooks ran "
                                          f"({timing['sum_s'] / 60:.1f} min summed over notebooks, which overlap; "
                                          f"the report not counted){occasions_clause(timing)}.")
    return head + f" The longest: {share}."
