"""Smoke test of the kernel benchmark: one batch, one repetition, a tiny network."""
from __future__ import annotations

import json

import pytest

from cuda_numba import bench


@pytest.mark.slow
def test_bench_runs_and_writes_results(tmp_path):
    res = bench.run(batches=(1,), reps=1, threads=1, network=True, net_width=8, net_batch=2, net_reps=1,
                    out_dir=tmp_path, clock="process", log=lambda *a: None)
    assert len(res["layers"]) == len(bench.SHAPES)
    assert res["network"]["identical_logits"]
    assert res["peak"]["binary_tmacs"] > 0 and res["peak"]["fp32_gmacs"] > 0 and res["peak"]["ceiling"] > 1
    assert all(0 < r["xnor_frac_peak"] and 0 < r["torch_frac_peak"] for r in res["layers"])
    for key in ("xnor_ratio", "xnor_pack_ratio", "mv_ratio", "hmv_ratio", "mv_vs_xnor"):
        assert res["summary"]["1"][key] > 0
    saved = json.loads((tmp_path / (bench.machine_slug(res["machine"]) + ".json")).read_text())
    assert saved["machine"]["cpu"] and saved["machine"]["threads"] == 1
    assert all((tmp_path / f"{bench.machine_slug(res['machine'])}.{ext}").is_file() for ext in ("csv", "png"))
    assert all(r["xnor_exact"] and r["mv_exact"] and r["hmv_exact"] for r in bench.verify_layers(1, bench.SHAPES[-2:]))


def test_interleaved_times_alternate_the_variants():
    from mvlib.bench.timing import interleaved_times

    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up of each, then a, b, a, b, ...
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())
