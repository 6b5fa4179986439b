"""The accuracy-logic Pareto front of voter families (notebook 09): points, the front, the verdict.

A *point* is one network design: a voter family at the base width (the exact
voter ``mv``, a hierarchical voter ``hmv<G>_<tie>``, a tree ``hmv<G1>x<G2>..._<tie>``)
or the control, a popcount network (``popcount``) or exact-voter network at a
reduced width. Its accuracy is the mean test top-1 over training seeds with a
95 % interval (:mod:`mvlib.study.stats`); its logic cost is what every binary
3x3 convolution's synthesized circuit costs, summed over the network
(:func:`mvlib.hw.cost.network_totals`): area x outputs per image (GE-evaluations
per image, "logic work") and the deepest layer's circuit (depth in cells).

The popcount network is costed as ``popcount`` (XNOR + the integer count),
because the network consumes the count (BN, residual add); everything after
the count (BN or threshold, residual, the next sign) is the same for every
design and is not costed. A voter network's cost is its voter circuit.

The verdict compares, per network:

* the cheapest voter (by logic work) whose mean top-1 is within 1 and within
  3 points of the popcount network at the base width;
* each approximate voter against the popcount *curve*: it **beats** it at
  equal cost when it is more accurate (Welch interval above 0) than a popcount
  network that costs at least as much, and it **loses** when a popcount network
  that costs no more is more accurate; otherwise it is not resolved at the
  points measured.

Nothing here trains or evaluates: it reads the per-seed rows the notebook made
and the cost tables, so it is left out of the code identity (like the report).
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..hw import cost as hw_cost
from ..hw.flow import tree_support
from ..voter_spec import VoterSpec
from .stats import UNRESOLVED, holm, t_interval, welch

KINDS = ("popcount", "mv", "hmv", "tree")  # tree: nested fan-ins (more than one level)
POINT_COLUMNS = ["model", "point", "kind", "width", "fanins", "tie", "circuit", "seeds", "top1", "top1_half",
                 "top1_std", "val_top1", "ge_evals_per_image", "max_depth", "area_ge", "degenerate", "inputs_read"]


def control_widths(width: int, fractions) -> list[int]:
    """Reduced widths ``width * f``; each must be a whole number of channels (>= 1), else ValueError."""
    out = []
    for f in fractions:
        w = width * f
        if abs(w - round(w)) > 1e-9 or round(w) < 1:
            raise ValueError(f"pareto_width_fractions: {f} x width {width} = {w} is not a whole number of channels")
        out.append(int(round(w)))
    return out


def point_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the splits every point is evaluated on and the one retraining recipe of the voter points."""
    return {**cfg, "val_eval_per_class": cfg["pareto_val_per_class"] or cfg["val_eval_per_class"],
            "test_per_class": cfg["pareto_test_per_class"] or cfg["test_per_class"],
            "mv_retrain_train_per_class": cfg["pareto_retrain_train_per_class"] or cfg["mv_retrain_train_per_class"]}


def shares_runs(cfg: dict[str, Any]) -> bool:
    """True when that recipe and those splits are notebooks 03/04's own: their retrained runs are the points' runs."""
    p = point_config(cfg)
    return all(p[k] == cfg[k] for k in ("val_eval_per_class", "test_per_class", "mv_retrain_train_per_class"))


def voter_families(width: int, groups, trees) -> list[tuple[int, ...]]:
    """Fan-in tuples of the hierarchical voters: single levels, then trees; each product must divide ``width``."""
    fams = [(int(g),) for g in groups] + [tuple(int(g) for g in t) for t in trees]
    bad = [f for f in fams if width % math.prod(f)]
    if bad:
        raise ValueError(f"pareto voters {bad}: their leaf count (product of fan-ins) must divide the stage-1 width "
                         f"{width} (every layer's input channels are a multiple of it)")
    return fams


def hierarchical_points(cfg: dict[str, Any]) -> list[VoterSpec]:
    """The front's hierarchical voters: every ``pareto_groups`` G, then every ``pareto_trees`` tree (checked by
    :func:`voter_families`), each with every ``pareto_ties`` rule, with the voter study's surrogate normalization.

    Every rule is costed; which are retrained (all, or the one chosen by disagreement) the notebook decides.
    """
    families = voter_families(cfg["width"], cfg["pareto_groups"], cfg["pareto_trees"])
    return [VoterSpec.hierarchical(f, tie, norm=cfg["mv_surrogate_norm"]) for f in families
            for tie in cfg["pareto_ties"]]


def point_kind(voter: VoterSpec | None) -> str:
    """The design's kind (:data:`KINDS`): ``popcount`` for no voter, ``tree`` for a voter of several levels."""
    if voter is None:
        return "popcount"
    return "tree" if len(voter.fanins) > 1 else voter.kind


def point_label(voter: VoterSpec | None, width: int, base_width: int | None = None) -> str:
    """``popcount w12``, ``MV``, ``HMV G=4 tie pos``, ``tree 4x4 tie first``: the voter's label
    (:meth:`~mvlib.voter_spec.VoterSpec.label`), the width appended when not the base; a popcount network always
    names its width."""
    if voter is None:
        return f"popcount w{width}"
    return voter.label() + ("" if width == base_width else f" w{width}")


def circuit_of(voter: VoterSpec | None) -> str:
    """The costed circuit of a design: ``popcount`` for a popcount network, else the voter's circuit."""
    return "popcount" if voter is None else voter.circuit_name()


def point_columns(voter: VoterSpec | None, width: int, base_width: int) -> dict[str, Any]:
    """The columns that say what a point is: kind, width, fan-ins (``4x4``), tie (empty but for the hierarchical
    voters), circuit and label (``point``)."""
    return {"kind": point_kind(voter), "width": width, "fanins": voter.fanin_text() if voter else "",
            "tie": voter.tie if voter and voter.kind == "hmv" else "", "circuit": circuit_of(voter),
            "point": point_label(voter, width, base_width)}


def circuits_needed(width: int, controls, voters) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """What the front costs: the ``(circuit, fan-in)`` pairs to synthesize, and the ``(circuit, width)`` designs.

    Popcount and exact voter at the base and control widths; every hierarchical voter of ``voters`` at the base
    width (:func:`hierarchical_points`: all tie rules are costed even where only one is retrained).
    """
    designs = [(c, w) for c in ("popcount", "mv") for w in [width, *controls]] + [
        (circuit_of(v), width) for v in voters]
    synth = [(c, n) for c, w in designs for n in hw_cost.fanins([w])]
    return list(dict.fromkeys(synth)), designs


def profile_circuits(cfg: dict[str, Any]):
    """:func:`circuits_needed` of a configuration (its width, pareto_* keys)."""
    w = cfg["width"]
    return circuits_needed(w, control_widths(w, cfg["pareto_width_fractions"]), hierarchical_points(cfg))


def inputs_read(circuit: str) -> float:
    """Fraction of its inputs a voter's output depends on: 1, except for degenerate trees (G = 2, tie first)."""
    if not circuit.startswith("hmv"):
        return 1.0
    voter = VoterSpec.from_circuit(circuit)
    return tree_support(voter.fanins, voter.tie)[-1] / voter.leaves


def studied_width(points: pd.DataFrame) -> int:
    """The width the voters are studied at: the widest popcount network (the controls are narrower)."""
    return int(points.loc[points.kind == "popcount", "width"].max())


def choose_ties(dis: pd.DataFrame, ties) -> dict[str, str]:
    """Per fan-in string ("4", "4x4"): the tie rule with the lowest mean disagreement with the exact voter.

    ``dis`` has one row per (model, seed, layer, fanins, tie) with ``disagree_rate``
    (:func:`mvlib.study.voter_study.disagreement_table`); the mean runs over models,
    seeds and layers. On equal means the earlier rule in ``ties`` wins.
    """
    mean = dis.groupby(["fanins", "tie"])["disagree_rate"].mean()
    out = {}
    for f in dict.fromkeys(dis["fanins"]):
        scores = [(mean.get((f, t), math.inf), i, t) for i, t in enumerate(ties)]
        out[str(f)] = min(scores)[2]
    return out


def network_costs(costs: pd.DataFrame, pairs) -> pd.DataFrame:
    """Per ``(circuit, width)`` over the 16 binary 3x3 convolutions: ``ge_evals_per_image`` (logic work),
    ``max_depth`` and ``area_ge`` (one circuit per layer, summed: the voters of a layer-serial design)."""
    area = costs.set_index(["circuit", "n"])["area_ge"]
    rows = []
    for c, w in dict.fromkeys(pairs):
        r = hw_cost.network_totals(costs, w, [c]).iloc[0]
        rows.append({"circuit": c, "width": w, "ge_evals_per_image": r["ge_evals_per_image"],
                     "max_depth": r["max_depth"], "area_ge": sum(float(area.get((c, layer["fanin"]), math.nan))
                                                                for layer in hw_cost.reactnet18_layers(w))})
    return pd.DataFrame(rows)


def runs_from_csv(runs: pd.DataFrame) -> pd.DataFrame:
    """The notebook's ``runs`` table as read back from CSV: empty fan-ins and tie rules are "", not NaN."""
    return runs.assign(fanins=runs["fanins"].fillna("").astype(str), tie=runs["tie"].fillna(""))


def points_table(runs: pd.DataFrame, net: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, point): mean test top-1 over seeds with its interval, and the logic cost.

    ``runs``: one row per (model, point, seed) with kind, width, fanins, tie, circuit,
    top1, val_top1. ``net``: :func:`network_costs`.
    """
    rows = []
    for (model, point), g in runs.groupby(["model", "point"], sort=False):
        iv = t_interval(g["top1"].tolist())
        r = g.iloc[0]
        rows.append({"model": model, "point": point, "kind": r["kind"], "width": int(r["width"]),
                     "fanins": r["fanins"], "tie": r["tie"], "circuit": r["circuit"], "seeds": iv.n,
                         "top1": iv.mean, "top1_half": iv.half, "top1_std": iv.std, "val_top1": g["val_top1"].mean(),
                     "degenerate": inputs_read(r["circuit"]) < 1, "inputs_read": inputs_read(r["circuit"])})
    pts = pd.DataFrame(rows).merge(net, on=["circuit", "width"], how="left")
    return pts[POINT_COLUMNS]


def front(points: pd.DataFrame, cost: str = "ge_evals_per_image") -> pd.Series:
    """True for the points no other point of the same model beats: as cheap or cheaper and more accurate (means)."""
    on = pd.Series(False, index=points.index)
    for _, g in points.groupby("model", sort=False):
        best = -math.inf
        for i, r in g.sort_values([cost, "top1"], ascending=[True, False]).iterrows():
            if r["top1"] > best:
                on[i], best = True, r["top1"]
    return on


def _seeds(runs: pd.DataFrame, model: str, point: str) -> list[float]:
    return runs[(runs.model == model) & (runs.point == point)]["top1"].tolist()


def against_popcount(runs: pd.DataFrame, points: pd.DataFrame, cost: str = "ge_evals_per_image") -> pd.DataFrame:
    """Each approximate voter (hmv, tree) against the popcount networks that bracket its cost.

    ``beats``: Welch interval of (voter - the cheapest popcount network costing at
    least as much); ``loses``: of (voter - the most expensive popcount network
    costing no more). Outcome: "beats" (first interval above 0), "loses" (second
    below 0), or not resolved; the tests of all voters and models are one family
    (Holm, :func:`mvlib.study.stats.holm`). A degenerate voter (a tree that reads
    only part of its inputs) is listed with its outcome "degenerate" and left out
    of the family: its accuracy says nothing about a voter of the whole sum.
    """
    rows, tests = [], []
    for model, g in points.groupby("model", sort=False):
        pop = g[g.kind == "popcount"].sort_values(cost)
        for _, v in g[g.kind.isin(["hmv", "tree"])].iterrows():
            above = pop[pop[cost] >= v[cost]].head(1)
            below = pop[pop[cost] <= v[cost]].tail(1)
            seeds = _seeds(runs, model, v["point"])
            hi = welch(seeds, _seeds(runs, model, above.point.iloc[0])) if len(above) else None
            lo = welch(seeds, _seeds(runs, model, below.point.iloc[0])) if len(below) else None
            degenerate = bool(v.get("degenerate", False))
            tests += [None if degenerate else hi, None if degenerate else lo]
            rows.append({"model": model, "point": v["point"], "cost_vs_popcount": v[cost] / pop[cost].max(),
                         "popcount_at_least_as_costly": above.point.iloc[0] if len(above) else None,
                         "diff_vs_it": hi.fmt() if hi else "", "popcount_no_costlier": below.point.iloc[0]
                         if len(below) else None, "diff_vs_cheaper": lo.fmt() if lo else "",
                         "outcome": (f"degenerate (reads {v['inputs_read']:.0%} of its inputs)" if degenerate
                                     else None)})
    verdicts = holm(tests)
    for i, r in enumerate(rows):
        if r["outcome"] is None:
            r["outcome"] = ("beats" if verdicts[2 * i] == "yes" else "loses" if verdicts[2 * i + 1] == "no"
                            else UNRESOLVED)
    return pd.DataFrame(rows)


def cheapest_within(points: pd.DataFrame, model: str, margin: float, base_width: int,
                    cost: str = "ge_evals_per_image") -> dict[str, Any] | None:
    """The cheapest voter at the base width whose mean top-1 is at most ``margin`` points below the popcount one."""
    g = points[(points.model == model) & (points.width == base_width)]
    ref = g[g.kind == "popcount"]
    if ref.empty:
        return None
    ref = ref.iloc[0]
    ok = g[g.kind.isin(["mv", "hmv", "tree"]) & (g.top1 >= ref.top1 - margin)].sort_values(cost)
    if ok.empty:
        return None
    v = ok.iloc[0]
    return {"point": v["point"] + (f" (degenerate: reads {v['inputs_read']:.0%} of its inputs)"
                                   if v["degenerate"] else ""), "top1": v["top1"], "popcount_top1": ref.top1,
            "saving": 1.0 - v[cost] / ref[cost], "depth": v["max_depth"], "popcount_depth": ref.max_depth}


def _recipe(rows: pd.DataFrame) -> str:
    epochs, images = int(rows["epochs"].iloc[0]), int(rows["train_images"].iloc[0])
    return f"{epochs} epoch{'s' if epochs != 1 else ''} on {images:,} images"


def recipe_note(metrics, profile: str, code: str | None = None) -> str | None:
    """What the equal-cost comparison depends on, read from the run records (``records.all_metrics``).

    The controls are networks trained from scratch by notebook 01's recipe; a voter point is a base-width
    baseline *retrained* through its voter by notebook 09's shared recipe. When that retraining is shorter
    than notebook 03's, the comparison holds for that budget only, and the note says how far notebook 03's
    longer retraining takes the exact voter. None when the records lack notebook 09's runs.
    """
    m = pd.DataFrame(metrics)
    need = {"step", "variant", "model", "profile", "epochs", "train_images", "top1"}
    if m.empty or not need <= set(m.columns):
        return None
    m = m[(m.profile == profile) & ((m.code_hash == code) if code and "code_hash" in m else True)]
    here = m[m.step == "09_voter_pareto"]
    control = here[here.variant.astype(str).str.match(r"baseline-w\d+$")]
    voters = here[here.variant == "retrain-approx"]
    longer = m[(m.step == "03_mv_retraining") & (m.variant == "retrain-approx")]
    if control.empty or voters.empty:
        return None
    text = (f"Recipes (from the records): the narrower controls are trained from scratch for {_recipe(control)} "
            f"(notebook 01's recipe); each voter point is a base-width baseline retrained through its voter for "
            f"{_recipe(voters)}")
    if longer.empty or _recipe(longer) == _recipe(voters):
        return text + "."
    per_model = []
    for model, g in longer.groupby("model", sort=False):
        short = voters[voters.model == model]
        if short.empty:
            continue
        iv = t_interval(g["top1"].tolist())
        per_model.append(f"{model} {iv.mean:.2f} % (n={iv.n}, {int(g['test_images'].iloc[0]):,} test images) "
                         f"against {short['top1'].mean():.2f} % here (n={len(short)}, "
                         f"{int(short['test_images'].iloc[0]):,} test images)")
    return (text + ", shorter than notebook 03's retraining (" + _recipe(longer) + "). So \"beats\" and \"loses\" "
            "hold for this retraining budget, which favours the controls: notebook 03's longer retraining brings the "
            "exact voter to " + "; ".join(per_model) + ".")


def verdict(runs: pd.DataFrame, points: pd.DataFrame, base_width: int, note: str | None = None) -> str:
    """The section's verdict, from the data: cheapest voters within 1 and 3 points, the equal-cost comparison.

    ``note``: what the comparison depends on (:func:`recipe_note`), appended as the last line.
    """
    lines = []
    vs = against_popcount(runs, points)
    for model, g in points.groupby("model", sort=False):
        ref = g[(g.kind == "popcount") & (g.width == base_width)]
        if ref.empty:
            continue
        ref = ref.iloc[0]
        head = f"{model}: popcount network (width {base_width}) {ref.top1:.2f} % top-1"
        parts = []
        for margin in (1.0, 3.0):
            c = cheapest_within(points, model, margin, base_width)
            parts.append(f"within {margin:g} point{'s' if margin != 1 else ''}: " + (
                "no voter" if c is None else f"{c['point']} ({c['top1']:.2f} %, {100 * abs(c['saving']):.1f} % "
                f"{'less' if c['saving'] >= 0 else 'more'} logic work, depth {c['depth']:.0f} against "
                f"{c['popcount_depth']:.0f})"))
        lines.append(head + "; cheapest voter " + "; ".join(parts) + ".")
        m = vs[vs.model == model]
        degenerate = m[m.outcome.str.startswith("degenerate")]
        m = m[~m.outcome.str.startswith("degenerate")]
        if m.empty:
            continue
        n_b, n_l = int((m.outcome == "beats").sum()), int((m.outcome == "loses").sum())
        n_u = len(m) - n_b - n_l
        answer = "yes" if n_b else ("no" if n_l == len(m) else UNRESOLVED)
        losers = f" ({', '.join(m[m.outcome == 'loses'].point)})" if 0 < n_l <= 4 else ""
        lines.append(f"  Does an approximate voter beat the narrower popcount network at equal cost? {answer}: "
                     f"{n_b} of {len(m)} voters beat a popcount network costing at least as much; {n_l} lose to "
                     f"one costing no more{losers}; {n_u} are not resolved either way."
                     + (f" Left out: {', '.join(degenerate.point)} (degenerate: it reads part of its inputs)."
                        if len(degenerate) else ""))
    seeds = sorted(set(points.seeds))
    lines.append(f"Means over {'/'.join(map(str, seeds))} training seeds with 95 % intervals"
                 + (" (with 2 seeds a t interval has one degree of freedom, t = 12.7: wide by construction; plotted "
                    "intervals are clipped to 0-100 %)" if 2 in seeds else "")
                 + "; the equal-cost tests of all voters are one family (Holm, 5 % family-wise error); the voter "
                 "points share one retraining recipe, so they compare with each other directly; the controls are "
                 "trained by notebook 01's recipe.")
    if note:
        lines.append(note)
    return "\n".join(lines)
