"""Tables for the report, built only from run records and the deck's data file.

No number is typed here: every "ours" value comes from a ``metrics.json``
written by a run, every "deck" value from :mod:`mvlib.study.deck`. Where one
configuration ran more than once, the latest run is taken and the table says
how many there were; where the same configuration ran with several seeds, the
table gives mean ± std over seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .deck import binomial_se, deck_numbers
from .records import Run, resolve_results_dir


def collect_runs(results_dir="results") -> pd.DataFrame:
    """One row per finished run: its metrics, its config hash and seed, and its folder."""
    results = resolve_results_dir(results_dir)
    rows = []
    for mpath in sorted(results.glob("runs/*/*/metrics.json")):
        m = json.loads(mpath.read_text())
        ppath = mpath.with_name("params.json")
        p = json.loads(ppath.read_text()) if ppath.is_file() else {}
        cfg_wo_seed = {k: v for k, v in p.items() if k not in ("seed", "config_hash")}
        rows.append({**{k: v for k, v in m.items() if not isinstance(v, (dict, list))},
                     "seed": p.get("seed"), "config_hash": p.get("config_hash"),
                     "config_wo_seed": json.dumps(cfg_wo_seed, sort_keys=True, default=str),
                     "dir": str(mpath.parent)})
    return pd.DataFrame(rows)


def latest_per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """Latest run of each configuration (run ids start with a UTC timestamp), with a count of repeats."""
    if runs.empty:
        return runs
    runs = runs.sort_values("run_id")
    counts = runs.groupby("config_hash")["run_id"].transform("count")
    out = runs.assign(repeats=counts).groupby("config_hash", as_index=False).tail(1)
    return out.reset_index(drop=True)


def summarize_seeds(runs: pd.DataFrame, keys=("step", "model", "variant", "profile", "dataset")) -> pd.DataFrame:
    """Mean, std and count over seeds of the same configuration (latest run of each)."""
    latest = latest_per_config(runs)
    if latest.empty:
        return latest
    g = latest.groupby(list(keys) + ["config_wo_seed"], as_index=False)
    out = g.agg(top1=("top1", "mean"), top1_std=("top1", "std"), top5=("top5", "mean"), seeds=("top1", "count"),
                test_images=("test_images", "max"), repeats=("repeats", "max"), run_id=("run_id", "last"),
                dir=("dir", "last"))
    return out.drop(columns="config_wo_seed")


def _pick(ours: pd.DataFrame, model: str, variant: str, dataset: str, step_prefix: str | None = None):
    sel = ours[(ours["model"] == model) & (ours["variant"] == variant) & (ours["dataset"] == dataset)]
    if step_prefix:
        sel = sel[sel["step"].str.startswith(step_prefix)]
    return None if sel.empty else sel.sort_values("run_id").iloc[-1]


def _uncertainty(row) -> float:
    if row["seeds"] > 1:
        return float(row["top1_std"])
    return binomial_se(row["top1"], int(row["test_images"]))


def main_step(variant: str) -> str:
    """The notebook that owns a main-table variant (notebook 04 repeats some on a test subset)."""
    if variant == "baseline":
        return "01"
    return "03" if variant.startswith("retrain") else "02"


def main_table(results_dir="results", profile="cpu", extra_variants=("naive-alpha", "naive-matched", "naive+recal",
                                                                        "retrain-ste")) -> pd.DataFrame:
    """The deck's first table (6 rows) beside this project's rows, then our added rows."""
    runs = collect_runs(results_dir)
    if runs.empty:
        return pd.DataFrame()
    ours = summarize_seeds(runs[runs["profile"] == profile])
    deck = deck_numbers("main")
    rows = []
    for _, d in deck.iterrows():
        rows.append(_row(d["model"], d["variant"], d["top1"], d["top5"],
                         _pick(ours, d["model"], d["variant"], "cifar10", main_step(d["variant"]))))
    for model in deck["model"].unique():
        for v in extra_variants:
            r = _pick(ours, model, v, "cifar10", main_step(v))
            if r is not None:
                rows.append(_row(model, v, None, None, r))
    return pd.DataFrame(rows)


def pattern_inputs(main: pd.DataFrame) -> dict[str, dict[str, float]]:
    """From :func:`main_table`: per model, our top-1 of ``baseline``, ``naive``, ``retrain-approx`` (complete models only).

    The input of :func:`mvlib.study.voter_study.deck_pattern`.
    """
    if main.empty:
        return {}
    ours = {m: {v: r["ours top1"] for v, r in g.set_index("variant").iterrows()} for m, g in main.groupby("model")}
    return {m: d for m, d in ours.items() if all(pd.notna(d.get(v)) for v in ("baseline", "naive", "retrain-approx"))}


def step_seconds(results_dir="results", profile="cpu") -> dict[str, float]:
    """Wall seconds of each executed notebook of a profile (``results/notebooks/<profile>/*.done.json``)."""
    out = {}
    for f in sorted((Path(results_dir) / "notebooks" / profile).glob("*.done.json")):
        rec = json.loads(f.read_text())
        out[rec["step"]] = float(rec["seconds"])
    return out


def _row(model, variant, deck1, deck5, r) -> dict:
    row = {"model": model, "variant": variant, "deck top1": deck1, "ours top1": None, "± (s.e. or std)": None,
           "Δ top1": None, "deck top5": deck5, "ours top5": None, "seeds": None, "runs of config": None, "run": None}
    if r is not None:
        row.update({"ours top1": round(float(r["top1"]), 2), "± (s.e. or std)": round(_uncertainty(r), 2),
                    "ours top5": round(float(r["top5"]), 2), "seeds": int(r["seeds"]),
                    "runs of config": int(r["repeats"]), "run": r["run_id"]})
        if deck1 is not None and not pd.isna(deck1):
            row["Δ top1"] = round(float(r["top1"]) - float(deck1), 2)
    return row


def hmv_table(results_dir="results", profile="cpu") -> pd.DataFrame:
    """Hierarchical-voter rows: G, tie rule, substituted / retrained accuracy per model."""
    runs = collect_runs(results_dir)
    if runs.empty:
        return pd.DataFrame()
    ours = summarize_seeds(runs[(runs["profile"] == profile) & runs["variant"].str.startswith("hmv-")
                                & runs["step"].str.startswith("04")])
    if ours.empty:
        return ours
    parts = ours["variant"].str.extract(r"hmv-g(?P<G>[0-9x]+)-tie(?P<tie>[a-z]+)-(?P<mode>.+)")
    out = pd.concat([ours[["model", "variant"]], parts, ours[["top1", "top5", "test_images", "run_id"]]], axis=1)
    return out.sort_values(["model", "mode", "tie", "G"]).reset_index(drop=True)


def run_histories(table: pd.DataFrame, results_dir="results") -> dict[str, list[dict]]:
    """Training curves of every run in a table that has them (evaluation-only rows have none)."""
    results = resolve_results_dir(results_dir)
    out = {}
    for _, r in table.dropna(subset=["run"]).iterrows():
        for d in results.glob(f"runs/*/{r['run']}"):
            run = Run(d.parent.name, d.name, d, d, {})
            hist = run.history()
            if hist:
                out[f"{r['model']} {r['variant']}"] = hist
    return out


def load_csv_if_present(path: Path) -> pd.DataFrame | None:
    path = Path(path)
    return pd.read_csv(path) if path.is_file() else None


def kernel_results(results_dir="results", profile="cpu") -> dict | None:
    """The newest kernel benchmark JSON of this profile under ``results/bench`` (None if absent).

    The ``ci`` profile's files carry a ``_ci`` suffix; other profiles' files do not.
    """
    bench = resolve_results_dir(results_dir) / "bench"
    files = [p for p in bench.glob("*.json") if p.stem.endswith("_ci") == (profile == "ci")]
    if not files:
        return None
    path = max(files, key=lambda p: p.stat().st_mtime)
    out = json.loads(path.read_text())
    out["file"] = str(path)
    return out


def kernel_tables(bench: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(median ratios vs torch fp32 conv2d per batch, per-layer rows at the largest batch)."""
    summary = pd.DataFrame(bench["summary"]).T
    summary.index.name = "batch"
    layers = pd.DataFrame(bench["layers"])
    big = layers[layers["batch"] == layers["batch"].max()]
    keep = ["shape", "batch", "torch_s", "xnor_s", "xnor_ratio", "xnor_pack_ratio", "mv_ratio", "hmv_ratio",
            "xnor_tmacs", "mv_vs_xnor", "torch_frac_peak", "xnor_frac_peak"]
    return summary, big[[c for c in keep if c in big.columns]].reset_index(drop=True)


def hardware_tables(results_dir="results", profile="cpu") -> dict[str, pd.DataFrame]:
    """Notebook 07's tables (``results/hw/<profile>/*.csv``), empty when it has not run."""
    d = resolve_results_dir(results_dir) / "hw" / profile
    return {p.stem: pd.read_csv(p) for p in sorted(d.glob("*.csv"))} if d.is_dir() else {}
