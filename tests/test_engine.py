"""The fused inference engine: bit-identical to the float simulation.

Random models (trained checkpoints are checked by ``python -m mvlib.study.engine_check``):
BN statistics and affine parameters, RSign shifts and RPReLU parameters are
randomized so that no sign is trivial. Widths 5 and 12 give odd channel counts,
channel counts that are not multiples of 16 or 64 (the epilogue's scalar
tails, partial packed words, the im2col path); width 64 the direct path of every
layer. Stride-2 blocks and borders are in every network; a 24x24 input makes
a 3x3 last feature map (24 -> 12 -> 6 -> 3). The logits are compared with
``torch.equal``: the engine performs the float model's float32 operations in
its order (see :mod:`cuda_numba.engine_kernels`), and its torch parts on the
float model's memory layouts and thread count.
"""
from __future__ import annotations

import numpy as np
import pytest
import numba
import torch
from numba import njit

from cuda_numba import BinaryEngine, EngineUnsupported, compile_engine, prediction_agreement
from cuda_numba.engine_kernels import bn_terms
from cuda_numba.simd import fma32
from mvlib.models import build_model
from mvlib.voter_analysis import calibrate_threshold_voters
from mvlib.voter_ops import set_voter
from mvlib.voters import HierarchicalVoter, MajorityVoter, ThresholdVoter


def random_model(name, voter=None, width=8, seed=0, **options):
    torch.manual_seed(seed)
    model = build_model(name, width=width, voter=voter, **options)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0, 0.2)
        for n, p in model.named_parameters():
            if n.endswith("shift") or n.endswith("shift_in") or n.endswith("shift_out"):
                p.normal_(0, 0.1)
    return model.eval()


def _images(b, size=32, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _check(model, x):
    engine = compile_engine(model)
    with torch.no_grad():
        ref, got = model(x), engine(x)
    assert torch.equal(ref, got), f"max |diff| {(ref - got).abs().max().item()}"
    return engine


@njit(cache=False)
def _apply_fma(x, a, b):
    out = np.empty_like(x)
    rows, c = x.shape
    for r in range(rows):
        for j in range(c):
            out[r, j] = fma32(x[r, j], a[j], b[j])
    return out


@pytest.mark.parametrize("channels", [13, 64, 72])
def test_bn_terms_are_torch_batchnorm(channels):
    g = torch.Generator().manual_seed(channels)
    bn = torch.nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(0.3, 3.0, generator=g)
    x = torch.randn(4, channels, 5, 7, generator=g) * 5
    a, b = bn_terms(*(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
                    np.float32(bn.eps))
    got = _apply_fma(x.permute(0, 2, 3, 1).reshape(-1, channels).numpy().copy(), a, b)
    for fmt in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            ref = bn(x.contiguous(memory_format=fmt)).permute(0, 2, 3, 1).reshape(-1, channels).numpy()
        assert np.array_equal(ref, got)


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
@pytest.mark.parametrize("voter", [None, "mv", "hmv"])
def test_engine_equals_float_model(name, voter):
    if voter == "mv":
        voter = MajorityVoter(output_scale="alpha")
    elif voter == "hmv":
        voter = HierarchicalVoter(fanins=4, tie="first")
    _check(random_model(name, voter, width=8 if voter is not None else 12), _images(3))


@pytest.mark.parametrize("name", ["reactnet18", "xnornet18"])
def test_engine_odd_widths_and_sizes(name):
    # width 5: 5/10/20/40 channels; 24x24 input: 24 -> 12 -> 6 -> 3 feature maps; batch 1 and 2
    model = random_model(name, MajorityVoter(), width=5, seed=2)
    _check(model, _images(1, size=24))
    set_voter(model, None)
    _check(model, _images(2, size=24))


def test_engine_width64_direct_path_all_voters():
    model = random_model("reactnet18", None, width=64, seed=3)
    x = _images(2)
    _check(model, x)
    for spec in ("mv", {"name": "hmv", "fanins": [2, 2], "tie": "neg"}):
        set_voter(model, spec)
        _check(model, x)


def test_engine_forced_ties():
    # block 5's activations all +1 (shift +100) and its weights balanced per tap (+1 on half the input
    # channels, -1 on the other half): s = 0 at every output, borders included
    model = random_model("reactnet18", MajorityVoter(), width=8, seed=4)
    conv = model.blocks[5].conv
    with torch.no_grad():
        conv.act.shift.fill_(100.0)
        half = conv.in_channels // 2
        conv.weight[:, :half] = 0.5
        conv.weight[:, half:] = -0.5
        x = _images(2)
        acts = {}
        h = model.blocks[5].conv.register_forward_pre_hook(lambda m, i: acts.setdefault("x", i[0]))
        model(x)
        h.remove()
        assert bool((conv.integer_sums(acts["x"]) == 0).all())
    _check(model, x)
    set_voter(model, {"name": "hmv", "fanins": 2, "tie": "pos"})
    _check(model, x)
    set_voter(model, None)
    _check(model, x)


def test_engine_threshold_voter_and_mixed_layers():
    model = random_model("birealnet18", None, width=8, seed=5)
    set_voter(model, "threshold", layers=[1, 6, 11])
    loader = [(_images(8, seed=s), torch.zeros(8, dtype=torch.long)) for s in range(2)]
    calibrate_threshold_voters(model, loader, batches=2)
    set_voter(model, "mv", layers=[2, 15])
    assert isinstance(model.blocks[1].conv.voter, ThresholdVoter)
    _check(model, _images(3))


@pytest.mark.parametrize("options", [{"norm": "none"}, {"binary_downsample": "weights"}])
def test_engine_other_variants_that_come_for_free(options):
    _check(random_model("reactnet18", MajorityVoter(), width=8, seed=6, **options), _images(2))


@pytest.mark.parametrize("options", [{"norm": "bnfree"}, {"binary_downsample": True}, {"binary_weights": False}])
def test_engine_refuses_what_it_does_not_fuse(options):
    with pytest.raises(EngineUnsupported):
        BinaryEngine(random_model("reactnet18", None, width=8, **options))
    with pytest.raises(EngineUnsupported, match="BinaryResNet18"):
        BinaryEngine(torch.nn.Linear(2, 2))
    with pytest.raises(EngineUnsupported, match="128 leaves"):
        BinaryEngine(random_model("reactnet18", HierarchicalVoter(fanins=[4, 4, 8]), width=8))


def test_prediction_agreement_and_reuse_of_buffers():
    model = random_model("reactnet18", HierarchicalVoter(fanins=4), width=8, seed=7)
    engine = compile_engine(model)
    batches = [(_images(4, seed=s), torch.zeros(4, dtype=torch.long)) for s in range(3)]
    report = prediction_agreement(model, engine, batches)
    assert report["images"] == 12 and report["differing_predictions"] == 0
    assert report["max_abs_logit_diff"] == 0.0
    assert len(engine._bufs) == 1  # one set of buffers per batch size, allocated once
    assert engine.work_buffers(4) is engine.work_buffers(4)
    # nn.Module.buffers is torch's: the float model's BatchNorm statistics
    assert {id(b) for b in engine.buffers()} == {id(b) for b in engine.model.buffers()} != set()
    times = {}
    engine(batches[0][0], times=times)
    assert {"stem", "stem_epilogue", "head", "block0", "shortcut4"} <= set(times)


def _run_python(args, tmp_path, timeout=300):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def test_configure_threads_selects_omp_with_a_short_spin(tmp_path):
    code = ("import cuda_numba, numba, numpy as np, os\n"
            "ok = cuda_numba.configure_threads()\n"
            "numba.njit(parallel=True)(lambda a: a + 1)(np.zeros(4))\n"
            "print(ok, numba.threading_layer(), os.environ['GOMP_SPINCOUNT'], cuda_numba.configure_threads())\n")
    assert _run_python(["-c", code], tmp_path).split() == ["True", "omp", "10000", "False"]


@pytest.mark.slow
def test_network_benchmark_runs_and_writes_results(tmp_path):
    import json

    _run_python(["-m", "cuda_numba.bench", "--network", "--batches", "2", "--reps", "1", "--width", "8",
                 "--out", str(tmp_path)], tmp_path)
    (path,) = tmp_path.glob("network_*.json")
    res = json.loads(path.read_text())
    assert all(res["identical_logits"].values())
    variants = {r["variant"] for r in res["rows"]}
    assert {"engine_popcount", "engine_mv", "engine_hmv4", "mvlib_float", "torch_fp32", "torch_bf16"} <= variants
    s = res["summary"]["2"]
    assert 0 < s["roofline_fraction"] < 1 and s["engine_vs_mvlib_float"] > 0
    assert set(res["stages_s"]["2"]["engine_popcount"]) >= {"stem", "stage1", "stage4", "head", "conv_only"}
    assert sum(res["binary_macs_per_stage"].values()) == res["binary_macs_per_image"]
    frac = s["stage_roofline"]
    assert all(0 < frac[k] for k in ("stage1", "stage4", "blocks", "conv_stage1", "conv_blocks"))
    assert min(frac[f"stage{i}"] for i in range(1, 5)) <= frac["blocks"] <= max(frac[f"stage{i}"] for i in range(1, 5))
    assert (tmp_path / path.name.replace(".json", ".png")).is_file()


def test_engine_sub_batches_and_torch_threads():
    # 5 images in slices of 2 (2 + 3: no slice of one image), torch parts on 1 and on 2 threads, each against the float model on
    # as many threads (some CPUs' convolutions round differently with another thread count)
    model = random_model("xnornet18", MajorityVoter(output_scale="alpha"), width=8, seed=8)
    x = _images(5)
    have = torch.get_num_threads()
    try:
        with torch.no_grad():
            for threads in (1, 2):
                torch.set_num_threads(threads)
                ref = model(x)
                torch.set_num_threads(have)
                engine = compile_engine(model, torch_threads=threads, sub_batch=2)
                assert torch.equal(engine(x), ref)
    finally:
        torch.set_num_threads(have)
    # one buffer set per sub-batch size (2, and 3: a last lone image joins the slice before it): the engine
    # holds numba's thread count (part of the key) for the whole call, though the float model's numba kernels
    # set it to torch's
    assert sorted(k[0] for k in engine._bufs) == [2, 3]
    numba.set_num_threads(1)
    engine(x)
    assert numba.get_num_threads() == 1 and len(engine._bufs) == 2  # restored after the call; no new set


def test_sub_batches_never_leave_one_image_alone():
    from cuda_numba.engine import _slices
    assert _slices(5, 2) == [(0, 2), (2, 5)]
    assert _slices(65, 32) == [(0, 32), (32, 65)]
    assert _slices(64, 32) == [(0, 32), (32, 64)]
    assert _slices(1, 32) == [(0, 1)] and _slices(33, 32) == [(0, 33)] and _slices(34, 32) == [(0, 32), (32, 34)]


def test_stage_roofline_is_macs_over_seconds_over_peak():
    from cuda_numba.bench_network import blocks_text, stage_roofline
    per_stage = {"stage1": 100, "stage2": 50, "stage3": 50, "stage4": 50}
    secs = {"stage1": 2.0, "stage2": 1.0, "stage3": 0.5, "stage4": 0.5,
            "conv_only": {"stage1": 1.0, "stage2": 0.5, "stage3": 0.25, "stage4": 0.25}}
    f = stage_roofline(secs, per_stage, batch=4, peak={"binary_tmacs": 1e-10})  # 100 MAC/s
    assert f["stage1"] == 4 * 100 / 2.0 / 100 and f["stage3"] == 4 * 50 / 0.5 / 100
    assert f["blocks"] == 4 * 250 / 4.0 / 100 and f["conv_blocks"] == 4 * 250 / 2.0 / 100
    assert blocks_text(f).startswith("; the 16 binary blocks at 250% of it (stages 200 / 200 / 400 / 400 %)")
