"""The report's shaping, verdict and layout functions on small frames: headers in words, numbers for reading,
intervals clipped to 0-100 %, labels that do not overlap, verdicts built from the numbers."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mvlib.study import appendix  # noqa: E402
from mvlib.study import plots_layout as pl  # noqa: E402
from mvlib.study import report  # noqa: E402
from mvlib.study import report_tables as rt  # noqa: E402
from mvlib.study import report_verdicts as rv  # noqa: E402


def test_numbers_read_without_minus_zero():
    assert rt.number(-0.04) == "0.0" and rt.number(-0.04, signed=True) == "0.0"
    assert rt.number(-1.26) == "−1.3" and rt.number(2.5, signed=True) == "+2.5"
    assert rt.number(float("nan")) == rt.number(None) == "–"
    assert rt.number(4592.667, 0) == "4,593"
    assert rt.pm(56.5567, 2.3946) == "56.6 ± 2.4" and rt.pm(50.29, float("nan")) == "50.3"
    assert rt.pm(-0.03, 1.2, signed=True) == "0.0 ± 1.2"


def test_fanins_sort_by_number_not_as_text():
    assert sorted(["16", "2", "4", "4x2", "8"], key=report.fanin_key) == ["2", "4", "8", "16", "4x2"]
    assert [rt.fanin_label(g) for g in ("2", "4x2", "exact")] == ["G = 2", "tree 4 × 2", "exact voter"]
    assert rt.circuit_label("hmv4_pos") == "hierarchical voter G = 4, tie +1"
    assert rt.circuit_label("pc_cmp") == "XNOR + popcount + compare"


def _main():
    nan = math.nan
    return pd.DataFrame([
        {"model": "reactnet18", "variant": "baseline", "deck top1": 93.38, "ours top1": 56.56, "± 95 %": 2.39,
         "seeds": 3, "vs baseline": nan, "vs baseline ± 95 %": nan},
        {"model": "reactnet18", "variant": "naive", "deck top1": 84.93, "ours top1": 14.66, "± 95 %": 10.28,
         "seeds": 3, "vs baseline": -41.9, "vs baseline ± 95 %": 8.26},
        {"model": "reactnet18", "variant": "naive-alpha", "deck top1": nan, "ours top1": nan, "± 95 %": nan,
         "seeds": 0, "vs baseline": nan, "vs baseline ± 95 %": nan}])


def test_main_table_has_human_headers_and_drops_rows_that_ran_nowhere():
    t = rt.main_rows(_main())
    assert t.headers == ["Network", "Row", "Deck top-1 (%)", "Ours top-1 (%)", "Seeds", "Change vs baseline (points)"]
    assert len(t.frame) == 2  # naive-alpha: not in the deck and not run
    assert t.frame.iloc[1].tolist() == ["ReActNet-18", "voter substituted (bare ±1)", "84.93", "14.7 ± 10.3", 3,
                                        "−41.9 ± 8.3"]
    html = t.to_html()
    assert "<th" in html and "index" not in html and "vs baseline ±" not in html


def test_appendix_table_puts_each_dataset_over_its_own_columns():
    rows = []
    for d in ("cifar10", "cifar100"):
        for v, top in (("bn", 40.0), ("nobn", 30.0), ("bnfree", 35.0), (appendix.FLOOR, 20.0)):
            rows.append({"model": "reactnet18", "dataset": d, "variant": v, "deck_top1": math.nan
                         if v == appendix.FLOOR else 90.0, "top1": top, "half": 1.0, "seeds": 1})
    t = rt.appendix_rows(pd.DataFrame(rows))
    assert t.groups == [("", 2), ("CIFAR-10", 3), ("CIFAR-100", 3)]
    assert t.headers == ["Network", "Normalization"] + ["Deck (%)", "Ours (%)", "Seeds"] * 2
    assert t.frame["Normalization"].tolist() == ["BN", "w/o BN", "BN-Free", "shortcut-only floor"]
    html = t.to_html()
    assert '<th class="group" colspan="3">CIFAR-10</th><th class="group" colspan="3">CIFAR-100</th>' in html


def _bench(xnor=(10.0, 11.0, 12.0), pack=(7.0, 8.0, 9.0)):
    layers = [{"shape": f"{c}->{c}@8s1", "batch": 128, "torch_s": 0.03, "xnor_s": 0.003, "xnor_ratio": x,
               "xnor_pack_ratio": p, "mv_ratio": x + 1, "mv_pack_ratio": p, "hmv_ratio": x / 2,
               "hmv_pack_ratio": p / 2, "torch_frac_peak": 0.9} for c, x, p in zip((64, 128, 256), xnor, pack)]
    return {"layers": layers, "summary": {"128": {"xnor_ratio": 11.0, "mv_vs_xnor": 1.1}},
            "peak": {"binary_tmacs": 1.8, "fp32_gmacs": 140.0, "ceiling": 13.3},
            "network": {"width": 64, "batch": 128, "identical_logits": True, "speedup": 1.17},
            "machine": {"cpu": "a CPU", "threads": 2}}


def test_kernel_table_and_verdict_against_the_goals():
    t = rt.kernel_goal_rows(_bench(), rv.KERNEL_GOALS)
    first = t.frame.iloc[0]
    assert first["Median speed-up (×)"] == "11.0" and first["Range over shapes (×)"] == "10.0–12.0"
    assert first["Project goal (×)"] == "20" and first["Goal reached"] == "no"
    assert not any("_" in h for h in t.headers)
    text = rv.kernel_verdict(_bench(), engine={"identical_logits": {"engine_mv@1": True}}, trained=None)
    assert text.startswith("**Bit-exact: yes**")
    assert "kernel only 11.0× (median over 3 layer shapes, 10.0–12.0×): the 20× goal **not reached**" in text
    assert "with packing 8.0×" in text and "the 10× goal **not reached**" in text
    # torch's convolutions at 90 % of the matmul figure: the ratio bounds the speed-up; at 120 % it bounds nothing
    assert "reach up to 90 % of that fp32 figure, so the ratio bounds the speed-up against them: the 20× goal " \
           "lies above it" in text
    assert "torch's fp32 matmul at 140 GMAC/s" in text  # a results file of the earlier roofline, named as such
    fma = _bench()
    fma["peak"].update(torch_mm_gmacs=120.0, int8_gmacs=260.0, int8_path="avx2")
    assert "the fp32 FMA micro-kernel at 140 GMAC/s (torch's matmul 120; int8 peak 260 GMAC/s, avx2)" in \
        rv.kernel_verdict(fma)
    over = _bench()
    over["layers"] = [{**r, "torch_frac_peak": 1.2} for r in over["layers"]]
    assert "reach up to 120 % of that fp32 figure, so it is not torch's peak" in rv.kernel_verdict(over)
    reached = rv.kernel_verdict(_bench(xnor=(21.0, 22.0, 23.0), pack=(10.0, 11.0, 12.0)))
    assert "the 20× goal **reached**" in reached and "the 10× goal **reached**" in reached
    bad = _bench()
    bad["network"]["identical_logits"] = False
    assert rv.kernel_verdict(bad).startswith("**Bit-exact: no**")
    layers = rt.kernel_layer_rows(_bench()).frame
    assert layers["torch fp32 conv2d (ms)"].tolist() == ["30.00"] * 3  # milliseconds, not seconds rounded to 0.00


def _costs(mv_factor=1.002):
    rows = []
    for n in (144, 576):
        base = 10.0 * n
        rows += [{"circuit": "pc_cmp", "n": n, "area_ge": base}, {"circuit": "mv", "n": n, "area_ge": base * mv_factor},
                 {"circuit": "hmv4_pos", "n": n, "area_ge": base * 0.9}]
    return pd.DataFrame(rows)


def test_hardware_verdict_comes_first_and_follows_the_resolution():
    text = rv.hardware_verdict(_costs(), None, scatter=0.003)
    assert text.startswith("**Is the majority voter cheaper than XNOR + popcount + compare in synthesized logic? "
                           "no.**")
    assert "saves −0.2 to −0.2 % of the area, within the ±2 % resolution" in text
    assert "G = 4 (tie +1) saves +10.0 to +10.0 % — beyond the resolution at every N." in text
    assert "? yes.**" in rv.hardware_verdict(_costs(0.9), None, scatter=0.003)


def test_timing_verdict_against_the_budget():
    timing = {"steps": {"01_baseline": 600.0, "02_naive_majority_voter": 120.0}, "sum_s": 720.0, "wall_s": 700.0}
    assert rv.timing_verdict(timing, 90).startswith("**Within the 90-minute budget: yes**")
    assert rv.timing_verdict({**timing, "wall_s": 6000.0}, 90).startswith("**Within the 90-minute budget: no**")


def test_the_study_time_counts_only_while_a_notebook_ran():
    from mvlib.study.report import busy_seconds
    # two overlapping steps, then one alone after an idle hour, then one inside it
    spans = [(0.0, 600.0), (300.0, 900.0), (4500.0, 5000.0), (4600.0, 4700.0)]
    assert busy_seconds(spans) == 900.0 + 500.0
    assert busy_seconds([]) == 0.0
    timing = {"steps": {"01_baseline": 600.0, "05_kernels": 500.0}, "sum_s": 1700.0, "wall_s": 1400.0,
              "span_s": 5000.0}
    text = rv.timing_verdict(timing, 90)
    assert text.startswith("**Within the 90-minute budget: yes**") and "23.3 min of wall time" in text
    assert "more than one occasion: 83.3 min from the first one's start to the last one's end, 60.0 min" in text
    assert "occasion" not in rv.timing_verdict({**timing, "span_s": 1430.0}, 90)


def test_intervals_clipped_to_what_a_percentage_can_be():
    err, clipped = pl.clip_errors([5.0, 95.0, 50.0, 50.0], [10.0, 10.0, float("nan"), 3.0])
    assert err.tolist() == [[5.0, 10.0, 0.0, 3.0], [10.0, 5.0, 0.0, 3.0]] and clipped == 2
    assert pl.clip_note(2, "two seeds").startswith(" 2 intervals reach beyond 0–100 % and are drawn clipped")
    assert pl.clip_note(0) == ""


def test_labels_keep_clear_of_the_error_bars():
    from matplotlib.text import Text

    def crossings(yerr):
        fig, ax = plt.subplots(figsize=(5, 4))
        xs, ys, half = [1.0, 1.08, 1.16, 2.5], [30.0, 36.0, 24.0, 20.0], [15.0, 15.0, 15.0, 5.0]
        ax.errorbar(xs, ys, yerr=half, fmt="o")
        ax.set_xlim(0, 3)
        ax.set_ylim(0, 60)
        left = pl.place_labels(ax, xs, ys, ["G16", "G8x2", "G4x4", "MV"], yerr=half if yerr else None)
        fig.canvas.draw()
        labels = [Text.get_window_extent(t) for t in ax.texts]  # the text alone, not its leader line
        r, hits = ax.transData.transform, 0
        for x, y, h in zip(xs, ys, half):
            (bx, y0), (_, y1) = r((x, y - h)), r((x, y + h))
            hits += sum(b.x0 < bx + 1 and b.x1 > bx - 1 and b.y0 < y1 and b.y1 > y0 for b in labels)
        plt.close(fig)
        return hits, left

    assert crossings(yerr=False)[0] > 0  # close points with long bars: labels placed by points alone cross bars
    assert crossings(yerr=True) == (0, 0)
    fig, ax = plt.subplots(figsize=(5, 4))  # asymmetric bars as matplotlib takes them: [[below], [above]]
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 60)
    assert pl.place_labels(ax, [1.0, 2.0], [30.0, 30.0], ["a", "b"], yerr=[[5.0, 5.0], [1.0, 1.0]]) == 0
    plt.close(fig)


def test_labels_do_not_overlap_and_epochs_are_whole():
    fig, ax = plt.subplots(figsize=(5, 4))
    xs, ys = [1.0, 1.05, 1.1, 1.02, 3.0], [40.0, 40.5, 39.5, 41.0, 20.0]
    ax.scatter(xs, ys)
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 60)
    left = pl.place_labels(ax, xs, ys, ["G2", "G4", "G8", "G16", "pc w8"])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) + left == 5 and left <= 1
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)
    hist = {"reactnet18 baseline seed 0": [{"epoch": e, "train_loss": 2.0 / e, "val_top1": 30.0 + e} for e in (1, 2, 3)],
            "reactnet18 retrain-approx seed 0": [{"epoch": 1, "train_loss": 1.0, "val_top1": 50.0}]}
    fig, notes = pl.training_curves(hist)
    assert notes["left_out"] == ["reactnet18 retrain-approx seed 0"]  # one epoch: a point, not a curve
    ticks = fig.axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    shown = pl.render(fig, "Figure A1.")
    assert shown.png.startswith(b"\x89PNG") and "Figure A1." in shown._repr_html_()


def test_printed_paths_are_relative(tmp_path):
    results = tmp_path / "elsewhere" / "results"
    (results / "bench").mkdir(parents=True)
    path = results / "bench" / "x.json"
    assert report.relative(path, results) == "results/bench/x.json"
    assert report.relative(report.REPO_ROOT / "results" / "bench" / "y.json") == "results/bench/y.json"


def test_tables_render_without_raw_frames():
    t = rt.Table(pd.DataFrame([{"Design": "a & b", "Area (GE)": "1,000"}]), caption="Table X.", text=("Design",))
    html = t.to_html()
    assert "a &amp; b" in html and "<caption>Table X.</caption>" in html and 'class="dataframe"' not in html
    assert repr(t).splitlines()[0].split() == ["Design", "Area", "(GE)"]


@pytest.mark.parametrize("name,expected", [("HMV G=4 tie neg", "G4"), ("popcount w8", "pc w8"),
                                           ("tree 2x2x2x2 tie first", "2×2×2×2"), ("MV", "MV")])
def test_pareto_point_labels_are_short(name, expected):
    from mvlib.study.plots_report import short_point
    assert short_point(name) == expected
