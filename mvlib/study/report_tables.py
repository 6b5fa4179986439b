"""The report's tables: records and result files shaped for a reader, rendered as plain HTML.

Every function here takes a frame that another module computed from the data
(:func:`mvlib.study.deck_pattern.main_table`, :func:`mvlib.study.appendix_report.appendix_results`,
a benchmark or synthesis file, ...) and returns a :class:`Table`: few columns, headers in words
with their units, numbers rounded for reading ("–" where there is none, never "-0.0"), a mean
and its 95 % half-width in one cell. Nothing is computed here that changes a number.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from .appendix import DATASET_LABELS, FLOOR, MODEL_LABELS, VARIANT_LABELS as NORM_LABELS

DASH = "–"
MINUS = "−"
ROW_LABELS = {"baseline": "baseline (XNOR + popcount)", "naive": "voter substituted (bare ±1)",
              "naive-alpha": "voter substituted, output × α", "naive-matched": "voter substituted, matched magnitude",
              "naive+recal": "voter substituted + BN recalibration", "retrain-approx": "retrained through the voter",
              "retrain-ste": "retrained through the voter, plain STE"}
TIE_LABELS = {"pos": "tie +1", "neg": "tie −1", "first": "tie: first block"}


MODEL_ORDER = ("reactnet18", "birealnet18", "xnornet18", "reactneta")  # the deck's first table first


def model_rank(model: str) -> int:
    """Where a network's rows go: the deck's first table's order (ReActNet-18, then Bi-RealNet-18)."""
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)


def network(model: str) -> str:
    """``reactnet18`` -> ``ReActNet-18`` (unknown names unchanged)."""
    return MODEL_LABELS.get(model, model)


def number(x, digits: int = 1, signed: bool = False) -> str:
    """``x`` rounded for reading: "–" for a missing value, a true minus sign, and no "-0.0" (a value that rounds
    to zero is printed without a sign)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    x = float(x)
    if round(x, digits) == 0:
        x = 0.0
    text = f"{abs(x):,.{digits}f}"
    if x < 0:
        return MINUS + text
    return ("+" + text) if signed and x > 0 else text


def pm(mean, half, digits: int = 1, signed: bool = False) -> str:
    """``mean ± half`` in one cell; the mean alone where there is no interval (one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if half is None or (isinstance(half, float) and math.isnan(half)):
        return number(mean, digits, signed)
    return f"{number(mean, digits, signed)} ± {number(half, digits)}"


def fanin_label(g) -> str:
    """``"4"`` -> ``G = 4``; ``"4x2"`` -> ``tree 4 × 2``; ``"exact"`` -> ``exact voter``."""
    g = str(g)
    if g == "exact":
        return "exact voter"
    return f"tree {g.replace('x', ' × ')}" if "x" in g else f"G = {g}"


# ---------------------------------------------------------------------------------------------- rendering
STYLE = ("<style>.mv-table{border-collapse:collapse;margin:0.4em 0 0.8em 0;font-size:13px}"
         ".mv-table th,.mv-table td{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right;"
         "vertical-align:top}.mv-table th{background:#f3f3f3;font-weight:600}"
         ".mv-table th.group{text-align:center;border-bottom:1px solid #999}"
         ".mv-table td.text,.mv-table th.text{text-align:left}"
         ".mv-table caption{caption-side:top;text-align:left;font-size:13px;padding-bottom:4px}</style>")


@dataclass
class Table:
    """A table for the report: ``frame`` holds the cells as text under their human headers.

    ``groups``: optional ``[(label, span), ...]`` over the columns (a header row above the column names; a
    column named ``"group · name"`` shows ``name`` under its group). ``text``: the columns aligned left.
    """

    frame: pd.DataFrame
    caption: str = ""
    groups: list[tuple[str, int]] | None = None
    text: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headers(self) -> list[str]:
        return [str(c).split(" · ")[-1] for c in self.frame.columns]

    def to_html(self) -> str:
        esc = html.escape
        out = [STYLE, '<table class="mv-table">']
        if self.caption:
            out.append(f"<caption>{esc(self.caption)}</caption>")
        out.append("<thead>")
        if self.groups:
            out.append("<tr>" + "".join(f'<th class="group" colspan="{n}">{esc(g)}</th>' for g, n in self.groups)
                       + "</tr>")
        out.append("<tr>" + "".join(f'<th class="{"text" if c in self.text else "num"}">{esc(h)}</th>'
                                    for c, h in zip(self.frame.columns, self.headers)) + "</tr></thead><tbody>")
        for _, row in self.frame.iterrows():
            out.append("<tr>" + "".join(f'<td class="{"text" if c in self.text else "num"}">{esc(str(v))}</td>'
                                        for c, v in row.items()) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    _repr_html_ = to_html

    def __repr__(self) -> str:
        return self.frame.to_string(index=False)


def _table(records: list[dict], caption: str = "", text=(), groups=None) -> Table:
    frame = pd.DataFrame(records)
    return Table(frame, caption, groups, tuple(c for c in frame.columns if c in text))


# ---------------------------------------------------------------------------------------------- §1
def main_rows(main: pd.DataFrame) -> Table:
    """The deck's first table beside ours (:func:`mvlib.study.deck_pattern.main_table`), one row per network and
    row: deck, ours (mean ± 95 % over seeds), seeds, the paired change against the same seeds' baseline."""
    recs = [{"Network": network(r["model"]), "Row": ROW_LABELS.get(r["variant"], r["variant"]),
             "Deck top-1 (%)": number(r["deck top1"], 2),
             "Ours top-1 (%)": pm(r["ours top1"], r["± 95 %"]), "Seeds": int(r["seeds"]),
             "Change vs baseline (points)": pm(r["vs baseline"], r["vs baseline ± 95 %"], signed=True)}
            for _, r in main.iterrows() if r["seeds"] > 0 or not math.isnan(r["deck top1"])]
    return _table(recs, text=("Network", "Row"))


def claims_rows(claims: pd.DataFrame) -> Table:
    """The deck's claims (:func:`mvlib.study.deck_pattern.verdicts`): deck, ours with its interval, verdict."""
    recs = [{"Claim": r["claim"], "Network": "both" if r["model"] == "both" else network(r["model"]),
             "Deck (points)": number(r["deck"]), "Ours (points)": pm(r["ours"], r["± 95 %"]),
             "Seeds": int(r["seeds"]), "Verdict": r["verdict"]} for _, r in claims.iterrows()]
    return _table(recs, text=("Claim", "Network", "Verdict"))


# ---------------------------------------------------------------------------------------------- §2
HOW = {"retrained": "retrained through the voter", "naive+recal": "substituted + BN recalibration",
       "naive": "substituted (bare ±1)"}


def hmv_cost_rows(costs: pd.DataFrame, how=("retrained", "naive+recal", "naive")) -> Table:
    """The hierarchical voter's cost against the exact voter (:func:`mvlib.study.report_verdicts.hmv_costs`),
    for the applications in ``how``."""
    costs = costs[costs["how"].isin(how)] if len(costs) else costs
    recs = [{"Network": network(r["model"]), "Voter": f"{fanin_label(r['G'])}, {TIE_LABELS.get(r['tie'], r['tie'])}",
             "Applied": HOW.get(r["how"], r["how"]), "Evaluated on": r["evaluated"],
             "Exact voter top-1 (%)": number(r["exact"]), "HMV top-1 (%)": number(r["hmv"]),
             "Cost (points)": pm(r["cost"], r["half"], signed=True), "Verdict": r["verdict"]}
            for _, r in costs.iterrows()]
    return _table(recs, text=("Network", "Voter", "Applied", "Evaluated on", "Verdict"))


def hmv_sweep_rows(hmv: pd.DataFrame) -> Table:
    """Every substituted row of notebook 04 (:func:`mvlib.study.report.hmv_table`): validation top-1 per network,
    application and fan-in (sorted by number), one column per outer tie rule."""
    from .report import fanin_key
    sub = hmv[hmv["mode"].isin(["naive", "naive+recal"])]
    ties = [t for t in TIE_LABELS if t in set(sub["tie"])]
    recs = []
    sub = sub.sort_values("model", key=lambda c: c.map(model_rank), kind="stable")
    for (model, mode), g in sub.groupby(["model", "mode"], sort=False):
        for fan in sorted(set(g["G"]), key=fanin_key):
            row = {"Network": network(model), "Applied": HOW[mode], "Voter": fanin_label(fan)}
            for t in ties:
                v = g[(g["G"] == fan) & (g["tie"] == t)]["val_top1"]
                row[f"Validation top-1 (%) · {TIE_LABELS[t]}"] = number(v.mean()) if len(v) else DASH
            recs.append(row)
    groups = [("", 3), ("Validation top-1 (%), outer tie rule", len(ties))]
    return _table(recs, text=("Network", "Applied", "Voter"), groups=groups)


# ---------------------------------------------------------------------------------------------- §3
KERNELS = {"xnor": "XNOR + popcount", "mv": "XNOR + majority voter", "hmv": "XNOR + hierarchical voter G = 4"}


def kernel_goal_rows(bench: dict, goals: dict[str, float]) -> Table:
    """At the largest batch: each kernel's speed-up against torch fp32 ``conv2d`` (median and range over the layer
    shapes), kernel only and with the packing of fp32 activations, beside the project's goal where it has one."""
    layers = pd.DataFrame(bench["layers"])
    big = layers[layers["batch"] == layers["batch"].max()]
    recs = []
    for k, name in KERNELS.items():
        for suffix, what in (("ratio", "kernel only"), ("pack_ratio", "with packing")):
            col = f"{k}_{suffix}"
            if col not in big:
                continue
            goal = goals.get(what) if k == "xnor" else None
            med = big[col].median()
            recs.append({"Kernel": name, "Timed": what, "Median speed-up (×)": number(med),
                         "Range over shapes (×)": f"{number(big[col].min())}–{number(big[col].max())}",
                         "Project goal (×)": number(goal, 0) if goal else DASH,
                         "Goal reached": DASH if not goal else ("yes" if med >= goal else "no")})
    return _table(recs, text=("Kernel", "Timed", "Goal reached"))


def kernel_batch_rows(bench: dict) -> Table:
    """Median speed-ups against torch fp32 ``conv2d`` per batch (over the layer shapes)."""
    cols = {"xnor_ratio": "XNOR + popcount", "xnor_pack_ratio": "XNOR + popcount, with packing",
            "mv_ratio": "majority voter", "mv_pack_ratio": "majority voter, with packing",
            "hmv_ratio": "hierarchical voter G = 4"}
    summary = sorted(bench["summary"].items(), key=lambda kv: int(kv[0]))
    recs = [{"Batch": int(b), **{f"× torch · {name}": number(s.get(c), 2) for c, name in cols.items() if c in s},
             "XNOR time / voter time": number(s.get("mv_vs_xnor"), 2)} for b, s in summary]
    n = len(recs[0]) - 2 if recs else 0
    return _table(recs, groups=[("", 1), ("median over the layer shapes, × faster than torch fp32 conv2d", n),
                                ("", 1)])


def kernel_layer_rows(bench: dict) -> Table:
    """Per layer shape at the largest batch: times in milliseconds and speed-ups."""
    layers = pd.DataFrame(bench["layers"])
    big = layers[layers["batch"] == layers["batch"].max()]
    recs = [{"Layer (in→out @ size, stride)": r["shape"].replace("->", "→"),
             "torch fp32 conv2d (ms)": number(1e3 * r["torch_s"], 2),
             "XNOR + popcount (ms)": number(1e3 * r["xnor_s"], 2),
             "Speed-up, kernel only (×)": number(r["xnor_ratio"]),
             "Speed-up, with packing (×)": number(r["xnor_pack_ratio"]),
             "Majority voter speed-up (×)": number(r["mv_ratio"]),
             "torch at % of its fp32 peak": number(100 * r["torch_frac_peak"], 0)
             if "torch_frac_peak" in r else DASH}
            for _, r in big.iterrows()]
    return _table(recs, caption=f"Batch {int(big['batch'].max())}.", text=("Layer (in→out @ size, stride)",))


# ---------------------------------------------------------------------------------------------- §4
def appendix_rows(results: pd.DataFrame) -> Table:
    """The deck's appendix beside ours: one row per network and normalization (and our shortcut-only floors), a
    column group per dataset with the deck, ours (mean ± 95 %) and their difference."""
    datasets = [d for d in DATASET_LABELS if d in set(results.dataset)]
    idx = results.set_index(["model", "dataset", "variant"])
    recs = []
    for model in [m for m in MODEL_LABELS if m in set(results.model)]:
        for variant, label in [*NORM_LABELS.items(), (FLOOR, "shortcut-only floor")]:
            if not any((model, d, variant) in idx.index for d in datasets):
                continue
            row = {"Network": MODEL_LABELS[model], "Normalization": label}
            for d in datasets:
                r = idx.loc[(model, d, variant)] if (model, d, variant) in idx.index else None
                g = DATASET_LABELS[d]
                row[f"{g} · Deck (%)"] = DASH if r is None else number(r.deck_top1)
                row[f"{g} · Ours (%)"] = DASH if r is None else pm(r.top1, r.half)
                row[f"{g} · Seeds"] = DASH if r is None or not r.seeds else int(r.seeds)
            recs.append(row)
    return _table(recs, text=("Network", "Normalization"),
                  groups=[("", 2)] + [(DATASET_LABELS[d], 3) for d in datasets])


# ---------------------------------------------------------------------------------------------- §5
def circuit_label(circuit: str) -> str:
    """``pc_cmp`` -> ``XNOR + popcount + compare``; ``hmv4_pos`` -> ``hierarchical voter G = 4, tie +1``."""
    fixed = {"popcount": "XNOR + popcount (integer out)", "pc_cmp": "XNOR + popcount + compare",
             "pc_thr": "XNOR + popcount + threshold", "mv": "majority voter (exact)"}
    if circuit in fixed:
        return fixed[circuit]
    if circuit.startswith("hmv") and "_" in circuit:
        fan, tie = circuit[3:].split("_", 1)
        kind = "tree" if "x" in fan else "hierarchical voter"
        return f"{kind} {fanin_label(fan).replace('tree ', '')}, {TIE_LABELS.get(tie, tie)}"
    return circuit


def deck_m512_rows(deck: pd.DataFrame) -> Table:
    """The deck's M512 ≈ M4(M128 × 4) and its popcount counterparts, synthesized (notebook 07)."""
    recs = [{"Design (N = 512 inputs)": r["design"], "Area (NAND2 equivalents)": number(r["area_ge"], 0),
             "Logic depth (cells)": int(r["depth"]),
             "Saving vs popcount + compare (%)": number(100 * r["saving_vs_pc_cmp"], 1, signed=True)}
            for _, r in deck.iterrows()]
    return _table(recs, text=("Design (N = 512 inputs)",))


def network_cost_rows(net: pd.DataFrame, circuits=("pc_cmp", "mv", "hmv4_pos", "hmv16_pos")) -> Table:
    """Logic work of a whole ReActNet-18 per image for the main circuits (notebook 07)."""
    t = net[net.circuit.isin(circuits)]
    recs = [{"Circuit": circuit_label(r["circuit"]), "ReActNet-18 width": int(r["width"]),
             "Logic work (M GE-evaluations / image)": number(r["ge_evals_per_image"] / 1e6),
             "Max depth (cells)": int(r["max_depth"]),
             "Saving vs popcount + compare (%)": number(100 * r["saving_vs_pc_cmp"], 1, signed=True)}
            for _, r in t.sort_values(["width", "ge_evals_per_image"], ascending=[True, False]).iterrows()]
    return _table(recs, text=("Circuit",))


# ---------------------------------------------------------------------------------------------- §6
FACTORS = {"a": "(a) output-scale convention (weights × k)", "b": "(b) binary 1×1 downsample",
           "c": "(c) scale and training length", "d": "(d) a genuine architectural difference"}


def factor_rows(verdicts: pd.DataFrame) -> Table:
    """Notebook 08's four factors (:func:`mvlib.study.voter_drop_verdicts.factor_verdicts`): conditions and verdict."""
    recs = [{"Factor": FACTORS.get(r["factor"], r["factor"]), "Conditions compared": int(r["conditions"]),
             "Verdict on the deck's ordering": r["verdict"]} for _, r in verdicts.iterrows()]
    return _table(recs, text=("Factor", "Verdict on the deck's ordering"))


def ordering_rows(order: pd.DataFrame) -> Table:
    """Every condition of notebook 08 (:func:`mvlib.study.voter_drop_verdicts.ordering_table`): both drops and their
    difference with 95 % intervals, and the ordering."""
    order = order.assign(_f=order["factor"].map({k: i for i, k in enumerate(FACTORS)})).sort_values("_f",
                                                                                              kind="stable")
    recs = [{"Factor": f"({r['factor']})", "Condition": r["condition"], "Split": {"val": "validation"}.get(r["split"],
                                                                                                    r["split"]),
             "ReActNet-18 drop (points)": pm(r["reactnet18 drop"], r["reactnet18 ± 95 %"]),
             "Bi-RealNet-18 drop (points)": pm(r["birealnet18 drop"], r["birealnet18 ± 95 %"]),
             "Bi-RealNet-18 − ReActNet-18 (points)": pm(r["difference"], r["difference ± 95 %"], signed=True),
             "Seeds": int(r["seeds"]), "Ordering": r["ordering"]} for _, r in order.iterrows()]
    return _table(recs, text=("Factor", "Condition", "Split", "Ordering"))


# ---------------------------------------------------------------------------------------------- §7
def pareto_rows(points: pd.DataFrame, on_front: pd.Series, front_only: bool = False) -> Table:
    """Notebook 09's designs (:func:`mvlib.study.pareto.points_table`): top-1, logic work, depth, front."""
    recs = []
    for i, r in points.iterrows():
        front = bool(on_front.get(i, False))
        if front_only and not (front or (r["kind"] == "popcount")):
            continue
        recs.append({"Network": network(r["model"]), "Design": r["point"] + (" (degenerate)" if r["degenerate"]
                                                                               else ""),
                     "Seeds": int(r["seeds"]), "Test top-1 (%)": pm(r["top1"], r["top1_half"]),
                     "Logic work (M GE-evaluations / image)": number(r["ge_evals_per_image"] / 1e6),
                     "Depth (cells)": int(r["max_depth"]), "On the front": "yes" if front else "no"})
    table = _table(recs, text=("Network", "Design", "On the front"))
    if front_only and len(table.frame):  # every row is on the front: the column would say nothing
        table.frame = table.frame.drop(columns="On the front")
    return table


# ---------------------------------------------------------------------------------------------- §8
def timing_rows(steps: list[dict], names: dict[str, str]) -> Table:
    """One row per notebook of the study (``done.json`` records): what it does, its wall time, its threads."""
    recs = [{"Notebook": r["step"], "What it does": names.get(r["step"][:2], ""),
             "Wall time (min)": number(float(r["seconds"]) / 60),
             "Threads": str(r.get("torch_threads", "default"))} for r in steps]
    return _table(recs, text=("Notebook", "What it does", "Threads"))


def regime_rows(tables: dict[str, pd.DataFrame], regimes: dict[str, str]) -> Table:
    """The deck's rows at every regime side by side (:func:`mvlib.study.deck_pattern.regime_tables`): deck, then
    per profile its top-1 (mean ± 95 % over seeds; the seed count in brackets); ``regimes`` (``{profile: what its
    baselines are}``) make the caption."""
    keys = list(dict.fromkeys((r["model"], r["variant"]) for t in tables.values() for _, r in t.iterrows()))
    keys.sort(key=lambda k: (model_rank(k[0]), list(ROW_LABELS).index(k[1]) if k[1] in ROW_LABELS else 99))
    recs = []
    for model, variant in keys:
        rec = {"Network": network(model), "Row": ROW_LABELS.get(variant, variant)}
        deck = [r["deck top1"] for t in tables.values() for _, r in t.iterrows()
                if (r["model"], r["variant"]) == (model, variant)]
        rec["Deck top-1 (%)"] = number(deck[0], 2) if deck else DASH
        for profile, t in tables.items():
            hit = t[(t["model"] == model) & (t["variant"] == variant)]
            r = hit.iloc[0] if len(hit) else None
            cell = DASH if r is None or r["seeds"] == 0 else \
                f"{pm(r['ours top1'], r['± 95 %'])} [{int(r['seeds'])}]"
            rec[f"{profile} top-1 (%)"] = cell
        recs.append(rec)
    caption = "; ".join(f"{p}: {regimes[p]}" for p in tables if regimes.get(p))
    return _table(recs, caption=caption, text=("Network", "Row"))
