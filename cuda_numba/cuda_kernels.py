"""CUDA bit convolutions (``numba.cuda``): packing, XNOR + popcount, MV, HMV.

Same layout and semantics as the CPU kernels (:mod:`cuda_numba.layout`):
packed activations ``[B, H, W, NW]`` uint64, channel ``c`` at bit ``c % 64``
of word ``c // 64``, bit 1 = +1; padded taps are skipped, so ``N`` counts
only the valid taps; ties vote +1; the HMV follows
:func:`cuda_numba.bitops.tree_vote_py`, compiled here as a device function.

Kernels: one thread per (output pixel, output channel); ``threadIdx.x`` runs
over 32 consecutive output channels so that a warp reads one activation word
(a broadcast) and 32 consecutive weight words (coalesced, weights stored as
``[taps, NW, Co]``). MV/HMV outputs are packed per warp: each lane ORs its bit
into a shared 32-bit word, and lane 0 stores it into the uint32 view of the
uint64 output (little-endian: uint32 ``2j`` is the low half of word ``j``).
The voter kernels launch one block column per uint32 half, ``2 * ceil(Co/64)``,
not ``ceil(Co/32)``: when ``Co % 64`` is in 1..32 the last word's upper half
has no output channel, and its block (all lanes ``o >= Co``, voting 0) still
stores the zero half that :mod:`cuda_numba.layout` requires above ``Co``; an
unlaunched half would keep whatever the output buffer held.
Shared-memory atomics rather than ``ballot_sync`` because the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, used by the tests) implements only the former.
Words stay unsigned throughout: the simulator's ``popc`` is wrong on negative
values.

Launchers take and return Numba device arrays (``cuda.as_cuda_array`` wraps
torch CUDA tensors without a copy; see :mod:`cuda_numba.ops`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .bitops import tree_vote_py, vote_plan
from .layout import n_words

TPB_X, TPB_Y = 32, 8  # 32 output channels (one warp) x 8 pixels per block
_MAX_GRID_Y = 65535

tree_vote_dev = cuda.jit(device=True)(tree_vote_py)


def prepare_cuda_weights(w: np.ndarray) -> "cuda.devicearray.DeviceNDArray":
    """Real or ±1 weights ``[Co, Ci, kh, kw]`` -> device uint64 ``[kh*kw, NW, Co]`` (bit = ``w >= 0``)."""
    from .layout import pack_reference

    w = np.asarray(w)
    co, ci, kh, kw = w.shape
    packed = pack_reference(w, axis=1)  # [Co, kh, kw, NW]
    return cuda.to_device(np.ascontiguousarray(packed.reshape(co, kh * kw, -1).transpose(1, 2, 0)))


@cuda.jit(device=True)
def _block_count(x, w, b, ho, wo, o, lo, hi_bit, H, W, kh, kw, stride, pad):
    """(disagreements, valid taps) of channels ``[lo, hi_bit)`` for one output."""
    d = 0
    nval = 0
    ones = ~np.uint64(0)
    for ky in range(kh):
        hh = ho * stride - pad + ky
        for kx in range(kw):
            ww = wo * stride - pad + kx
            if hh < 0 or hh >= H or ww < 0 or ww >= W:
                continue  # padded tap: left out of the count and of N
            nval += 1
            t = ky * kw + kx
            for j in range(lo >> 6, ((hi_bit - 1) >> 6) + 1):
                a = max(lo, j * 64) - j * 64
                e = min(hi_bit, j * 64 + 64) - j * 64
                mask = ones if e - a == 64 else ((np.uint64(1) << np.uint64(e - a)) - np.uint64(1)) << np.uint64(a)
                d += np.int64(cuda.popc((x[b, hh, ww, j] ^ w[t, j, o]) & mask))
    return d, nval


@cuda.jit
def _conv_kernel(x, w, C, Co, kh, kw, stride, pad, Ho, Wo, mode, G, fanins, tie, out_s, out32):
    """mode 0: int32 ``out_s[m, o] = s``; 1: MV bits; 2: HMV bits (``out32``: uint32 view of the words).

    Voter modes write ``out32[m, blockIdx.x]`` whole, channels ``o >= Co`` as 0 bits.
    """
    B, H, W, NW = x.shape
    M = B * Ho * Wo
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    o = cuda.blockIdx.x * TPB_X + tx
    votes_sh = cuda.shared.array(TPB_Y, np.uint32)
    step = cuda.gridDim.y * TPB_Y
    m0 = cuda.blockIdx.y * TPB_Y
    while m0 < M:  # grid-stride over pixels; uniform trip count in a block (syncthreads below)
        m = m0 + ty
        bit = np.uint32(0)
        if m < M and o < Co:
            b = m // (Ho * Wo)
            r = m - b * Ho * Wo
            ho = r // Wo
            wo = r - ho * Wo
            if mode == 2:
                c = C // G
                votes = np.uint64(0)
                for g in range(G):
                    d, nval = _block_count(x, w, b, ho, wo, o, g * c, g * c + c, H, W, kh, kw, stride, pad)
                    if nval * c - 2 * d >= 0:
                        votes |= np.uint64(1) << np.uint64(g)
                bit = np.uint32(tree_vote_dev(votes, G, fanins, tie))
            else:
                d, nval = _block_count(x, w, b, ho, wo, o, 0, C, H, W, kh, kw, stride, pad)
                s = nval * C - 2 * d
                if mode == 0:
                    out_s[m, o] = s
                elif s >= 0:
                    bit = np.uint32(1)
        if mode != 0:
            if tx == 0:
                votes_sh[ty] = np.uint32(0)
            cuda.syncthreads()
            if bit:
                cuda.atomic.or_(votes_sh, ty, np.uint32(1) << np.uint32(tx))
            cuda.syncthreads()
            if tx == 0 and m < M:
                out32[m, cuda.blockIdx.x] = votes_sh[ty]
            cuda.syncthreads()
        m0 += step


@cuda.jit
def _pack_kernel(x, shift, out):
    """float32 NCHW ``x`` -> ``out [B, H, W, NW]``: one thread per (pixel, word); bit = ``x + shift >= 0``."""
    B, C, H, W = x.shape
    NW = out.shape[3]
    i = cuda.grid(1)
    if i >= B * H * W * NW:
        return
    j = i // (B * H * W)   # word outermost: consecutive threads read consecutive pixels (coalesced)
    p = i - j * (B * H * W)
    b = p // (H * W)
    r = p - b * H * W
    h = r // W
    ww = r - h * W
    word = np.uint64(0)
    for c in range(j * 64, min(C, j * 64 + 64)):
        if x[b, c, h, ww] + shift[c] >= 0:
            word |= np.uint64(1) << np.uint64(c - j * 64)
    out[b, h, ww, j] = word


@cuda.jit
def _unpack_kernel(bits, out):
    """``bits [B, H, W, NW]`` -> ±1 float32 ``out [B, C, H, W]``, one thread per output value."""
    B, C, H, W = out.shape
    i = cuda.grid(1)
    if i >= B * C * H * W:
        return
    ww = i % W
    h = (i // W) % H
    c = (i // (H * W)) % C
    b = i // (C * H * W)
    v = (bits[b, h, ww, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)
    out[b, c, h, ww] = 1.0 if v else -1.0


def _grid(n_out: int, m: int):
    return (math.ceil(n_out / TPB_X), min(math.ceil(m / TPB_Y), _MAX_GRID_Y)), (TPB_X, TPB_Y)


def _launch(xb, wt, ci, kh, kw, stride, padding, mode, fanins=None, tie="pos", out=None):
    B, H, W, NW = xb.shape
    if NW != n_words(ci):
        raise ValueError(f"packed input has {NW} words per pixel; {ci} channels need {n_words(ci)}")
    taps, _, co = wt.shape
    ho, wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    m = B * ho * wo
    if mode == 2:
        fan, g, tie_code = vote_plan(fanins, tie)
        if ci % g:
            raise ValueError(f"{g} blocks must divide the {ci} input channels")
    else:
        fan, g, tie_code = np.ones(1, np.int64), 1, 0
    d_fan = cuda.to_device(fan)
    if mode == 0:
        out_s = cuda.device_array((m, co), np.int32) if out is None else out.reshape(m, co)
        out32 = cuda.device_array((1, 1), np.uint32)
    else:
        out_b = cuda.device_array((m, n_words(co)), np.uint64) if out is None else out.reshape(m, n_words(co))
        out_s = cuda.device_array((1, 1), np.int32)
        out32 = out_b.view(np.uint32)  # uint32 2j / 2j+1 = low / high half of word j
    # popcount: one thread per output channel; voters: every uint32 half of every output word
    grid, block = _grid(co if mode == 0 else 64 * n_words(co), m)
    _conv_kernel[grid, block](xb, wt, ci, co, kh, kw, stride, padding, ho, wo, mode, g, d_fan, tie_code,
                              out_s, out32)
    if mode == 0:
        return out_s.reshape(B, ho, wo, co)
    return out_b.reshape(B, ho, wo, n_words(co))


def conv_popcount_cuda(xb, wt, ci, kh=3, kw=3, stride=1, padding=1, out=None):
    """XNOR + popcount on the GPU: int32 ``s`` ``[B, Ho, Wo, Co]``. ``wt`` from :func:`prepare_cuda_weights`."""
    return _launch(xb, wt, ci, kh, kw, stride, padding, 0, out=out)


def conv_mv_cuda(xb, wt, ci, kh=3, kw=3, stride=1, padding=1, out=None):
    """XNOR + MV on the GPU: packed ``sign(s)`` (tie +1), ``[B, Ho, Wo, ceil(Co/64)]`` uint64."""
    return _launch(xb, wt, ci, kh, kw, stride, padding, 1, out=out)


def conv_hmv_cuda(xb, wt, ci, kh=3, kw=3, stride=1, padding=1, fanins=4, tie="pos", out=None):
    """XNOR + hierarchical MV on the GPU (fan-ins outer->inner, tie rule), packed like MV."""
    return _launch(xb, wt, ci, kh, kw, stride, padding, 2, fanins, tie, out=out)


def pack_cuda(x, shift, out=None):
    """Device float32 NCHW ``x`` and ``shift [C]`` -> device uint64 ``[B, H, W, NW]``."""
    B, C, H, W = x.shape
    if out is None:
        out = cuda.device_array((B, H, W, n_words(C)), np.uint64)
    n = B * H * W * n_words(C)
    _pack_kernel[math.ceil(n / 256), 256](x, shift, out)
    return out


def unpack_cuda(bits, channels: int, out=None):
    """Device packed ``[B, H, W, NW]`` -> device ±1 float32 ``[B, C, H, W]``."""
    B, H, W, _ = bits.shape
    if out is None:
        out = cuda.device_array((B, channels, H, W), np.float32)
    n = B * channels * H * W
    _unpack_kernel[math.ceil(n / 256), 256](bits, out)
    return out
