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
    XOR + popcount on registers, ``s ^= m; acc += popcount(s)`` on
    ``BINARY_CHAINS`` vectors of the widest width the CPU has, in the two
    instruction mixes a binary kernel can use: ``qword`` (``llvm.ctpop`` on
    64-bit lanes, one ``VPOPCNTQ`` with AVX-512 VPOPCNTDQ, else the nibble
    lookup of two ``vpshufb`` plus a ``vpsadbw`` per vector: the engine's
    mix) and ``byte`` (the lookup's byte counts summed in bytes for 31 steps,
    then one ``vpsadbw`` into 64-bit lanes: one instruction fewer per vector
    where there is no ``VPOPCNTQ``). The binary peak is the faster of the two,
    and of the engine's own micro-kernel on L1-resident words
    (:func:`cuda_numba.bench_machine.peak_rates`): no load, no store, no
    epilogue, so no binary convolution on this CPU can exceed it.

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

BINARY_CHAINS = {"qword": 6, "byte": 4}  # 2 or 3 vectors each (state, byte and qword sums) + 3 constants <= 16
BYTE_BLOCK = 31  # steps of byte sums between flushes: 31 x 8 bits <= 255, whatever the data
FMA_CHAINS = 12  # independent accumulators: >= latency (4) x FMA units (2), and 12 + 2 vectors fit 16 registers
INT8_CHAINS = {"avx2": 4, "vnni256": 10, "vnni512": 10}  # AVX2: only vpaddd (latency 1) is on the chain


def host_features() -> set[str]:
    """The CPU features LLVM sees on this machine (``avx2``, ``avx512f``, ``avx512vnni``, ``avxvnni`` ...)."""
    return {k for k, v in llvm.get_host_cpu_features().items() if v}


def fp32_lanes(features: set[str] | None = None) -> int:
    return 16 if "avx512f" in (host_features() if features is None else features) else 8


def binary_bits(features: set[str] | None = None) -> int:
    """Bits of the vectors the binary micro-kernels use: 512 where the CPU has AVX-512 with byte ops, else 256."""
    return 512 if {"avx512f", "avx512bw"} <= (host_features() if features is None else features) else 256


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


def _make_binary_burst(kind: str, bits: int):
    i64, i8 = ir.IntType(64), ir.IntType(8)
    q_t, b_t = ir.VectorType(i64, bits // 64), ir.VectorType(i8, bits // 8)
    chains = BINARY_CHAINS[kind]

    @intrinsic
    def binary_burst(typingctx, iters):
        """``chains`` vectors ``s`` (from 0), each step ``s ^= m; acc += popcount(s)`` with ``m`` all ones;
        returns the sum of every lane: ``chains * bits * ceil(T / 2)`` for ``T`` steps (``s`` is all ones on
        odd steps). ``qword``: ``T = iters``; ``byte``: ``T = iters * BYTE_BLOCK`` (``iters`` blocks, each
        summed in bytes, then flushed into 64-bit lanes)."""
        if iters != types.int64:
            return None

        def codegen(context, builder, sig, args):
            ones = ir.Constant(q_t, [(1 << 64) - 1] * (bits // 64))
            state = [cgutils.alloca_once_value(builder, ir.Constant(q_t, [0] * (bits // 64))) for _ in range(chains)]
            acc = [cgutils.alloca_once_value(builder, ir.Constant(q_t, [0] * (bits // 64))) for _ in range(chains)]

            def flip(m, k):  # s ^= m, the XOR of the binary MAC; m unknown, so s is too
                s_new = builder.xor(builder.load(state[k]), m)
                builder.store(s_new, state[k])
                return s_new

            if kind == "qword":
                ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(q_t, [q_t]),
                                                       f"llvm.ctpop.v{bits // 64}i64")

                def body():
                    m = _opaque(builder, ones)
                    for k in range(chains):
                        builder.store(builder.add(builder.load(acc[k]), builder.call(ctpop, [flip(m, k)])), acc[k])
            else:
                ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(b_t, [b_t]),
                                                       f"llvm.ctpop.v{bits // 8}i8")
                psad = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(q_t, [b_t, b_t]),
                    "llvm.x86.avx512.psad.bw.512" if bits == 512 else "llvm.x86.avx2.psad.bw")
                zero8 = ir.Constant(b_t, [0] * (bits // 8))
                sums = [cgutils.alloca_once_value(builder, zero8) for _ in range(chains)]

                def block():
                    for _ in range(BYTE_BLOCK):
                        m = _opaque(builder, ones)
                        for k in range(chains):
                            count = builder.call(ctpop, [builder.bitcast(flip(m, k), b_t)])
                            builder.store(builder.add(builder.load(sums[k]), count), sums[k])
                    for k in range(chains):  # flush the byte sums before they can wrap
                        builder.store(builder.add(builder.load(acc[k]), builder.call(psad, [builder.load(sums[k]),
                                                                                               zero8])), acc[k])
                        builder.store(zero8, sums[k])
                body = block

            _loop(builder, args[0], body)
            total = builder.load(acc[0])
            for a in acc[1:]:
                total = builder.add(total, builder.load(a))
            out = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
            for i in range(1, bits // 64):
                out = builder.add(out, builder.extract_element(total, ir.Constant(ir.IntType(32), i)))
            return out

        return types.int64(types.int64), codegen

    return binary_burst


_STREAMS: dict = {}


def _streams(key, make_burst, dtype):
    """A parallel loop of ``items`` independent streams of one burst, ``out[i] = burst(iters)``; compiled once per
    ``key``."""
    if key not in _STREAMS:
        burst = make_burst()

        @njit(parallel=True)
        def run(items, iters):
            out = np.zeros(items, dtype)
            for it in prange(items):
                out[it] = burst(iters)
            return out

        _STREAMS[key] = run
    return _STREAMS[key]


def binary_kernel(kind: str, bits: int):
    """Streams of :func:`binary_burst` (``kind`` ``qword`` or ``byte``, ``bits``-bit vectors)."""
    return _streams(("binary", kind, bits), lambda: _make_binary_burst(kind, bits), np.int64)


def binary_steps(kind: str, iters: int) -> int:
    """Steps ``T`` of one stream of :func:`binary_kernel` called with ``iters``."""
    return iters * (BYTE_BLOCK if kind == "byte" else 1)


def fma_kernel(lanes: int):
    """Streams of :func:`fma_burst` (``lanes`` fp32 lanes a vector)."""
    return _streams(("fp32", lanes), lambda: _make_fma_burst(lanes), np.float64)


def int8_kernel(path: str):
    """Streams of :func:`int8_burst` (``path`` as :func:`int8_path` names it)."""
    return _streams(("int8", path), lambda: _make_int8_burst(path), np.int64)


def binary_peaks(threads: int, reps: int = 5, clock=time.perf_counter) -> dict:
    """Binary MAC/s of the two register micro-kernels on ``threads`` threads (best of ``reps`` interleaved calls,
    ~50 ms each): ``{"qword": ..., "byte": ...}`` in T binary MAC/s, and the vector width used."""
    bits, items = binary_bits(), 4 * threads
    kernels = {kind: binary_kernel(kind, bits) for kind in BINARY_CHAINS}
    iters = {"qword": 600_000 // threads, "byte": 20_000 // threads}
    for f in kernels.values():
        f(1, 2)  # compile outside the timing
    times = interleaved_times({k: (lambda f=f, n=iters[k]: f(items, n)) for k, f in kernels.items()}, reps,
                              clock=clock)
    out = {k: items * BINARY_CHAINS[k] * bits * binary_steps(k, iters[k]) / min(times[k]) / 1e12 for k in kernels}
    return {**out, "bits": bits}


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
