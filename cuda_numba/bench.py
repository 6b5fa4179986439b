"""Benchmark of the CPU bit kernels against torch fp32 ``conv2d``: ``python -m cuda_numba.bench``.

Per ResNet-18 CIFAR 3x3 layer shape and batch (1, 16, 128 by default): time of
torch fp32 ``conv2d`` on NCHW tensors (the convolution the float simulation
runs; channels-last torch, sometimes faster, is timed too) against the
XNOR + popcount, MV and HMV (G = 4, tie +1) kernels, kernel only (packed input
ready) and including the packing of the fp32 activations, as ratios, with
binary MAC/s. Then whole-network inference of ReActNet-18 (width 64, batch
128): the float-simulated model against the same model converted to the bit
kernels, images/s and a per-layer time table. Results go to
``results/bench/cpu_<machine>_<threads>t.{json,csv,png}``.

Timing: torch and Numba use the same number of threads; every figure is the
best of ``reps`` calls after a warm-up call (the machine may be shared: the
minimum is the least disturbed run); medians over the calls are recorded too.
The calls of all the variants of a layer (and of the two networks) are
interleaved, so a burst of foreign load cannot fall on one side of a ratio only.
A roofline opens the run (:func:`peak_rates`): the micro-kernel's peak binary
MAC/s on L1-resident data and torch's fp32 matmul peak, whose ratio bounds
what any XOR-popcount kernel can show against a torch convolution that runs
at its peak; every layer row carries each side's fraction of its peak.
``--clock process`` (with ``--threads 1``) measures the process's CPU time
instead of wall time: on a machine shared with other jobs, wall time counts
the time slices given to them, and multi-threaded wall times include waits
for a descheduled thread (torch's OpenMP and Numba's pools both barrier).
``--quick`` runs a reduced version (batches 1 and 4, a width-16 network) for CI.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
import torch.nn.functional as F

from numba import njit, prange

from mvlib.bench.timing import best_and_median, interleaved_times

from .bitops import TILE_P, TILE_V, xor_popcount_tile
from .cpu_kernels import conv_hmv_cpu, conv_mv_cpu, conv_popcount_cpu, prepare_cpu_weights
from .layout import pack_activations

# (Cin, Cout, input size, stride): the 3x3 binary layers of the CIFAR ResNet-18 and its stride-2 transitions
SHAPES = [(64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (128, 256, 16, 2),
          (256, 256, 8, 1), (256, 512, 8, 2), (512, 512, 4, 1)]
KERNELS = ("xnor", "mv", "hmv")
HMV_FANINS = 4


def machine_info(threads: int) -> dict:
    """CPU model, threads and versions: what names the machine in the results."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
        flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.M).group(1).split())
    except (OSError, AttributeError):
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "threads": threads,
            "avx512_vpopcntdq": "avx512_vpopcntdq" in flags, "avx512f": "avx512f" in flags,
            "torch": torch.__version__, "numba": numba.__version__, "python": platform.python_version(),
            "loadavg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def machine_slug(info: dict) -> str:
    name = re.sub(r"\(r\)|\(tm\)|processor|cpu", "", info["cpu"].lower())
    clock = "_cputime" if info.get("clock") == "process" else ""
    return "cpu_" + re.sub(r"[^a-z0-9]+", "-", name).strip("-") + f"_{info['threads']}t{clock}"


def set_threads(n: int) -> int:
    """Same thread count for torch and Numba (0 = all logical CPUs)."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
_clock = time.perf_counter


def set_clock(name: str, threads: int) -> None:
    """``wall`` (default) or ``process`` (CPU time of this process; single-threaded runs only)."""
    global _clock
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; choose one of {sorted(CLOCKS)}")
    if name == "process" and threads != 1:
        raise ValueError("--clock process sums the CPU time of all threads: use it with --threads 1")
    _clock = CLOCKS[name]


def timed(fn, reps: int) -> tuple[float, float]:
    """(best, median) seconds of ``reps`` calls after one warm-up call."""
    return best_and_median(interleaved_times({"fn": fn}, reps, clock=_clock)["fn"])


# --------------------------------------------------------------------------
# Roofline: what each side can reach on this machine, measured in the same run
# --------------------------------------------------------------------------
PEAK_K = 128  # words per row in the peak loop: rows (4 KB) and panel (16 KB) stay in L1


@njit(parallel=True, cache=True)
def _peak_loop(A, W, C, iters, items):
    """``items`` independent streams of ``iters`` micro-kernel calls on L1-resident data."""
    for it in prange(items):
        roff = np.zeros(TILE_P, np.int64)
        for i in range(iters):
            for p in range(TILE_P):  # alternate two copies so that no call is loop-invariant
                roff[p] = ((i & 1) * TILE_P + p) * PEAK_K
            xor_popcount_tile(A, roff, 1, 0, PEAK_K, W, (i & 1) * PEAK_K * TILE_V, C, it * TILE_P * TILE_V)


def peak_rates(threads: int, reps: int = 5) -> dict:
    """Peak binary MAC/s of the XOR-popcount micro-kernel and fp32 MAC/s of torch's matmul, and their ratio.

    The micro-kernel runs on data resident in L1 (no memory traffic, no
    epilogue): the most the convolution kernels can reach, set by the
    instruction mix (XOR, VPOPCNTQ, add per 512 binary MACs). torch's
    ``mm`` of two 2048x2048 fp32 matrices stands for the FMA peak its
    convolutions approach. ``ceiling`` = their ratio: the speed-up over a
    torch convolution running at its own peak that a kernel at its peak
    would show.
    """
    rng = np.random.default_rng(0)
    A = rng.integers(0, 2**63, 2 * TILE_P * PEAK_K, dtype=np.uint64)
    W = rng.integers(0, 2**63, 2 * PEAK_K * TILE_V, dtype=np.uint64)
    items, iters = 8 * threads, 12000 // threads  # ~50 ms per call at the peak: long enough to time
    C = np.zeros(items * TILE_P * TILE_V, np.uint64)
    macs = items * iters * TILE_P * TILE_V * PEAK_K * 64
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    times = interleaved_times({"bin": lambda: _peak_loop(A, W, C, iters, items), "mm": lambda: torch.mm(a, b)}, reps,
                              clock=_clock)
    bin_s, mm_s = min(times["bin"]), min(times["mm"])
    peak_bin, peak_fp32 = macs / bin_s, 2048 ** 3 / mm_s
    return {"binary_tmacs": peak_bin / 1e12, "fp32_gmacs": peak_fp32 / 1e9, "ceiling": peak_bin / peak_fp32}


def bench_layer(cin, cout, h, stride, batch, reps, seed=0) -> dict:
    """One layer shape and batch: torch fp32 conv2d vs the three kernels, kernel only and with packing.

    All the variants' calls are interleaved (:func:`mvlib.bench.timing.interleaved_times`): every ratio
    compares times taken in the same stretches of the run.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, h, generator=g)
    w = torch.randn(cout, cin, 3, 3, generator=g)
    shift = (torch.randn(cin, generator=g) * 0.1).numpy()
    xn = x.numpy()
    w1, w4 = prepare_cpu_weights(w.numpy()), prepare_cpu_weights(w.numpy(), HMV_FANINS)
    xb_pad = pack_activations(xn, shift, pad=1)  # the direct path's input: packed with its zero border
    xb = pack_activations(xn, shift)
    ho = (h + 2 - 3) // stride + 1
    row = {"shape": f"{cin}->{cout}@{h}s{stride}", "cin": cin, "cout": cout, "size": h, "stride": stride,
           "batch": batch, "binary_macs": batch * ho * ho * cout * cin * 9}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns = {  # torch on NCHW (the stated baseline) and channels-last (what the converted network sees)
        "torch": lambda: F.conv2d(x, w, None, stride, 1),
        "torch_cl": lambda: F.conv2d(x_cl, w, None, stride, 1),
        "pack": lambda: pack_activations(xn, shift, pad=1),
        "xnor": lambda: conv_popcount_cpu(xb_pad, w1, stride, 1, in_pad=1),
        "xnor_pack": lambda: conv_popcount_cpu(pack_activations(xn, shift, pad=1), w1, stride, 1, in_pad=1),
        "mv": lambda: conv_mv_cpu(xb_pad, w1, stride, 1, in_pad=1),
        "mv_pack": lambda: conv_mv_cpu(pack_activations(xn, shift, pad=1), w1, stride, 1, in_pad=1),
        "hmv": lambda: conv_hmv_cpu(xb, w4, stride, 1, HMV_FANINS, "pos"),
        "hmv_pack": lambda: conv_hmv_cpu(pack_activations(xn, shift), w4, stride, 1, HMV_FANINS, "pos"),
    }
    with torch.no_grad():
        times = interleaved_times(fns, reps, clock=_clock)
    for name, ts in times.items():
        row[f"{name}_s"], row[f"{name}_median_s"] = best_and_median(ts)
    best_torch = min(row["torch_s"], row["torch_cl_s"])
    for name in KERNELS:
        row[f"{name}_ratio"] = row["torch_s"] / row[f"{name}_s"]
        row[f"{name}_pack_ratio"] = row["torch_s"] / row[f"{name}_pack_s"]
        row[f"{name}_ratio_best_torch"] = best_torch / row[f"{name}_s"]
        row[f"{name}_tmacs"] = row["binary_macs"] / row[f"{name}_s"] / 1e12
    row["torch_gmacs"] = row["binary_macs"] / row["torch_s"] / 1e9
    row["mv_vs_xnor"] = row["xnor_s"] / row["mv_s"]
    return row


def verify_layers(batch: int = 2, shapes=SHAPES) -> list[dict]:
    """Bit-exactness of the three CPU kernels against mvlib's float simulation, per layer shape."""
    from mvlib.binarizers import sign_pm1
    from mvlib.voters import block_partial_sums, hierarchical_vote, integer_conv, majority_vote

    from .layout import unpack_reference

    rows = []
    for cin, cout, h, stride in shapes:
        g = torch.Generator().manual_seed(cin + cout)
        x, w = torch.randn(batch, cin, h, h, generator=g), torch.randn(cout, cin, 3, 3, generator=g)
        shift = torch.randn(cin, generator=g) * 0.1
        a, wb = sign_pm1(x + shift.view(1, -1, 1, 1)), sign_pm1(w)
        s_ref = integer_conv(a, wb, stride, 1)
        xb = pack_activations(x.numpy(), shift.numpy())
        w1 = prepare_cpu_weights(w.numpy())
        s = torch.from_numpy(conv_popcount_cpu(xb, w1, stride, 1).astype(np.float32)).permute(0, 3, 1, 2)
        mv = torch.from_numpy(unpack_reference(conv_mv_cpu(xb, w1, stride, 1), cout))
        hmv = torch.from_numpy(unpack_reference(
            conv_hmv_cpu(xb, prepare_cpu_weights(w.numpy(), HMV_FANINS), stride, 1, HMV_FANINS, "pos"), cout))
        hmv_ref = hierarchical_vote(block_partial_sums(a, wb, HMV_FANINS, stride, 1), HMV_FANINS, "pos")
        rows.append({"shape": f"{cin}->{cout}@{h}s{stride}", "batch": batch, "outputs": s_ref.numel(),
                     "xnor_exact": bool(torch.equal(s, s_ref)), "mv_exact": bool(torch.equal(mv, majority_vote(s_ref))),
                     "hmv_exact": bool(torch.equal(hmv, hmv_ref)), "ties_s0": int((s_ref == 0).sum())})
    return rows


def run_layer_bench(batches=(1, 16, 128), reps=5, shapes=SHAPES, log=print) -> list[dict]:
    rows = []
    for batch in batches:
        for cin, cout, h, stride in shapes:
            row = bench_layer(cin, cout, h, stride, batch, reps)
            rows.append(row)
            log(f"{row['shape']:>16} b{batch:<4} torch {row['torch_s'] * 1e3:8.2f} ms (cl {row['torch_cl_s'] * 1e3:7.2f}) | "
                + " | ".join(f"{k} {row[k + '_s'] * 1e3:7.2f} ms {row[k + '_ratio']:5.1f}x"
                             f" (+pack {row[k + '_pack_ratio']:4.1f}x) {row[k + '_tmacs']:.2f}T" for k in KERNELS))
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per batch, medians over the layer shapes of every ratio.

    The speed goals (20x torch fp32 kernel-only, 10x with packing) are set at batch 128.
    """
    out = {}
    for batch in sorted({r["batch"] for r in rows}):
        sel = [r for r in rows if r["batch"] == batch]
        keys = [f"{k}_{m}" for k in KERNELS for m in ("ratio", "pack_ratio", "ratio_best_torch", "tmacs")]
        keys += ["mv_vs_xnor"] + [k for k in ("torch_frac_peak", "xnor_frac_peak") if k in sel[0]]
        out[str(batch)] = {k: statistics.median(r[k] for r in sel) for k in keys}
    return out


def _time_models(models: dict, x, reps):
    """Whole forwards of each model, interleaved: (best, median, {module: best time}) per model name.

    ``models[name] = (model, [(module name, module), ...])``; each listed
    module's time inside those forwards comes from forward hooks.
    """
    per = {key: {mname: [] for mname, _ in mods} for key, (_, mods) in models.items()}
    starts = {}
    handles = []
    for key, (_, mods) in models.items():
        for mname, mod in mods:
            handles.append(mod.register_forward_pre_hook(lambda m, i, n=(key, mname): starts.__setitem__(n, _clock())))
            handles.append(mod.register_forward_hook(
                lambda m, i, o, k=key, n=mname: per[k][n].append(_clock() - starts[(k, n)])))
    with torch.no_grad():
        times = interleaved_times({key: (lambda m=model: m(x)) for key, (model, _) in models.items()}, reps,
                                  clock=_clock)
    for h in handles:
        h.remove()
    return {key: (*best_and_median(times[key]), {n: min(ts) for n, ts in per[key].items()}) for key in models}


def run_network_bench(width=64, batch=128, reps=3, model_name="reactnet18", voter=None, seed=0, log=print) -> dict:
    """Images/s of the float-simulated model vs the converted one, with per-layer times."""
    from mvlib.layers import binary_convs
    from mvlib.models import build_model

    from .convert import bit_convs, convert_model

    torch.manual_seed(seed)
    model = build_model(model_name, width=width, voter=voter).eval()
    with torch.no_grad():  # non-trivial shifts and BN statistics (random init otherwise)
        for n, p in model.named_parameters():
            if n.endswith("shift"):
                p.normal_(0, 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    bit_model = convert_model(model)
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        same = torch.equal(model(x), bit_model(x))
    timing = _time_models({"float": (model, binary_convs(model)), "bit": (bit_model, bit_convs(bit_model))}, x, reps)
    (f_best, f_med, f_layers), (b_best, b_med, b_layers) = timing["float"], timing["bit"]
    layers = [{"layer": n, "float_ms": f_layers[n] * 1e3, "bit_ms": b_layers[n] * 1e3,
               "ratio": f_layers[n] / b_layers[n]} for n in f_layers]
    f_conv, b_conv = sum(r["float_ms"] for r in layers), sum(r["bit_ms"] for r in layers)
    layers.append({"layer": "(all binary convs)", "float_ms": f_conv, "bit_ms": b_conv, "ratio": f_conv / b_conv})
    layers.append({"layer": "(everything else)", "float_ms": f_best * 1e3 - f_conv, "bit_ms": b_best * 1e3 - b_conv,
                   "ratio": (f_best * 1e3 - f_conv) / max(b_best * 1e3 - b_conv, 1e-9)})
    res = {"model": model_name, "width": width, "batch": batch, "identical_logits": same,
           "float_images_per_s": batch / f_best, "bit_images_per_s": batch / b_best, "speedup": f_best / b_best,
           "float_median_s": f_med, "bit_median_s": b_med, "layers": layers}
    log(f"{model_name} width {width} batch {batch}: float {res['float_images_per_s']:.0f} img/s, "
        f"bit kernels {res['bit_images_per_s']:.0f} img/s ({res['speedup']:.1f}x), identical logits: {same}")
    for r in layers:
        log(f"  {r['layer']:>20}  float {r['float_ms']:8.2f} ms  bit {r['bit_ms']:7.2f} ms  {r['ratio']:5.1f}x")
    return res


def plot_layers(rows: list[dict], path, title: str = "", ceiling: float | None = None) -> None:
    """Speed-up over torch fp32 conv2d per layer shape, one panel per batch (``ceiling``: the peak ratio, dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.2), sharey=True, squeeze=False)
    series = [("xnor_ratio", "XNOR"), ("xnor_pack_ratio", "XNOR + packing"), ("mv_ratio", "MV"),
              ("hmv_ratio", f"HMV G={HMV_FANINS}")]
    for ax, batch in zip(axes[0], batches):
        sel = [r for r in rows if r["batch"] == batch]
        xs = np.arange(len(sel))
        for i, (key, label) in enumerate(series):
            ax.bar(xs + (i - 1.5) * 0.2, [r[key] for r in sel], 0.2, label=label)
        for goal in (10, 20):
            ax.axhline(goal, color="gray", lw=0.8, ls="--")
        if ceiling:
            ax.axhline(ceiling, color="black", lw=1.0, ls=":", label="peak / peak")
        ax.set_xticks(xs, [r["shape"] for r in sel], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("speed-up over torch fp32 conv2d")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_results(result: dict, out_dir, slug: str) -> dict:
    """JSON (everything), CSV (layer rows) and PNG (plot) under ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{slug}.{k}" for k in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps(result, indent=1))
    rows = result["layers"]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    m = result["machine"]
    plot_layers(rows, paths["png"], f"{m['cpu']}, {m['threads']} threads, {m['clock']} time, best of {result['reps']}",
                result.get("peak", {}).get("ceiling"))
    return {k: str(v) for k, v in paths.items()}


def run(batches=(1, 16, 128), reps=5, threads=0, network=True, net_width=64, net_batch=128, net_reps=3,
        out_dir="results/bench", suffix="", clock="wall", log=print) -> dict:
    """The whole benchmark; returns the result dict (also written to ``out_dir``)."""
    threads = set_threads(threads)
    set_clock(clock, threads)
    info = machine_info(threads)
    info["clock"] = clock
    log(f"{info['cpu']} | {threads} threads | {clock} clock | torch {info['torch']} | numba {info['numba']} | "
        f"load average {info['loadavg_start']}")
    peak = peak_rates(threads)
    log(f"peaks: XOR-popcount micro-kernel {peak['binary_tmacs']:.2f} T binary MAC/s (L1-resident), torch fp32 "
        f"matmul {peak['fp32_gmacs']:.0f} GMAC/s: a kernel at its peak is {peak['ceiling']:.1f}x a torch "
        f"convolution at its peak")
    rows = run_layer_bench(batches, reps, log=log)
    for r in rows:  # how close each side runs to its own peak
        r["torch_frac_peak"] = r["torch_gmacs"] / peak["fp32_gmacs"]
        for k in KERNELS:
            r[f"{k}_frac_peak"] = r[f"{k}_tmacs"] / peak["binary_tmacs"]
    result = {"machine": info, "reps": reps, "peak": peak, "layers": rows, "summary": summarize(rows)}
    for batch, s in result["summary"].items():
        log(f"median over shapes, batch {batch}: XNOR {s['xnor_ratio']:.1f}x (incl. packing "
            f"{s['xnor_pack_ratio']:.1f}x; vs the faster torch layout {s['xnor_ratio_best_torch']:.1f}x), "
            f"MV {s['mv_ratio']:.1f}x, HMV {s['hmv_ratio']:.1f}x, MV vs XNOR {s['mv_vs_xnor']:.2f}x; "
            f"fraction of peak: torch {s['torch_frac_peak']:.2f}, XNOR {s['xnor_frac_peak']:.2f}")
    if network:
        result["network"] = run_network_bench(net_width, net_batch, net_reps, log=log)
    result["machine"]["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["files"] = save_results(result, out_dir, machine_slug(info) + suffix)
    log(f"wrote {result['files']}")
    return result


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--network" in argv:  # the whole-network engine benchmark has its own options
        from .bench_network import main as network_main

        argv.remove("--network")
        return network_main(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--network", action="store_true",
                   help="only the whole-network inference benchmark of the engine (cuda_numba.bench_network; "
                        "see its --help)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="0 = all logical CPUs")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS), help="process: CPU time (with --threads 1)")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--no-network", action="store_true")
    p.add_argument("--quick", action="store_true", help="batches 1 and 4, 2 reps, a width-16 network (CI)")
    a = p.parse_args(argv)
    if a.quick:
        return run((1, 4), 2, a.threads, not a.no_network, 16, 8, 2, a.out, "_quick", a.clock)
    return run(tuple(a.batches), a.reps, a.threads, not a.no_network, out_dir=a.out, clock=a.clock)


if __name__ == "__main__":
    main()
