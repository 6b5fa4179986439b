"""Arithmetic peaks of this CPU measured by micro-kernels: what no convolution on it can exceed.

A ratio against a peak says something only if the peak is a bound. torch's
``mm`` of two large fp32 matrices is not one: its convolutions can run faster
than it. Here each peak is a loop of one instruction pattern on registers or
L1-resident data, on every thread, with enough independent accumulators to
cover the instruction's latency:

``fp32``
    fused multiply-adds, ``acc = fma(acc, m, a)`` on ``FMA_CHAINS`` vector
    accumulators of the widest vector the CPU has (16 lanes with AVX-512, else
    8): the FMA units' MAC rate.
``int8``
    the multiply-add pattern of int8 convolutions: ``vpdpbusd`` (AVX-512 VNNI,
    or AVX-VNNI on 256 bits) where present, else AVX2's ``vpmaddubsw`` +
    ``vpmaddwd`` + ``vpaddd`` (what oneDNN and FBGEMM use without VNNI):
    32 or 64 u8 x s8 MACs per step and accumulator.
``binary``
    the engine's own XOR + popcount micro-kernel on L1-resident words
    (:func:`cuda_numba.bench_machine.peak_rates`; ``VPOPCNTQ`` where AVX-512
    VPOPCNTDQ exists, LLVM's vector popcount otherwise).

Each loop returns a value computed in closed form from its inputs (ones in,
``iters`` per lane out), so that the compiler cannot drop it and a test can
check it exactly. Rates are MAC/s: one binary MAC is one XNOR-popcount bit.
"""
from __future__ import annotations

import time

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from mvlib.bench.timing import interleaved_times

FMA_CHAINS = 12  # independent accumulators: >= latency (4) x FMA units (2), and 12 + 2 vectors fit 16 registers
INT8_CHAINS = {"avx2": 4, "vnni256": 10, "vnni512": 10}  # AVX2: only vpaddd (latency 1) is on the chain


def host_features() -> set[str]:
    """The CPU features LLVM sees on this machine (``avx2``, ``avx512f``, ``avx512vnni``, ``avxvnni`` ...)."""
    return {k for k, v in llvm.get_host_cpu_features().items() if v}


def fp32_lanes(features: set[str] | None = None) -> int:
    return 16 if "avx512f" in (host_features() if features is None else features) else 8


def int8_path(features: set[str] | None = None) -> str:
    """``vnni512``, ``vnni256`` or ``avx2``: the int8 multiply-add this CPU runs at its best."""
    f = host_features() if features is None else features
    if {"avx512vnni", "avx512f"} <= f:
        return "vnni512"
    if "avxvnni" in f or {"avx512vnni", "avx512vl"} <= f:
        return "vnni256"
    return "avx2"


def _loop(builder, count, body):
    """``for i in range(count): body()`` in IR."""
    with cgutils.for_range(builder, count):
        body()


def _opaque(builder, value):
    """``value``, unknown to the optimizer (an empty inline-asm statement that may change its register): no
    instruction, but a product of constants can be neither folded nor hoisted out of the loop."""
    asm = ir.InlineAsm(ir.FunctionType(value.type, [value.type]), "", "=x,0", side_effect=True)
    return builder.call(asm, [value])


def _make_fma_burst(lanes: int):
    vec = ir.VectorType(ir.FloatType(), lanes)

    @intrinsic
    def fma_burst(typingctx, iters):
        """``FMA_CHAINS`` vector accumulators, each ``iters`` times ``acc = fma(acc, 1, 1)``; returns the sum of
        every lane (``FMA_CHAINS * lanes * iters`` exactly, for ``iters < 2**24``)."""
        if iters != types.int64:
            return None

        def codegen(context, builder, sig, args):
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                                 f"llvm.fma.v{lanes}f32")
            one = ir.Constant(vec, [1.0] * lanes)
            accs = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * lanes)) for _ in range(FMA_CHAINS)]

            def body():
                m = _opaque(builder, one)  # else fma(acc, 1, 1) would become an addition
                for a in accs:
                    builder.store(builder.call(fma, [builder.load(a), m, one]), a)

            _loop(builder, args[0], body)
            total = builder.load(accs[0])
            for a in accs[1:]:
                total = builder.fadd(total, builder.load(a))
            out = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
            for i in range(1, lanes):
                out = builder.fadd(out, builder.extract_element(total, ir.Constant(ir.IntType(32), i)))
            return builder.fpext(out, ir.DoubleType())

        return types.float64(types.int64), codegen

    return fma_burst


def _make_int8_burst(path: str):
    i32 = ir.IntType(32)
    width = 16 if path == "vnni512" else 8  # int32 lanes of an accumulator
    acc_t, byte_t = ir.VectorType(i32, width), ir.VectorType(ir.IntType(8), 4 * width)
    i16_t = ir.VectorType(ir.IntType(16), 2 * width)

    @intrinsic
    def int8_burst(typingctx, iters):
        """``INT8_CHAINS[path]`` int32 accumulators, each ``iters`` times ``acc += dot4(u8 ones, s8 ones)``;
        returns the sum of every lane (``chains * lanes * 4 * iters``)."""
        if iters != types.int64:
            return None

        def codegen(context, builder, sig, args):
            ones8 = ir.Constant(byte_t, [1] * (4 * width))
            accs = [cgutils.alloca_once_value(builder, ir.Constant(acc_t, [0] * width))
                    for _ in range(INT8_CHAINS[path])]
            if path.startswith("vnni"):
                name = f"llvm.x86.avx512.vpdpbusd.{32 * width}"
                dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc_t, [acc_t] * 3), name)
                bytes_ = builder.bitcast(ones8, acc_t)

                def body():
                    for a in accs:
                        builder.store(builder.call(dp, [builder.load(a), bytes_, bytes_]), a)
            else:
                ubsw = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16_t, [byte_t] * 2),
                                                      "llvm.x86.avx2.pmadd.ub.sw")
                wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc_t, [i16_t] * 2),
                                                    "llvm.x86.avx2.pmadd.wd")
                ones16 = ir.Constant(i16_t, [1] * (2 * width))

                def body():
                    for a in accs:  # each chain its own opaque operand: one product per chain and step
                        v = _opaque(builder, ones8)
                        pairs = builder.call(ubsw, [v, ones8])
                        builder.store(builder.add(builder.load(a), builder.call(wd, [pairs, ones16])), a)

            _loop(builder, args[0], body)
            total = builder.load(accs[0])
            for a in accs[1:]:
                total = builder.add(total, builder.load(a))
            out = ir.Constant(ir.IntType(64), 0)
            for i in range(width):
                out = builder.add(out, builder.sext(builder.extract_element(total, ir.Constant(i32, i)),
                                                    ir.IntType(64)))
            return out

        return types.int64(types.int64), codegen

    return int8_burst


_FMA, _INT8 = {}, {}


def fma_kernel(lanes: int):
    """A parallel loop of :func:`fma_burst` streams, compiled once per vector width."""
    if lanes not in _FMA:
        burst = _make_fma_burst(lanes)

        @njit(parallel=True)
        def run(items, iters):
            out = np.zeros(items)
            for it in prange(items):
                out[it] = burst(iters)
            return out

        _FMA[lanes] = run
    return _FMA[lanes]


def int8_kernel(path: str):
    """A parallel loop of :func:`int8_burst` streams, compiled once per path."""
    if path not in _INT8:
        burst = _make_int8_burst(path)

        @njit(parallel=True)
        def run(items, iters):
            out = np.zeros(items, np.int64)
            for it in prange(items):
                out[it] = burst(iters)
            return out

        _INT8[path] = run
    return _INT8[path]


def arithmetic_peaks(threads: int, reps: int = 5, clock=time.perf_counter) -> dict:
    """fp32 and int8 MAC/s peaks on ``threads`` threads (best of ``reps`` interleaved calls, ~50 ms each), with
    the path each used. Call :func:`cuda_numba.bench_machine.set_threads` first."""
    lanes, path = fp32_lanes(), int8_path()
    fma, dot = fma_kernel(lanes), int8_kernel(path)
    fma(1, 10)  # compile outside the timing
    try:
        dot(1, 10)
    except Exception as e:  # a compiler without this CPU's VNNI: the AVX2 pattern, and the reason in the result
        path, dot = f"avx2 ({path} did not compile: {type(e).__name__})", int8_kernel("avx2")
        dot(1, 10)
    items = 4 * threads
    int8_lanes = 16 if path == "vnni512" else 8
    fma_iters, int8_iters = 2_000_000 // threads, 2_000_000 // threads
    times = interleaved_times({"fp32": lambda: fma(items, fma_iters), "int8": lambda: dot(items, int8_iters)}, reps,
                              clock=clock)
    fp32_macs = items * fma_iters * FMA_CHAINS * lanes
    int8_macs = items * int8_iters * INT8_CHAINS[path.split()[0]] * int8_lanes * 4
    return {"fp32_peak_gmacs": fp32_macs / min(times["fp32"]) / 1e9, "fp32_lanes": lanes,
            "int8_peak_gmacs": int8_macs / min(times["int8"]) / 1e9, "int8_path": path}
