"""The deck's first table beside ours, over seeds, and its claims as verdicts.

The deck (CIFAR-10): ReActNet-18 93.38 → 84.93 (voter substituted) → 92.09
(retrained through it); Bi-RealNet-18 88.77 → 30.07 → 87.66. Its claims,
each checked on our records with the intervals of :mod:`mvlib.study.stats`:

1. substituting the voter costs accuracy (baseline − naive > 0, paired per seed);
2. retraining through the voter wins it back (retrained − naive > 0, paired);
3. retraining ends as close to the baseline as in the deck (baseline − retrained below the deck's 1.1–1.3 points);
4. Bi-RealNet-18 loses more than ReActNet-18 by substitution (difference of the two networks' paired
   drops, Welch interval), for the deck's ``naive`` row and for each other output convention.

Each verdict is "yes", "no" or "not resolved at 95 %". Nothing here is typed
in: our numbers come from ``metrics.json`` records (latest run per seed of
the newest configuration with the running code), the deck's from
:mod:`mvlib.study.deck`.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .deck import deck_numbers
from .stats import AT_FLOOR, UNRESOLVED, Interval, at_floor, holm, paired, t_interval, welch
from .summary import ONE_SEED, Z95, by_seed, difference_interval, select

MODELS = ("reactnet18", "birealnet18")
# variant -> the notebook (step prefix) whose records own it
MAIN_VARIANTS = {"baseline": "01", "naive": "02", "naive-alpha": "02", "naive-matched": "02", "naive+recal": "02",
                 "retrain-approx": "03", "retrain-ste": "03"}
CONVENTIONS = ("naive", "naive-alpha", "naive-matched", "naive+recal")


def seed_values(rows: list[dict], profile: str, model: str, variant: str, metric: str = "top1",
                code: str | None = "current") -> dict[int, float]:
    """``{seed: metric}`` of one main row (empty when it has not run)."""
    return by_seed(select(rows, step=MAIN_VARIANTS[variant], model=model, variant=variant, profile=profile,
                          code=code), metric)


def main_table(rows: list[dict], profile: str, code: str | None = "current", models=MODELS) -> pd.DataFrame:
    """The deck's six rows, then our added rows: mean ± 95 % over seeds, and the paired change vs the baseline."""
    deck = deck_numbers("main").set_index(["model", "variant"])
    out = []
    for model in models:
        base = seed_values(rows, profile, model, "baseline", code=code)
        for variant in MAIN_VARIANTS:
            vals = seed_values(rows, profile, model, variant, code=code)
            if not vals and (model, variant) not in deck.index:
                continue
            top5 = seed_values(rows, profile, model, variant, "top5", code=code)
            iv, iv5 = t_interval(list(vals.values())), t_interval(list(top5.values()))
            change = paired(vals, base) if variant != "baseline" else Interval(math.nan, math.nan, math.nan, 0)
            d1 = deck.top1.get((model, variant), math.nan)
            out.append({"model": model, "variant": variant, "deck top1": d1,
                        "ours top1": iv.mean, "std": iv.std, "± 95 %": iv.half, "seeds": iv.n,
                        "Δ vs deck": iv.mean - d1, "vs baseline": change.mean, "vs baseline ± 95 %": change.half,
                        "deck top5": deck.top5.get((model, variant), math.nan), "ours top5": iv5.mean})
    return pd.DataFrame(out)


def _drop(rows, profile, model, variant, code) -> Interval:
    return paired(seed_values(rows, profile, model, "baseline", code=code),
                  seed_values(rows, profile, model, variant, code=code))


def verdicts(rows: list[dict], profile: str, code: str | None = "current") -> tuple[pd.DataFrame, list[str]]:
    """One row per claim and network: our interval, the deck's value, the verdict; plus plain sentences.

    The claims are one family: their verdicts hold a 5 % family-wise error (Holm). "Bi-RealNet-18 loses
    more" is :data:`AT_FLOOR` where either network's voter row is within the floor margin of chance.
    """
    deck = deck_numbers("main").set_index(["model", "variant"])
    claims, stories = [], []
    drops: dict[str, dict[str, dict[int, float]]] = {}
    one_seed: dict[str, dict[str, Interval]] = {}  # a drop measured on one seed, its image-sampling interval
    voter_top1: dict[tuple[str, str], float] = {}
    covers = set()  # what the intervals cover: seeds, or the sampling of the images of one seed

    def runs(model, variant):
        return select(rows, step=MAIN_VARIANTS[variant], model=model, variant=variant, profile=profile, code=code)

    for model in MODELS:
        base_runs, naive_runs, ret_runs = runs(model, "baseline"), runs(model, "naive"), runs(model, "retrain-approx")
        base, naive, ret = by_seed(base_runs), by_seed(naive_runs), by_seed(ret_runs)
        if not (base and naive):
            continue
        d_deck = {v: float(deck.top1[(model, v)]) for v in ("baseline", "naive", "retrain-approx")}
        cost, how = difference_interval(base_runs, naive_runs)
        covers.add(how)
        claims.append({"claim": "substitution costs accuracy", "model": model, "deck": d_deck["baseline"]
                       - d_deck["naive"], "ours": cost.mean, "± 95 %": cost.half, "seeds": cost.n, "_iv": cost})
        if ret:
            rec, gap = difference_interval(ret_runs, naive_runs)[0], difference_interval(base_runs, ret_runs)[0]
            deck_gap = d_deck["baseline"] - d_deck["retrain-approx"]
            claims.append({"claim": "retraining wins accuracy back", "model": model,
                           "deck": d_deck["retrain-approx"] - d_deck["naive"], "ours": rec.mean,
                           "± 95 %": rec.half, "seeds": rec.n, "_iv": rec})
            # "as close as the deck": our gap below the deck's (yes), above it (no), or the interval straddles it
            closer = Interval(deck_gap - gap.mean, gap.std, gap.half, gap.n, gap.df)
            claims.append({"claim": "retraining ends as close to the baseline as in the deck (gap)", "model": model,
                           "deck": deck_gap, "ours": gap.mean, "± 95 %": gap.half, "seeds": gap.n, "_iv": closer})
            stories.append((model, d_deck, base, naive, ret, cost, rec, gap, deck_gap, len(claims) - 3))
        for conv in CONVENTIONS:
            conv_runs = runs(model, conv)
            v = by_seed(conv_runs)
            if v:
                drops.setdefault(conv, {})[model] = {s: base[s] - v[s] for s in base.keys() & v.keys()}
                one_seed.setdefault(conv, {})[model] = difference_interval(base_runs, conv_runs)[0]
                voter_top1[(conv, model)] = sum(v.values()) / len(v)
    deck_diff = (float(deck.top1[("birealnet18", "baseline")] - deck.top1[("birealnet18", "naive")])
                 - float(deck.top1[("reactnet18", "baseline")] - deck.top1[("reactnet18", "naive")]))
    for conv, per_model in drops.items():
        if set(MODELS) <= set(per_model):
            diff = welch(list(per_model["birealnet18"].values()), list(per_model["reactnet18"].values()))
            if min(len(d) for d in per_model.values()) < 2:  # one seed a network: the images' sampling only
                b, r = one_seed[conv]["birealnet18"], one_seed[conv]["reactnet18"]
                se = math.hypot(b.std, r.std)
                diff = Interval(b.mean - r.mean, se, Z95 * se, 1)
            floor = any(at_floor(voter_top1[(conv, m)]) for m in MODELS)
            claims.append({"claim": f"Bi-RealNet-18 loses more than ReActNet-18 ({conv})", "model": "both",
                           "deck": deck_diff if conv == "naive" else math.nan, "ours": diff.mean,
                           "± 95 %": diff.half, "seeds": diff.n, "_iv": None if floor else diff, "_floor": floor})
    for c, v in zip(claims, holm([c["_iv"] for c in claims])):
        c["verdict"] = AT_FLOOR if c.pop("_floor", False) else v
        c.pop("_iv")
    lines = [f"Verdicts at a 5 % family-wise error over the {len(claims)} claims below (Holm)."
             + (f" One training seed: each interval is 1.96 standard errors of the binomial sampling of the "
                f"{_images(rows, profile, code)} test images, taken as independent between the rows it compares; "
                f"it covers the sampling of the images only, not the spread over training seeds."
                if ONE_SEED in covers else "")] if claims else []
    for model, d_deck, base, naive, ret, cost, rec, gap, deck_gap, i in stories:
        both = [claims[i]["verdict"], claims[i + 1]["verdict"]]
        pattern = "yes" if both == ["yes", "yes"] else ("no" if "no" in both else UNRESOLVED)
        lines.append(
            f"{model}: deck {d_deck['baseline']:.2f} → {d_deck['naive']:.2f} → {d_deck['retrain-approx']:.2f}; "
            f"ours {_m(base)} → {_m(naive)} → {_m(ret)} ({_over(cost.n)}). Substitution costs "
            f"{cost.fmt(1)} points, retraining wins back {rec.fmt(1)} and ends {gap.fmt(1)} below the baseline "
            f"(deck: {deck_gap:.1f}). Drop-then-recovery pattern: **{pattern}**.")
    order = [c for c in claims if c["claim"].startswith("Bi-RealNet-18 loses more")]
    if order:
        parts = []
        for c in order:
            conv = c["claim"].split("(")[1].rstrip(")")
            tops = " / ".join(f"{voter_top1[(conv, m)]:.1f}" for m in ("birealnet18", "reactnet18"))
            spread = f"± {c['± 95 %']:.1f} points" if not math.isnan(c["± 95 %"]) else "points, one seed"
            parts.append(f"{conv}: {c['verdict']} ({c['ours']:+.1f} {spread}; voter top-1 {tops} %)")
        lines.append(f"In the deck Bi-RealNet-18 loses {deck_diff:.1f} points more than ReActNet-18 by substitution. "
                     "Does it lose more here (difference of the drops, Welch 95 % interval; Bi-RealNet-18 / "
                     "ReActNet-18 voter top-1 beside it)? " + "; ".join(parts) + ".")
    return pd.DataFrame(claims), lines


def _over(n: int) -> str:
    return "one seed" if n == 1 else f"means over {n} seeds"


def _images(rows: list[dict], profile: str, code) -> str:
    """The test-image counts of a profile's baselines, as the verdict names them (``10,000``)."""
    n = sorted({int(r["test_images"]) for r in select(rows, step="01", variant="baseline", profile=profile, code=code)
                if r.get("test_images")})
    return "/".join(f"{x:,}" for x in n) or "evaluated"


def _m(vals: dict[int, float]) -> str:
    return f"{sum(vals.values()) / len(vals):.2f}" if vals else "–"


def pattern_summary(rows: list[dict[str, Any]], profile: str) -> dict[str, str]:
    """``{model: verdict}`` of the drop-then-recovery pattern (for the README's generated block)."""
    table, _ = verdicts(rows, profile)
    out = {}
    for model in MODELS:
        sub = table[(table.get("model") == model)] if not table.empty else table
        v = list(sub[sub.claim.isin(["substitution costs accuracy", "retraining wins accuracy back"])].verdict) \
            if not sub.empty else []
        out[model] = "yes" if v == ["yes", "yes"] else ("no" if "no" in v else UNRESOLVED)
    return out


# ---------------------------------------------------------------------------------------------- regimes
REGIMES = ("paper", "long", "cpu")  # the profiles the deck's table is shown at, the deck's own regime first


def regime_of(rows: list[dict[str, Any]], profile: str) -> str:
    """What the profile's baselines are, from their records: ``width 16, 20,000 training images, 4 epochs`` (each
    value once; several values where the networks differ), or ``no baseline`` when none has run."""
    import json
    from pathlib import Path

    base = [r for r in rows if r.get("profile") == profile and r.get("variant") == "baseline"
            and str(r.get("step", "")).startswith("01")]
    if not base:
        return "no baseline"

    def values(read):
        seen = list(dict.fromkeys(read(r) for r in base))
        return "/".join(f"{v:,}" if isinstance(v, int) else str(v) for v in seen if v is not None)

    def width(r):
        p = Path(r["dir"]) / "params.json" if r.get("dir") else None
        return json.loads(p.read_text())["identity"]["params"].get("width") if p and p.is_file() else None

    parts = [(values(width), "width {}"), (values(lambda r: r.get("train_images")), "{} training images"),
             (values(lambda r: r.get("epochs")), "{} epochs")]
    return ", ".join(form.format(v) for v, form in parts if v) or "baselines of unknown size"


def regime_tables(rows_of: dict[str, list[dict[str, Any]]], code: str | None = "current") -> dict[str, pd.DataFrame]:
    """:func:`main_table` of each profile in ``rows_of`` (``{profile: records}``) that has a baseline, in the order
    of :data:`REGIMES` (profiles outside it after them)."""
    order = [p for p in REGIMES if p in rows_of] + [p for p in rows_of if p not in REGIMES]
    out = {}
    for p in order:
        table = main_table(rows_of[p], p, code=code)
        if not table.empty and table["ours top1"].notna().any():
            out[p] = table
    return out
