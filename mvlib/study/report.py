"""Tables for the report, built only from run records, result files and the deck's data file.

No number is typed here: every "ours" value comes from a ``metrics.json``
written by a run (or a benchmark / synthesis file), every "deck" value from
:mod:`mvlib.study.deck`. Rows over seeds and the deck's claims are
:mod:`mvlib.study.deck_pattern`'s; this module adds what only the report
shows: provenance, the hierarchical-voter rows, training curves, kernels and
hardware.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..environment import REPO_ROOT, code_hash
from ..voter_spec import VoterSpec
from .records import all_metrics, resolve_results_dir, run_from_dir
from .summary import latest_per_seed


def show(df: pd.DataFrame, digits: int = 2, index: bool | None = None):
    """Display a table as a reader wants it: ``digits`` decimals, "–" for a missing value, no meaningless index.

    The index is hidden when it is a plain row counter (``index=None``); pass ``index=True`` to keep it.
    """
    from IPython.display import display
    keep = index if index is not None else not isinstance(df.index, pd.RangeIndex)
    styler = df.style.format(precision=digits, na_rep="–", thousands=",")
    display(styler if keep else styler.hide(axis="index"))


def wanted_code(code: str | None = "current") -> str | None:
    """The code hash a report section keeps: the running code's for ``"current"``, any code for None, else ``code``."""
    return code_hash() if code == "current" else code


def relative(path, results_dir="results") -> str:
    """A path as the report prints it: relative to the repository root, or to the results folder's parent when the
    results lie elsewhere (never the absolute path of the machine that ran it)."""
    path = Path(path).resolve()
    for root in (REPO_ROOT, resolve_results_dir(results_dir).parent):
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def records_of(results_dir="results", profile: str = "cpu", code: str | None = "current") -> list[dict]:
    """The latest run per (group, seed) of one profile, from the running code (``code=None``: any code)."""
    want = wanted_code(code)
    return [r for r in latest_per_seed(all_metrics(results_dir))
            if r.get("profile") == profile and (want is None or r.get("code_hash") == want)]


def provenance(rows: list[dict]) -> dict:
    """Commit(s), dirty flags, code hash(es), machines and the date range of the records."""
    envs = [json.loads((Path(r["dir"]) / "env.json").read_text()) for r in rows]
    stamps = sorted(r["run_id"][:15] for r in rows)
    return {"records": len(rows), "commits": sorted({e.get("git_commit") or "?" for e in envs}),
            "dirty": sum(bool(e.get("git_dirty")) for e in envs), "code": sorted({r.get("code_hash") for r in rows}),
            "machines": sorted({e.get("gpu") or e.get("cpu") or "?" for e in envs}),
            "first": stamps[0] if stamps else None, "last": stamps[-1] if stamps else None}


STEP_NAMES = {"01": "baselines", "02": "naive voter", "03": "retraining", "04": "hierarchical voter",
              "05": "kernels", "06": "BN-Free appendix", "07": "hardware cost", "08": "voter drop", "09": "Pareto front",
              "99": "report"}


def step_records(results_dir="results", profile="cpu", code: str | None = None) -> list[dict]:
    """The steps' ``done.json`` records of one profile (the report step left out), of one code when ``code`` is
    given (``"current"``: the running code's)."""
    want = wanted_code(code)
    recs = [json.loads(f.read_text()) for f in
            sorted((resolve_results_dir(results_dir) / "notebooks" / profile).glob("*.done.json"))]
    return [r for r in recs if not r["step"].endswith("report") and (want is None or r.get("code_hash") == want)]


def study_timing(results_dir="results", profile="cpu", code: str | None = None) -> dict | None:
    """The study's measured wall time from the steps' ``done.json`` records, or None when none has run.

    ``wall_s`` is the time during which at least one step ran (steps overlap
    when the pipeline runs several at once, so it is less than ``sum_s``),
    ``span_s`` the span from the first step's start to the last step's end
    (longer than ``wall_s`` when steps ran on separate occasions); the report
    step itself is left out, as it is still running when the report is
    written. Both are None when a record predates start times. ``code``: as
    :func:`step_records`.
    """
    import datetime as dt
    recs = step_records(results_dir, profile, code)
    if not recs:
        return None

    def t(stamp):
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()
    timed = all("started_utc" in r and "finished_utc" in r for r in recs)
    spans = [(t(r["started_utc"]), t(r["finished_utc"])) for r in recs] if timed else []
    return {"steps": {r["step"]: float(r["seconds"]) for r in recs}, "sum_s": sum(float(r["seconds"]) for r in recs),
            "wall_s": busy_seconds(spans) if timed else None,
            "span_s": (max(b for _, b in spans) - min(a for a, _ in spans)) if timed else None,
            "threads": {r["step"]: r.get("torch_threads", "default") for r in recs}}


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of the ``(start, end)`` intervals: the time during which at least one of them ran.

    A step re-executed on a later day (its code reached by a later commit) would otherwise count the days
    between as the study's time."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def occasions_clause(timing: dict) -> str:
    """``""``, or the clause saying the steps ran on several occasions and how long nothing ran between them."""
    span, wall = timing.get("span_s"), timing["wall_s"]
    if span is None or wall is None or span - wall < 60:
        return ""
    return (f"; its notebooks ran on more than one occasion: {span / 60:.1f} min from the first one's start to "
            f"the last one's end, {(span - wall) / 60:.1f} min of it with none running")


def timing_sentence(timing: dict, budget_min: float | None = None) -> str:
    """One line for the report and the README: per-step seconds, the study's wall time, against a budget if given."""
    per = ", ".join(f"{k[:2]} {STEP_NAMES.get(k[:2], k)} {s:.0f} s" for k, s in timing["steps"].items())
    if timing["wall_s"] is None:
        return f"Wall time per notebook: {per}; the whole study {timing['sum_s'] / 60:.1f} min (one at a time)."
    wall = timing["wall_s"] / 60
    overlap = "; notebooks ran concurrently" if timing["wall_s"] < timing["sum_s"] - 60 else ""
    budget = "" if budget_min is None else (
        f": {'within' if wall <= budget_min else 'over'} the {budget_min:.0f}-minute budget")
    return (f"Wall time per notebook: {per} (sum {timing['sum_s'] / 60:.1f} min{overlap}). The whole study took "
            f"**{wall:.1f} min** of wall time while its notebooks ran (report step not counted)"
            f"{occasions_clause(timing)}{budget}.")


def hmv_table(rows: list[dict]) -> pd.DataFrame:
    """Hierarchical-voter rows of notebook 04: G, tie rule, mode, validation / test top-1 (mean over seeds).

    G, tie and mode are read from the variant by :meth:`mvlib.voter_spec.VoterSpec.from_variant`, the inverse of
    the name the run was given."""
    hmv = []
    for r in rows:
        tagged = VoterSpec.from_variant(str(r.get("variant", "")))
        if str(r.get("step", "")).startswith("04") and tagged is not None:
            voter, mode = tagged
            hmv.append({**{k: r.get(k) for k in ("model", "variant", "seed", "val_top1", "top1", "top5")},
                        "G": voter.fanin_text(), "tie": voter.tie, "mode": mode})
    if not hmv:
        return pd.DataFrame()
    df = pd.DataFrame(hmv)
    out = (df.groupby(["model", "mode", "tie", "G", "variant"], as_index=False)
           .agg(val_top1=("val_top1", "mean"), top1=("top1", "mean"), seeds=("seed", "nunique")))
    out["_g"] = out["G"].map(fanin_key)
    return out.sort_values(["model", "mode", "tie", "_g"]).drop(columns="_g").reset_index(drop=True)


def fanin_key(g) -> tuple:
    """Sort key of an outer fan-in as the records write it: ``"2" < "4" < "8" < "16" < "4x2"`` (single levels by
    number, then nested trees by their number of levels and fan-ins), not as text."""
    parts = [int(x) for x in str(g).split("x") if x.strip().isdigit()]
    return (len(parts), tuple(parts)) if parts else (99, ())


def histories(rows: list[dict], steps_variants: list[tuple[str, str]]) -> dict[str, list[dict]]:
    """Training curves (``history.csv``) of the runs of the given (step prefix, variant) pairs, per model and seed."""
    out = {}
    for r in rows:
        for step, variant in steps_variants:
            if str(r.get("step", "")).startswith(step) and r.get("variant") == variant:
                hist = run_from_dir(Path(r["dir"])).history()
                if hist:
                    out[f"{r['model']} {variant} seed {r.get('seed')}"] = hist
    return out


def load_csv_if_present(path: Path) -> pd.DataFrame | None:
    path = Path(path)
    return pd.read_csv(path) if path.is_file() else None


def step_table(step: str, name: str, results_dir="results", profile="cpu",
               code: str | None = "current") -> pd.DataFrame | None:
    """A notebook's table ``results/tables/<step>_<name>_<profile>.csv`` (notebook 08's rows, flips, ...; 09's
    runs, points, ...), or None when it has not run. A table with a ``code_hash`` column keeps only the rows of
    the running code (``code``: as :func:`records_of`), as every other section of the report does."""
    path = resolve_results_dir(results_dir) / "tables" / f"{step}_{name}_{profile}.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    want = wanted_code(code)
    return table[table.code_hash == want] if "code_hash" in table.columns and want is not None else table


def kernel_results(results_dir="results", profile="cpu") -> dict | None:
    """The newest layer-kernel benchmark JSON of this profile under ``results/bench`` (None if absent).

    The ``ci`` profile's files carry a ``_ci`` suffix; other profiles' files do not.
    """
    bench = resolve_results_dir(results_dir) / "bench"
    files = [p for p in bench.glob("*.json") if p.stem.endswith("_ci") == (profile == "ci")]
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        out = json.loads(path.read_text())
        if "layers" in out:  # the same folder holds the engine's and the training benchmarks' files
            out["file"] = str(path)
            return out
    return None


def kernel_tables(bench: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(median ratios vs torch fp32 conv2d per batch, per-layer rows at the largest batch)."""
    summary = pd.DataFrame(bench["summary"]).T
    summary.index.name = "batch"
    layers = pd.DataFrame(bench["layers"])
    big = layers[layers["batch"] == layers["batch"].max()]
    keep = ["shape", "batch", "torch_s", "xnor_s", "xnor_ratio", "xnor_pack_ratio", "mv_ratio", "hmv_ratio",
            "xnor_tmacs", "mv_vs_xnor", "torch_frac_peak", "xnor_frac_peak"]
    return summary, big[[c for c in keep if c in big.columns]].reset_index(drop=True)


def engine_results(results_dir="results", profile="cpu") -> dict | None:
    """The newest fused-engine benchmark JSON (``results/bench/network_*.json``) of this profile, or None."""
    bench = resolve_results_dir(results_dir) / "bench"
    files = [p for p in bench.glob("network_*.json") if p.stem.endswith("_ci") == (profile == "ci")]
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        out = json.loads(path.read_text())
        if "identical_logits" in out and "rows" in out:
            out["file"] = str(path)
            return out
    return None


def trained_check(results_dir="results", profile="cpu") -> dict | None:
    """The newest check of trained networks on the bit kernels (``results/bench/engine_check_<profile>*.json``),
    or None."""
    files = sorted((resolve_results_dir(results_dir) / "bench").glob(f"engine_check_{profile}_*.json"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        return None
    out = json.loads(files[0].read_text())
    out["file"] = str(files[0])
    return out


def hardware_tables(results_dir="results", profile="cpu") -> dict[str, pd.DataFrame]:
    """Notebook 07's tables (``results/hw/<profile>/*.csv``), empty when it has not run."""
    d = resolve_results_dir(results_dir) / "hw" / profile
    return {p.stem: pd.read_csv(p) for p in sorted(d.glob("*.csv"))} if d.is_dir() else {}
