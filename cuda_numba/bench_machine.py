"""The machine a benchmark runs on: its name, its threads, its clock, its peaks, and the files named after it.

Shared by the layer benchmark (:mod:`cuda_numba.bench`) and the whole-network
benchmark (:mod:`cuda_numba.bench_network`); neither imports the other's
timing state. The clock is a value (:func:`clock_named`) passed to what
times, rather than a module setting, so that two benchmarks in one process
cannot leave each other a clock they did not ask for.

Clocks: ``wall`` (:func:`time.perf_counter`, the default) or ``process``
(:func:`time.process_time`, the CPU time of this process). Why ``process``
exists: on a machine shared with other jobs, wall time counts the time slices
given to them, and multi-threaded wall times include waits for a descheduled
thread (torch's OpenMP and Numba's pools both barrier); it sums the CPU time
of all threads, so it is refused with more than one thread.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import torch
from numba import njit, prange

from mvlib.bench.timing import interleaved_times

from .bitops import TILE_P, TILE_V, xor_popcount_tile

Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "process": time.process_time}


def clock_named(name: str, threads: int) -> Clock:
    """The clock ``wall`` or ``process`` (CPU time of this process; single-threaded runs only)."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; choose one of {sorted(CLOCKS)}")
    if name == "process" and threads != 1:
        raise ValueError("--clock process sums the CPU time of all threads: use it with --threads 1")
    return CLOCKS[name]


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
    """The results' file name stem: ``cpu_<model>_<threads>t`` (``_cputime`` with the process clock)."""
    name = re.sub(r"\(r\)|\(tm\)|processor|cpu", "", info["cpu"].lower())
    clock = "_cputime" if info.get("clock") == "process" else ""
    return "cpu_" + re.sub(r"[^a-z0-9]+", "-", name).strip("-") + f"_{info['threads']}t{clock}"


def set_threads(n: int) -> int:
    """Same thread count for torch and Numba (0 = all logical CPUs)."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


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


def peak_rates(threads: int, reps: int = 12, clock: Clock = time.perf_counter) -> dict:
    """The roofline of this machine on ``threads`` threads, each side measured by a micro-kernel in this run.

    ``binary_tmacs``: the fastest of XOR + popcount on registers in its two instruction mixes
    (:func:`cuda_numba.roofline.binary_peaks`: ``binary_register_tmacs``) and of the engine's micro-kernel on
    L1-resident data (``binary_tile_tmacs``: its loads included, no epilogue): no binary convolution exceeds
    it. ``fp32_gmacs`` / ``int8_gmacs``: the FMA and int8 multiply-add peaks of :mod:`cuda_numba.roofline`
    (register-resident loops of the widest instructions the CPU has), bounds that no fp32 or int8 convolution
    exceeds. ``torch_mm_gmacs``: torch's fp32 ``mm`` of two 2048x2048 matrices, for comparison (it is not a
    bound: torch's convolutions can beat it). ``ceiling`` = binary / fp32 peak: the speed-up over a torch
    convolution running at the fp32 peak that a kernel at the binary peak would show.
    """
    from .roofline import arithmetic_peaks, binary_peaks

    rng = np.random.default_rng(0)
    A = rng.integers(0, 2**63, 2 * TILE_P * PEAK_K, dtype=np.uint64)
    W = rng.integers(0, 2**63, 2 * PEAK_K * TILE_V, dtype=np.uint64)
    items, iters = 8 * threads, 12000 // threads  # ~50 ms per call at the peak: long enough to time
    C = np.zeros(items * TILE_P * TILE_V, np.uint64)
    macs = items * iters * TILE_P * TILE_V * PEAK_K * 64
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    times = interleaved_times({"bin": lambda: _peak_loop(A, W, C, iters, items), "mm": lambda: torch.mm(a, b)}, reps,
                              clock=clock)
    bin_s, mm_s = min(times["bin"]), min(times["mm"])
    arith = arithmetic_peaks(threads, reps, clock)
    register = binary_peaks(threads, reps, clock)
    peak_bin = max(macs / bin_s, 1e12 * max(register["qword"], register["byte"]))
    return {"binary_tmacs": peak_bin / 1e12, "binary_tile_tmacs": macs / bin_s / 1e12,
            "binary_register_tmacs": {k: register[k] for k in ("qword", "byte")}, "binary_bits": register["bits"],
            "fp32_gmacs": arith["fp32_peak_gmacs"],
            "int8_gmacs": arith["int8_peak_gmacs"], "int8_path": arith["int8_path"], "fp32_lanes": arith["fp32_lanes"],
            "torch_mm_gmacs": 2048 ** 3 / mm_s / 1e9, "ceiling": peak_bin / (arith["fp32_peak_gmacs"] * 1e9)}


def max_peaks(*peaks: dict) -> dict:
    """The roofline of several :func:`peak_rates` measurements of one run: each rate its highest.

    On a shared or virtual machine one measurement of a peak can come out at half of another a minute later
    (the same kernel, the same threads, nothing else running in the process); a bound is the most the machine
    was seen to do, so a benchmark measures the peaks before and after its own timings and keeps the maxima."""
    out = dict(peaks[0])
    for k in ("binary_tmacs", "binary_tile_tmacs", "fp32_gmacs", "int8_gmacs", "torch_mm_gmacs"):
        if all(k in p for p in peaks):
            out[k] = max(p[k] for p in peaks)
    if all("binary_register_tmacs" in p for p in peaks):
        out["binary_register_tmacs"] = {k: max(p["binary_register_tmacs"][k] for p in peaks)
                                        for k in peaks[0]["binary_register_tmacs"]}
    out["ceiling"] = out["binary_tmacs"] * 1e3 / out["fp32_gmacs"]
    out["measurements"] = len(peaks)
    return out


def binary_peak_text(peak: dict) -> str:
    """``"0.65 T binary MAC/s (XOR + popcount on registers, byte mix)"``: the binary peak and what set it (a results
    file from before the register micro-kernels: the engine's micro-kernel on L1-resident data)."""
    reg = peak.get("binary_register_tmacs")
    if not reg:
        return f"{peak['binary_tmacs']:.2f} T binary MAC/s (the engine's micro-kernel on L1-resident data)"
    if peak["binary_tmacs"] > max(reg.values()):
        what = "the engine's micro-kernel on L1-resident data, above XOR + popcount on registers"
    else:
        what = f"XOR + popcount on registers, {max(reg, key=reg.get)} mix"
    return f"{peak['binary_tmacs']:.2f} T binary MAC/s ({what})"


def write_results(result: dict, rows: list[dict], out_dir, slug: str, draw: Callable[[Path], None]) -> dict:
    """``<slug>.json`` (all of ``result``), ``<slug>.csv`` (``rows``) and ``<slug>.png`` (``draw(path)``) under
    ``out_dir``; returns their paths. ``slug`` starts from :func:`machine_slug`: a file names its machine."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{slug}.{k}" for k in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps(result, indent=1))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    draw(paths["png"])
    return {k: str(v) for k, v in paths.items()}
