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
A roofline opens and closes the run (:func:`cuda_numba.bench_machine.peak_rates`, the higher of the two
kept: :func:`~cuda_numba.bench_machine.max_peaks`): the binary peak (XOR + popcount on registers, or the
engine's micro-kernel on L1-resident data if faster) and the fp32 FMA peak, whose ratio bounds what any
XOR-popcount kernel can show against a torch convolution that runs at its peak; every layer row carries each
side's fraction of its peak, and a row above its peak is named (``peak["exceeded_by"]``).
``--clock process`` (with ``--threads 1``) measures the process's CPU time
instead of wall time: on a machine shared with other jobs, wall time counts
the time slices given to them, and multi-threaded wall times include waits
for a descheduled thread (torch's OpenMP and Numba's pools both barrier).
``--quick`` runs a reduced version (batches 1 and 4, a width-16 network) for CI.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

from mvlib.bench.timing import best_and_median, interleaved_times

from .bench_machine import (CLOCKS, Clock, binary_peak_text, clock_named, machine_info, machine_slug, max_peaks,
                            peak_rates, set_threads, write_results)
from .cpu_kernels import conv_hmv_cpu, conv_mv_cpu, conv_popcount_cpu, prepare_cpu_weights
from .layout import pack_activations

# (Cin, Cout, input size, stride): the 3x3 binary layers of the CIFAR ResNet-18 and its stride-2 transitions
SHAPES = [(64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (128, 256, 16, 2),
          (256, 256, 8, 1), (256, 512, 8, 2), (512, 512, 4, 1)]
KERNELS = ("xnor", "mv", "hmv")
HMV_FANINS = 4


def bench_layer(cin, cout, h, stride, batch, reps, seed=0, clock: Clock = CLOCKS["wall"]) -> dict:
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
        times = interleaved_times(fns, reps, clock=clock)
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


def run_layer_bench(batches=(1, 16, 128), reps=5, shapes=SHAPES, log=print,
                    clock: Clock = CLOCKS["wall"]) -> list[dict]:
    rows = []
    for batch in batches:
        for cin, cout, h, stride in shapes:
            row = bench_layer(cin, cout, h, stride, batch, reps, clock=clock)
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


def _time_models(models: dict, x, reps, clock: Clock):
    """Whole forwards of each model, interleaved: (best, median, {module: best time}) per model name.

    ``models[name] = (model, [(module name, module), ...])``; each listed
    module's time inside those forwards comes from forward hooks.
    """
    per = {key: {mname: [] for mname, _ in mods} for key, (_, mods) in models.items()}
    starts = {}
    handles = []
    for key, (_, mods) in models.items():
        for mname, mod in mods:
            handles.append(mod.register_forward_pre_hook(lambda m, i, n=(key, mname): starts.__setitem__(n, clock())))
            handles.append(mod.register_forward_hook(
                lambda m, i, o, k=key, n=mname: per[k][n].append(clock() - starts[(k, n)])))
    with torch.no_grad():
        times = interleaved_times({key: (lambda m=model: m(x)) for key, (model, _) in models.items()}, reps,
                                  clock=clock)
    for h in handles:
        h.remove()
    return {key: (*best_and_median(times[key]), {n: min(ts) for n, ts in per[key].items()}) for key in models}


def run_network_bench(width=64, batch=128, reps=3, model_name="reactnet18", voter=None, seed=0, log=print,
                      clock: Clock = CLOCKS["wall"]) -> dict:
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
    timing = _time_models({"float": (model, binary_convs(model)), "bit": (bit_model, bit_convs(bit_model))}, x,
                          reps, clock)
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
    m = result["machine"]
    title = f"{m['cpu']}, {m['threads']} threads, {m['clock']} time, best of {result['reps']}"
    return write_results(result, result["layers"], out_dir, slug,
                         lambda png: plot_layers(result["layers"], png, title, result.get("peak", {}).get("ceiling")))


def run(batches=(1, 16, 128), reps=5, threads=0, network=True, net_width=64, net_batch=128, net_reps=3,
        out_dir="results/bench", suffix="", clock="wall", log=print) -> dict:
    """The whole benchmark; returns the result dict (also written to ``out_dir``)."""
    threads = set_threads(threads)
    clock_fn = clock_named(clock, threads)
    info = machine_info(threads)
    info["clock"] = clock
    log(f"{info['cpu']} | {threads} threads | {clock} clock | torch {info['torch']} | numba {info['numba']} | "
        f"load average {info['loadavg_start']}")
    peak = peak_rates(threads, clock=clock_fn)
    log(f"peaks: binary {binary_peak_text(peak)}, fp32 FMA "
        f"{peak['fp32_gmacs']:.0f} GMAC/s ({peak['fp32_lanes']} lanes), int8 {peak['int8_gmacs']:.0f} GMAC/s "
        f"({peak['int8_path']}); torch fp32 matmul {peak['torch_mm_gmacs']:.0f} GMAC/s: a kernel at the binary peak "
        f"is {peak['ceiling']:.1f}x a convolution at the fp32 peak")
    rows = run_layer_bench(batches, reps, log=log, clock=clock_fn)
    peak = max_peaks(peak, peak_rates(threads, clock=clock_fn))  # before and after the timings: the highest
    log(f"peaks after the layers (the higher of the two measurements kept): binary {binary_peak_text(peak)}, "
        f"fp32 FMA {peak['fp32_gmacs']:.0f} GMAC/s, int8 {peak['int8_gmacs']:.0f} GMAC/s")
    for r in rows:  # how close each side runs to its own peak
        r["torch_frac_peak"] = r["torch_gmacs"] / peak["fp32_gmacs"]
        for k in KERNELS:
            r[f"{k}_frac_peak"] = r[f"{k}_tmacs"] / peak["binary_tmacs"]
    over = [f"{r['shape']} batch {r['batch']}" for r in rows
            if r["torch_frac_peak"] > 1 or any(r[f"{k}_frac_peak"] > 1 for k in KERNELS)]
    peak["exceeded_by"] = over  # a bound that something beats is not a bound: said, not hidden
    if over:
        log(f"warning: {len(over)} measurement(s) above their peak ({', '.join(over[:4])}): the peaks are not bounds "
            f"on this run (a loaded machine times the peaks low)")
    result = {"machine": info, "reps": reps, "peak": peak, "layers": rows, "summary": summarize(rows)}
    for batch, s in result["summary"].items():
        log(f"median over shapes, batch {batch}: XNOR {s['xnor_ratio']:.1f}x (incl. packing "
            f"{s['xnor_pack_ratio']:.1f}x; vs the faster torch layout {s['xnor_ratio_best_torch']:.1f}x), "
            f"MV {s['mv_ratio']:.1f}x, HMV {s['hmv_ratio']:.1f}x, MV vs XNOR {s['mv_vs_xnor']:.2f}x; "
            f"fraction of peak: torch {s['torch_frac_peak']:.2f}, XNOR {s['xnor_frac_peak']:.2f}")
    if network:
        result["network"] = run_network_bench(net_width, net_batch, net_reps, log=log, clock=clock_fn)
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
