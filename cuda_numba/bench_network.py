"""Whole-network inference benchmark of the engine: ``python -m cuda_numba.bench --network``.

ReActNet-18 (width 64, CIFAR input) at batch 1, 16 and 128, images/s of

* the engine (:mod:`cuda_numba.engine`) with XNOR + popcount, MV and HMV (G = 4, tie +1);
* mvlib's float path (the model as the library runs it: the simulation the
  engine must equal), and the same model converted layer by layer (``convert_model``);
* a plain torch fp32 model of the same network (real convolutions), and torch's
  CPU alternatives a user would pick for it: bf16 and int8 (FX post-training
  quantization, ``x86`` backend), where they run;
* Larq Compute Engine when ``--lce-python`` names an interpreter that has it
  (:mod:`cuda_numba.bench_peers`); otherwise it is left out of the run and its results, and the reason
  recorded (a peer is measured in the same run or not at all).

All the variants' calls at one batch size are interleaved
(:func:`mvlib.bench.timing.interleaved_times`), best of ``reps`` (medians
too). The same run measures the binary peak before and after its timings
(:func:`cuda_numba.bench_machine.peak_rates`, the higher kept): the engine's fraction of that roofline
is ``images/s x binary MACs per image / peak``. A per-stage breakdown of the
engine (torch stem convolution, stem epilogue, binary blocks per stage, torch
shortcuts, head, and the Python between) sits beside the time of the same
binary convolutions alone (the layer kernels, packed input ready): the
difference is what the fused epilogue costs. Every engine variant's logits
are compared with its float model's in the same run (``identical``).

The run uses :func:`cuda_numba.configure_threads` (Numba's OpenMP layer with
a short spin), which speeds up mvlib's float path as well as the engine.
Results: ``results/bench/network_<machine>_<threads>t.{json,csv,png}``.
LCE environment (optional, not a dependency of the project)::

    python3.11 -m venv /tmp/lce-venv
    /tmp/lce-venv/bin/pip install larq-compute-engine==0.16.0 "tensorflow-cpu==2.16.*" "tf-keras==2.16.*" "larq==0.13.*"
    python -m cuda_numba.bench --network --lce-python /tmp/lce-venv/bin/python
"""
from __future__ import annotations

import argparse
import os

import numba
import numpy as np
import torch

from mvlib.bench.timing import best_and_median, interleaved_times

from . import bench_peers
from .bench_machine import (CLOCKS, Clock, binary_peak_text, clock_named, machine_info, machine_slug, max_peaks,
                            peak_rates, set_threads, write_results)
from .cpu_kernels import conv_hmv_cpu, conv_mv_cpu, conv_popcount_cpu
from .engine import compile_engine, configure_threads
from .engine_kernels import MODE_HMV, MODE_MV

ENGINES = {"engine_popcount": None, "engine_mv": "mv", "engine_hmv4": {"name": "hmv", "fanins": [4], "tie": "pos"}}
STAGES = ("stem", "stem_epilogue", "shortcuts", "stage1", "stage2", "stage3", "stage4", "head", "python")


def bench_model(width=64, voter=None, seed=0):
    """ReActNet-18 with random but non-trivial parameters (BN statistics, shifts, RPReLU), in eval mode."""
    from mvlib.models import build_model
    from mvlib.voter_ops import set_voter

    torch.manual_seed(seed)
    model = build_model("reactnet18", width=width)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
        for n, p in model.named_parameters():
            if n.endswith(("shift", "shift_in", "shift_out")):
                p.normal_(0, 0.1)
    return set_voter(model, voter).eval()


def breakdown(engine, x, reps=3, clock: Clock = CLOCKS["wall"]) -> dict:
    """Per-stage seconds of one engine forward (best over ``reps`` for each stage), with the Python between."""
    best: dict = {}
    totals = []
    for _ in range(reps):
        times: dict = {}
        t0 = clock()
        engine(x, times=times, clock=clock)
        totals.append(clock() - t0)
        agg = dict.fromkeys(STAGES[:-1], 0.0)
        for k, v in times.items():
            if k.startswith("shortcut"):
                agg["shortcuts"] += v
            elif k.startswith("block"):
                agg[f"stage{int(k[5:]) // 4 + 1}"] += v
            else:
                agg[k] += v
        for k, v in agg.items():
            best[k] = min(best.get(k, v), v)
    best["python"] = max(0.0, min(totals) - sum(best.values()))
    return best


def conv_only(engine, batch, reps=3, clock: Clock = CLOCKS["wall"]) -> dict:
    """Seconds of the 16 binary convolutions alone per stage (the layer kernels on ready packed inputs)."""
    bufs = engine.work_buffers(batch)
    rng = np.random.default_rng(0)
    out = {f"stage{s}": 0.0 for s in range(1, 5)}
    for i, blk in enumerate(engine.plan):
        g = bufs["geo"][i]
        xb = rng.integers(0, 2 ** 63, g["bits"].shape, dtype=np.uint64)
        if blk.in_pad:
            xb[:, 0] = xb[:, -1] = 0
            xb[:, :, 0] = xb[:, :, -1] = 0
        if blk.mode == MODE_HMV:
            fans = tuple(int(f) for f in blk.fanins)
            fn = lambda: conv_hmv_cpu(xb, blk.wts, blk.stride, 1, fans, "pos")  # noqa: E731
        elif blk.mode == MODE_MV:
            fn = lambda: conv_mv_cpu(xb, blk.wts, blk.stride, 1, in_pad=blk.in_pad)  # noqa: E731
        else:
            fn = lambda: conv_popcount_cpu(xb, blk.wts, blk.stride, 1, in_pad=blk.in_pad)  # noqa: E731
        out[f"stage{i // 4 + 1}"] += min(interleaved_times({"c": fn}, reps, clock=clock)["c"])
    return out


def run(batches=(1, 16, 128), reps=(20, 8, 4), threads=0, width=64, lce_python=None, out_dir="results/bench",
        suffix="", clock="wall", log=print) -> dict:
    configured = configure_threads()  # Numba's omp layer, short spin (see there); before any parallel kernel
    threads = set_threads(threads)
    clock_fn = clock_named(clock, threads)
    info = machine_info(threads)
    info["clock"] = clock
    log(f"{info['cpu']} | {threads} threads | torch {info['torch']} | numba {info['numba']} | "
        f"load average {info['loadavg_start']}")
    peak = peak_rates(threads, clock=clock_fn)
    info["numba_threading_layer"] = numba.threading_layer()
    info["gomp_spincount"] = os.environ.get("GOMP_SPINCOUNT")
    info["threads_configured_here"] = configured
    log(f"roofline: binary {binary_peak_text(peak)}")
    floats = {k: bench_model(width, v) for k, v in ENGINES.items()}
    engines = {k: compile_engine(m) for k, m in floats.items()}
    from .convert import convert_model

    peers = {"mvlib_float": floats["engine_popcount"], "mvlib_converted": convert_model(floats["engine_popcount"]),
             "torch_fp32": bench_peers.plain_fp32(width), "torch_bf16": bench_peers.plain_bf16(width)}
    int8, int8_err = bench_peers.plain_int8(width)
    if int8 is not None:
        peers["torch_int8"] = int8
    lce, lce_err = bench_peers.start_lce(lce_python, width, threads, batches, clock, log)
    macs = engines["engine_popcount"].binary_macs()
    per_stage = stage_macs(engines["engine_popcount"])
    rows, stages, checks = [], {}, {}
    try:
        for batch, nrep in zip(batches, reps):
            x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                for k, eng in engines.items():  # exactness on this very input
                    checks[f"{k}@{batch}"] = bool(torch.equal(eng(x), floats[k](x)))
            inputs = {k: bench_peers.as_input(k.split("_")[1], x) for k in peers}
            fns = {k: (lambda e=e: e(x)) for k, e in engines.items()}
            fns.update({k: (lambda m=m, xi=inputs[k]: m(xi)) for k, m in peers.items()})
            if lce is not None:
                fns["lce"] = lambda b=batch: lce.time(b)
            with torch.no_grad():
                times = interleaved_times(fns, nrep, clock=clock_fn)
            if lce is not None:  # the worker's own inference time, not the pipe's round trip
                times["lce"] = [lce.time(batch) for _ in range(nrep)]
            for k, ts in times.items():
                best, med = best_and_median(ts)
                rows.append({"batch": batch, "variant": k, "best_s": best, "median_s": med,
                             "images_per_s": batch / best, "images_per_s_median": batch / med})
            by = {r["variant"]: r["images_per_s"] for r in rows if r["batch"] == batch}
            with torch.no_grad():
                st = {k: breakdown(e, x, clock=clock_fn) for k, e in engines.items()}
                for k in engines:
                    st[k]["conv_only"] = conv_only(engines[k], batch, clock=clock_fn)
            stages[str(batch)] = st
            log(f"batch {batch}: " + ", ".join(f"{k} {v:.0f}" for k, v in by.items()) + " img/s")
            log(f"  engine popcount: {by['engine_popcount'] / by['mvlib_float']:.2f}x mvlib's float path, "
                f"MV/popcount {by['engine_mv'] / by['engine_popcount']:.2f}")
    finally:
        if lce is not None:
            lce.close()
    peak = max_peaks(peak, peak_rates(threads, clock=clock_fn))  # before and after the timings: the highest
    log(f"roofline after the timings (the higher of the two measurements kept): binary {binary_peak_text(peak)}")
    result = {"machine": info, "peak": peak, "width": width, "binary_macs_per_image": macs, "rows": rows,
              "stages_s": stages, "identical_logits": checks,
              "binary_macs_per_stage": per_stage, "summary": summarize(rows, macs, peak, stages, per_stage),
              "torch_int8": int8_err or "ok",
              "lce": (lce.info if lce is not None else {"measured": False, "reason": lce_err})}
    result["machine"]["loadavg_end"] = os.getloadavg()[0]
    result["files"] = write_results(result, result["rows"], out_dir, "network_" + machine_slug(info) + suffix,
                                    lambda png: plot(result, png))
    log(summary_text(result))
    return result


def stage_macs(engine, h: int = 32, w: int = 32) -> dict:
    """Binary MACs of one image's binary convolutions per stage (``stage1`` .. ``stage4``, four blocks each)."""
    out: dict = {}
    for i, blk in enumerate(engine.plan):
        ho, wo = blk.wts.out_size(h, w, blk.stride, 1)
        out[f"stage{i // 4 + 1}"] = out.get(f"stage{i // 4 + 1}", 0) + ho * wo * blk.cout * blk.cin * 9
        h, w = ho, wo
    return out


def stage_roofline(stages_s: dict, per_stage: dict, batch: int, peak: dict) -> dict:
    """Fraction of the binary peak reached per stage at ``batch``: the fused blocks (``stage1`` .., and
    ``blocks`` for all 16) from the engine's breakdown, and their convolutions alone (``conv_stage1`` ..,
    ``conv_blocks``): binary MACs of the stage / its seconds / peak MAC/s."""
    rate = peak["binary_tmacs"] * 1e12
    out = {}
    for prefix, secs in (("", stages_s), ("conv_", stages_s["conv_only"])):
        for k, macs in per_stage.items():
            out[prefix + k] = batch * macs / secs[k] / rate
        out[prefix + "blocks"] = batch * sum(per_stage.values()) / sum(secs[k] for k in per_stage) / rate
    return out


def summarize(rows, macs, peak, stages=None, per_stage=None) -> dict:
    out = {}
    for batch in sorted({r["batch"] for r in rows}):
        by = {r["variant"]: r["images_per_s"] for r in rows if r["batch"] == batch}
        s = {k: v for k, v in by.items()}
        e = by["engine_popcount"]
        s["engine_vs_mvlib_float"] = e / by["mvlib_float"]
        s["engine_vs_torch_fp32"] = e / by["torch_fp32"]
        s["best_torch"] = max(v for k, v in by.items() if k.startswith("torch_"))
        s["engine_vs_best_torch"] = e / s["best_torch"]
        s["mv_vs_popcount"] = by["engine_mv"] / e
        s["roofline_fraction"] = e * macs / (peak["binary_tmacs"] * 1e12)
        if "lce" in by:
            s["engine_vs_lce"] = e / by["lce"]
        if stages and per_stage:
            s["stage_roofline"] = stage_roofline(stages[str(batch)]["engine_popcount"], per_stage, batch, peak)
        out[str(batch)] = s
    return out


def summary_text(result) -> str:
    """The README lines: ratios per batch, roofline fraction, MV vs popcount, LCE."""
    m, lines = result["machine"], []
    lines.append(f"Whole ReActNet-18 (width {result['width']}) on the engine, {m['cpu']}, {m['threads']} threads, "
                 f"best of interleaved calls:")
    for b, s in result["summary"].items():  # a peer is measured in this run or left out, never cited
        lce = f", {s['engine_vs_lce']:.2f}x LCE" if "engine_vs_lce" in s else ""
        lines.append(f"batch {b}: popcount {s['engine_popcount']:.0f} img/s = {s['engine_vs_mvlib_float']:.2f}x "
                     f"mvlib's float path ({s['mvlib_float']:.0f}), {s['engine_vs_best_torch']:.2f}x torch's best "
                     f"({s['best_torch']:.0f}){lce}; MV {s['engine_mv']:.0f} ({s['mv_vs_popcount']:.2f}x popcount), "
                     f"HMV G=4 {s['engine_hmv4']:.0f}; {s['roofline_fraction']:.1%} of the binary roofline "
                     f"({result['peak']['binary_tmacs']:.2f} T binary MAC/s)" + blocks_text(s.get("stage_roofline")))
    lines.append(f"identical logits (engine vs float model, every variant and batch): "
                 f"{all(result['identical_logits'].values())}")
    return "\n".join(lines)


def blocks_text(frac: dict | None) -> str:
    """``"; the 16 binary blocks at 52 % of it (stages 41 / 55 / 58 / 60 %), their convolutions alone at 73 %"``."""
    if not frac:
        return ""
    per = " / ".join(f"{100 * frac[f'stage{i}']:.0f}" for i in range(1, 5))
    return (f"; the 16 binary blocks at {frac['blocks']:.0%} of it (stages {per} %), their convolutions alone "
            f"at {frac['conv_blocks']:.0%}")


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(result["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    variants = [v for v in dict.fromkeys(r["variant"] for r in result["rows"])]
    xs = np.arange(len(batches))
    wd = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys = [next((r["images_per_s"] for r in result["rows"] if r["variant"] == v and str(r["batch"]) == b), 0)
              for b in batches]
        axes[0].bar(xs + (i - len(variants) / 2 + 0.5) * wd, ys, wd, label=v)
    axes[0].set_yscale("log")
    axes[0].set_xticks(xs, [f"batch {b}" for b in batches])
    axes[0].set_ylabel("images / s")
    axes[0].legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    st = result["stages_s"]
    bottom = np.zeros(len(batches))
    for stage in STAGES:  # engine popcount, ms per image
        ys = np.array([st[b]["engine_popcount"][stage] / int(b) * 1e3 for b in batches])
        axes[1].bar(xs, ys, 0.6, bottom=bottom, label=stage)
        bottom += ys
    conv = [sum(st[b]["engine_popcount"]["conv_only"].values()) / int(b) * 1e3 for b in batches]
    axes[1].plot(xs, conv, "k_", markersize=30, label="binary convs alone")
    axes[1].set_xticks(xs, [f"batch {b}" for b in batches])
    axes[1].set_ylabel("ms per image (engine, popcount)")
    axes[1].legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    m = result["machine"]
    fig.suptitle(f"ReActNet-18 width {result['width']}: {m['cpu']}, {m['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--reps", type=int, nargs="+", default=[20, 8, 4], help="timed calls per batch size")
    p.add_argument("--threads", type=int, default=0, help="0 = all logical CPUs")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="process: CPU time of each side's process (with --threads 1; robust on a shared machine)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lce-python", default=None, help="an interpreter with larq-compute-engine (see the docstring)")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--quick", action="store_true", help="batches 1 and 4, width 16, 2 reps (CI)")
    a = p.parse_args(argv)
    if a.quick:
        return run((1, 4), (2, 2), a.threads, 16, a.lce_python, a.out, "_quick", a.clock)
    reps = (a.reps * len(a.batches))[: len(a.batches)] if len(a.reps) == 1 else a.reps
    return run(tuple(a.batches), tuple(reps), a.threads, a.width, a.lce_python, a.out, clock=a.clock)


if __name__ == "__main__":
    main()
