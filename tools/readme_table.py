"""Regenerate the README's generated blocks from the results: ``python tools/readme_table.py [profile]``.

Each block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and is replaced
whole (the README is rewritten atomically; text outside the blocks is kept):

* ``results`` - the report's main table, means over seeds with 95 % intervals (:func:`mvlib.study.deck_pattern.main_table`),
* ``pattern`` - the deck's claims with their verdicts (:func:`mvlib.study.deck_pattern.verdicts`),
* ``timings`` - wall seconds per executed notebook (``results/notebooks/<profile>/*.done.json``),
* ``kernels`` - the kernel benchmark's headline (``results/bench/``, as the report reads it),
* ``train_voters`` - training-step images/s through each voter (``results/bench/train_voters_cpu.json``),
* ``appendix`` - the BN / w/o BN / BN-Free pattern statement (:func:`mvlib.study.appendix_report.pattern_statement`),
* ``voter_drop`` - notebook 08's factor verdicts (:func:`mvlib.study.voter_drop_verdicts.factor_verdicts`),
* ``engine`` - the inference engine's network benchmark (``results/bench/network_*.json``, newest).

A block whose source has not run for the profile is left as it is.

Every number comes from a run record or a pipeline record: nothing is typed in.
"""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cuda_numba.bench_machine import binary_peak_text  # noqa: E402
from cuda_numba.bench_network import summary_text  # noqa: E402
from mvlib.environment import code_hash  # noqa: E402
from mvlib.files import write_atomic  # noqa: E402
from mvlib.study import appendix_report, pareto, report  # noqa: E402
from mvlib.study import voter_drop_verdicts as vdv  # noqa: E402
from mvlib.study.deck_pattern import main_table, verdicts  # noqa: E402
from mvlib.study.records import all_metrics  # noqa: E402


def markdown_table(t) -> str:
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join("" if v is None or v != v else (f"{v:.2f}" if isinstance(v, float) else str(v))
                                       for v in r) + " |")
    return "\n".join(lines)


def results_block(main) -> str:
    return markdown_table(main.drop(columns=["std"]))


def pattern_block(claims, sentences) -> str:
    t = claims[["claim", "model", "deck", "ours", "± 95 %", "seeds", "verdict"]]
    return markdown_table(t) + "\n\n" + "\n".join(f"- {s}" for s in sentences)


def timings_block(timing: dict) -> str:
    return report.timing_sentence(timing, budget_min=90) + " Environment setup not counted."


def kernels_block(bench: dict) -> str:
    """The kernel benchmark's headline: batch-128 medians, per-shape range, roofline, network, small batches."""
    s, peak, net = bench["summary"]["128"], bench["peak"], bench.get("network")
    rows = [r for r in bench["layers"] if r["batch"] == 128]
    lo, hi = min(r["xnor_ratio"] for r in rows), max(r["xnor_ratio"] for r in rows)
    big = [r for r in rows if r["cin"] >= 128]
    t_lo, t_hi = min(r["torch_frac_peak"] for r in big), max(r["torch_frac_peak"] for r in big)
    m = bench["machine"]
    # the FMA micro-kernel's peak (cuda_numba.roofline); a results file of the earlier roofline has torch's matmul
    fp32 = "the fp32 FMA micro-kernel" if "torch_mm_gmacs" in peak else "torch's fp32 matmul"
    small = ", ".join(f"{bench['summary'][b]['xnor_ratio']:.1f}× at batch {b}" for b in ("16", "1") if b in bench["summary"])
    return (f"  {m['threads']} threads, {m['clock']} time, best of {bench['reps']} interleaved calls, batch 128, median over "
            f"the seven 3×3 shapes: XNOR + popcount **{s['xnor_ratio']:.2f}×** torch fp32 `conv2d` kernel-only "
            f"({lo:.1f}–{hi:.1f}× per shape), **{s['xnor_pack_ratio']:.1f}×** including the packing of the fp32 "
            f"activations, MV {s['mv_ratio']:.1f}× (XNOR/MV time {s['mv_vs_xnor']:.2f}), HMV G=4 {s['hmv_ratio']:.1f}×; "
            + (f"a converted ReActNet-18 (width {net['width']}, batch {net['batch']}) runs at {net['speedup']:.2f}× the "
               f"float model's images/s (identical logits: {net['identical_logits']}). " if net else "")
            + f"The same run measures a roofline: the binary peak is {binary_peak_text(peak)}, "
            f"{fp32} at {peak['fp32_gmacs']:.0f} GMAC/s, a ratio of "
            f"**{peak['ceiling']:.1f}×**; torch's convolutions on the 128–512-channel layers run at "
            f"{100 * t_lo:.0f}–{100 * t_hi:.0f} % of that fp32 figure"
            + (", so it is not torch's peak on this CPU and the ratio is no upper bound on the speed-up. "
               if t_hi > 1.0 else
               f", so the ratio bounds what an XOR-popcount kernel can show against them: the goals of 20× "
               f"(kernel-only) and 10× (with packing) lie {'above' if peak['ceiling'] < 20 else 'within'} it. ")
            + f"Small batches are overhead-bound: {small}.")


def train_voters_block(path: Path) -> str:
    """Training-step images/s through each voter (``python -m mvlib.bench.train_throughput --voters ...``)."""
    d = json.loads(path.read_text())
    env = d["environment"]
    per_model: dict[str, list[str]] = {}
    for r in d["rows"]:
        per_model.setdefault(f"{r['model']} (width {r['width']}, batch {r['batch']})", []).append(
            f"{r.get('voter', 'none')} {r['mvlib_img_s']:.0f}")
    parts = "; ".join(f"{m}: " + ", ".join(v) for m, v in per_model.items())
    return (f"  Training through the voters (retraining's step; `{path}`, {env['threads']} threads, img/s by voter): "
            f"{parts}.")


def appendix_block(rows, profile) -> str | None:
    res = appendix_report.appendix_results(rows, profile)
    return None if res.empty else appendix_report.pattern_statement(res)


def voter_drop_block(profile) -> str | None:
    """Notebook 08's verdicts, from its rows table (records of the running code only, as the report reads them)."""
    rows = report.step_table("08_voter_drop", "rows", "results", profile)
    return None if rows is None or rows.empty else "\n\n".join(vdv.factor_verdicts(vdv.ordering_table(rows))[1])


def pareto_block(profile) -> str | None:
    """Notebook 09's verdict, recomputed from its runs and cost tables (records of the running code only)."""
    runs = report.step_table("09_voter_pareto", "runs", "results", profile)
    costs = report.step_table("09_voter_pareto", "costs", "results", profile)
    if runs is None or runs.empty or costs is None:
        return None
    runs = pareto.runs_from_csv(runs)
    points = pareto.points_table(runs, costs)
    front = points[pareto.front(points)].sort_values(["model", "ge_evals_per_image"])
    note = pareto.recipe_note(all_metrics("results"), profile, code_hash())
    lines = [f"- {line.strip()}" for line in
             pareto.verdict(runs, points, pareto.studied_width(points), note).splitlines()]
    lines.append("- On the front (logic work): " + "; ".join(
        f"{m}: " + ", ".join(g.point) for m, g in front.groupby("model", sort=False)) + ".")
    timing = report.study_timing("results", profile)
    if timing and "09_voter_pareto" in timing["steps"] and timing["wall_s"]:
        lines.append(f"- Notebook 09 took {timing['steps']['09_voter_pareto'] / 60:.1f} min in the committed run; "
                     f"the whole study {timing['wall_s'] / 60:.1f} min (the timing block above).")
    return "\n".join(lines)


def engine_block() -> str | None:
    files = sorted(Path("results/bench").glob("network_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    return f"  From `{files[-1]}`:\n\n" + "\n".join(f"  - {line}" for line in
                                                      summary_text(json.loads(files[-1].read_text())).splitlines())


def replace_block(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"README.md has no <!-- generated:{name} --> block")
    return pat.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main(profile: str = "cpu", readme: Path = Path("README.md")) -> None:
    rows = report.records_of("results", profile)
    main_t = main_table(rows, profile)
    claims, sentences = verdicts(rows, profile)
    text = readme.read_text()
    text = replace_block(text, "results", results_block(main_t))
    text = replace_block(text, "pattern", pattern_block(claims, sentences))
    text = replace_block(text, "timings", timings_block(report.study_timing("results", profile)))
    voters_json = Path("results/bench/train_voters_cpu.json")
    if profile == "cpu" and voters_json.is_file():
        text = replace_block(text, "train_voters", train_voters_block(voters_json))
    bench = report.kernel_results("results", profile)
    if bench is not None:
        text = replace_block(text, "kernels", kernels_block(bench))
    for name, body in (("appendix", appendix_block(rows, profile)), ("voter_drop", voter_drop_block(profile)),
                       ("engine", engine_block()), ("pareto", pareto_block(profile))):
        if body is not None:
            text = replace_block(text, name, body)
    write_atomic(readme, text)
    print(f"updated {readme} from the {profile} results")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
