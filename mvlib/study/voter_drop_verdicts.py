"""Notebook 08's verdicts read back from its rows: the ordering of the two networks' drops, per factor.

:mod:`mvlib.study.voter_drop` runs the experiments; this module only judges their rows, so a change to a
verdict reruns nothing. Intervals and verdict rules: :mod:`mvlib.study.stats` (docs/METHOD.md, Verdicts).
"""
from __future__ import annotations

import math

import pandas as pd

from .deck import deck_numbers
from .stats import AT_FLOOR, FLOOR_MARGIN, UNRESOLVED, at_floor, holm, t_interval, welch
from .voter_drop import MODELS, k_label

ORDERING = {"yes": "deck's ordering", "no": "reversed", UNRESOLVED: UNRESOLVED, AT_FLOOR: AT_FLOOR}


# ---------------------------------------------------------------------------------------------- verdicts
CARRIED = ("convention", "k", "point", "kind", "layers", "recipe", "width", "epochs")


def ordering_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (factor, condition): each network's drop over seeds (mean, 95 % half-width; paired per seed) and
    Bi-RealNet-18's drop minus ReActNet-18's (Welch 95 % interval), with its verdict against the deck's
    ordering (Bi-RealNet-18 loses more: "deck's ordering"; ReActNet-18 loses more: "reversed").

    The verdicts are one family (Holm, :func:`mvlib.study.stats.holm`). A row where either network's voter
    top-1 (float top-1 minus drop) is within :data:`mvlib.study.stats.FLOOR_MARGIN` points of chance is
    :data:`mvlib.study.stats.AT_FLOOR`: a network at chance cannot lose more, so the difference says nothing.
    """
    out, diffs = [], []
    for (factor, cond), g in rows.groupby(["factor", "condition"], sort=False):
        per = {m: g[g["model"] == m] for m in MODELS}
        if any(p.empty for p in per.values()):
            continue
        row = {"factor": factor, "condition": cond, "split": g["split"].iloc[0],
               **{k: g[k].iloc[0] if k in g else None for k in CARRIED}}
        floor = False
        for m, p in per.items():
            iv = t_interval(list(p["drop"]))
            voter = p["baseline"].mean() - iv.mean
            floor |= at_floor(voter)
            row.update({f"{m} float": p["baseline"].mean(), f"{m} voter": voter, f"{m} drop": iv.mean,
                        f"{m} ± 95 %": iv.half})
        diff = welch(list(per["birealnet18"]["drop"]), list(per["reactnet18"]["drop"]))
        diffs.append(None if floor else diff)
        out.append({**row, "seeds": min(len(p) for p in per.values()), "difference": diff.mean,
                    "difference ± 95 %": diff.half, "at_floor": floor})
    verdicts = holm(diffs)
    for r, v in zip(out, verdicts):
        r["ordering"] = ORDERING[AT_FLOOR if r["at_floor"] else v]
    return pd.DataFrame(out)


def deck_difference() -> float:
    """The deck's Bi-RealNet-18 drop minus ReActNet-18's (points), from its data file."""
    d = deck_numbers("main").set_index(["model", "variant"]).top1
    return float(sum(s * (d[m, "baseline"] - d[m, "naive"]) for m, s in (("birealnet18", 1), ("reactnet18", -1))))


def _fmt(r) -> str:
    half = r["difference ± 95 %"]
    acc = (f" (float {r['birealnet18 float']:.0f} / {r['reactnet18 float']:.0f} %, voter "
           f"{r['birealnet18 voter']:.0f} / {r['reactnet18 voter']:.0f} %)" if "birealnet18 voter" in r else "")
    return (f"{r['condition']} {r['difference']:+.1f}" + (" (one seed)" if math.isnan(half) else f" ± {half:.1f}")
            + f"{acc} [{r['ordering']}]")


def _factor(ref: pd.DataFrame, treated: pd.DataFrame) -> str:
    """How the treated conditions' orderings compare with the reference condition's."""
    if treated.empty or ref.empty:
        return "not measured in this profile"
    if (ref["ordering"] == AT_FLOOR).all() or (treated["ordering"] == AT_FLOOR).all():
        return f"{AT_FLOOR} (a network's voter row is within the floor margin of chance)"
    ref, treated = ref[ref["ordering"] != AT_FLOOR], treated[treated["ordering"] != AT_FLOOR]
    ref_o, got, every = set(ref["ordering"]), set(treated["ordering"]), [*ref["ordering"], *treated["ordering"]]
    if "deck's ordering" in got and "deck's ordering" not in ref_o:
        return "reproduces the deck's ordering"
    if "deck's ordering" in ref_o and got - {"deck's ordering"}:
        return "removes the deck's ordering"
    if len(got | ref_o) == 1 and UNRESOLVED not in got:
        return f"does not change the ordering ({next(iter(got))} throughout)"
    if "reversed" in every and "deck's ordering" not in every:  # never the deck's, resolved the other way somewhere
        return f"does not reproduce the deck's ordering (reversed in {every.count('reversed')} of {len(every)})"
    return UNRESOLVED


def factor_verdicts(order: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The verdict on (a) the output-scale convention, (b) the binary downsample, (c) scale / training length,
    (d) a genuine architectural difference, with the intervals each rests on (rows of :func:`ordering_table`).

    (a)-(c) compare conditions with a reference: the ``naive`` row at each k against k = 1; the binary-1x1
    variants against the real-1x1 one of the same recipe; the wide and long points and the 01 baselines against
    that reference. (d): the deck's ordering in every scale-free row of the 01 baselines, at 95 %, is an
    architectural difference. Verdicts: reproduces / removes the deck's ordering, no change, not resolved."""
    naive = order[order["convention"] == "naive"]
    sweep = order[order["k"].notna()]
    ref_recipe = naive[(naive["point"] == "reference") & (naive["kind"] == "real")]
    parts = {
        "a": ("the output-scale convention (the naive voter's bare ±1, weights rescaled by k; validation)",
              sweep[sweep["k"] == 1.0], sweep[sweep["k"] != 1.0]),
        "b": ("the binary 1x1 downsample (naive row, shared recipe; validation)", ref_recipe,
              naive[(naive["point"] == "reference") & (naive["kind"] != "real")]),
        "c": ("scale and training length (naive row: the shared recipe against its wide and long points and the "
              "01 baselines)", ref_recipe, naive[naive["point"].isin(["wide", "long", "01 baselines"])]),
    }
    lines = [f"The deck: Bi-RealNet-18 loses {deck_difference():.1f} points more than ReActNet-18 by substitution; "
             "below, the same difference of drops here (Welch 95 % interval over seeds; the verdicts of all "
             f"{len(order)} rows held at a 5 % family-wise error by Holm's procedure; a row whose voter top-1 is "
             f"within {FLOOR_MARGIN:.0f} points of chance is '{AT_FLOOR}'). Each condition: difference, "
             "float and voter top-1 of Bi-RealNet-18 / ReActNet-18."]
    out = []
    for key, (name, ref, treated) in parts.items():
        v = _factor(ref, treated)
        detail = "; ".join(_fmt(r) for _, r in pd.concat([ref, treated]).iterrows())
        s = f"**({key}) {name[0].upper() + name[1:]}**: {v}." + (f" {detail}." if detail else "")
        if key == "a" and {"deck's ordering", "reversed"} <= set(sweep["ordering"]):
            s += " The ordering changes with k: the `naive` row alone cannot carry the deck's claim."
        elif key == "a" and (sweep["difference"] > 0).any() and (sweep["difference"] < 0).any():
            s += " The sign of the mean difference changes with k, though not resolved at 95 % at every k."
        out.append({"factor": key, "verdict": v, "conditions": len(ref) + len(treated)})
        lines.append(s)
    d = order[order.factor == "d"]
    o = set(d["ordering"])
    v = (AT_FLOOR if o == {AT_FLOOR} else "reproduces the deck's ordering" if o == {"deck's ordering"}
         else "reverses the deck's ordering"
         if o == {"reversed"} else UNRESOLVED) if len(d) else "not measured in this profile"
    detail = "".join(f" {_fmt(r)};" for _, r in d.iterrows()).rstrip(";")
    lines.append(f"**(d) A genuine architectural difference** (the rows that do not depend on the weight scale, on "
                 f"the 01 baselines; test): {v}." + (f"{detail}." if detail else ""))
    out.append({"factor": "d", "verdict": v, "conditions": len(d)})
    return pd.DataFrame(out), lines


def variant_label(condition: str) -> str:
    """A bar label of experiment 3: ``w16-e1-binary1x1, voter 3x3+1x1: naive`` -> ``binary1x1`` over
    ``3x3+1x1: naive`` (the recipe, shared by every bar, left out)."""
    recipe, sep, voter = condition.partition(", voter ")
    if not sep:
        raise ValueError(f"condition {condition!r} is not '<recipe>, voter <layers>: <convention>'")
    return f"{recipe.split('-', 2)[-1]}\n{voter}"


def result_sentence(order: pd.DataFrame, verdict: pd.DataFrame, profile: str, seeds: int) -> str:
    """The notebook's closing sentence: the naive voter's drops at the trained scale, how far rescaling the
    weights moves their difference, and the verdict of each factor."""
    k1 = order[order.condition == "naive, k = 1"]
    ks = order[order["k"].notna()]
    if not len(k1) or not len(ks):
        return "not enough records for a result sentence"
    flip = ks.loc[ks.difference.idxmax()]
    return (f"**Result ({profile}, {seeds} seeds).** At the trained weight scale the naive voter costs "
            f"ReActNet-18 {k1['reactnet18 drop'].iloc[0]:.1f} and Bi-RealNet-18 {k1['birealnet18 drop'].iloc[0]:.1f} "
            f"points (validation); rescaling the weights, which leaves the float networks' predictions unchanged, "
            f"moves the difference of the drops from {ks.difference.min():+.1f} to {ks.difference.max():+.1f} points "
            f"(largest at k = {k_label(flip.k)}). Verdict: " + "; ".join(f"({r.factor}) {r.verdict}" for r in verdict.itertuples())
            + ".")
