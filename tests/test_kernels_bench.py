"""Smoke test of the kernel benchmark (issue 4): one batch, one repetition, a tiny network."""
from __future__ import annotations

import json

from cuda_numba import bench


def test_bench_runs_and_writes_results(tmp_path):
    res = bench.run(batches=(1,), reps=1, threads=1, network=True, net_width=8, net_batch=2, net_reps=1,
                    out_dir=tmp_path, clock="process", log=lambda *a: None)
    assert len(res["layers"]) == len(bench.SHAPES)
    assert res["network"]["identical_logits"]
    for key in ("xnor_ratio", "xnor_pack_ratio", "mv_ratio", "hmv_ratio", "mv_vs_xnor"):
        assert res["summary"]["1"][key] > 0
    saved = json.loads((tmp_path / (bench.machine_slug(res["machine"]) + ".json")).read_text())
    assert saved["machine"]["cpu"] and saved["machine"]["threads"] == 1
    assert all((tmp_path / f"{bench.machine_slug(res['machine'])}.{ext}").is_file() for ext in ("csv", "png"))
    assert all(r["xnor_exact"] and r["mv_exact"] and r["hmv_exact"] for r in bench.verify_layers(1, bench.SHAPES[-2:]))
