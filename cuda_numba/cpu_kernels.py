"""CPU bit convolutions (``numba.njit(parallel=True)``): XNOR + popcount, MV, HMV.

Inputs are packed activations ``[B, H, W, NW]`` (:mod:`cuda_numba.layout`) and
weights prepared once per layer by :func:`prepare_cpu_weights`. Any kernel
size, stride and zero padding; padded taps are left out of both the popcount
and ``N``, exactly as the float simulation's zero padding of the *binarized*
input (docs/SEMANTICS.md, Padding).

How it is computed (a GEMM over packed rows)
-------------------------------------------
A pixel's *row* is the list of words its output needs, and the weights of
every output channel are laid out in the same order; the register-blocked
micro-kernels of :mod:`cuda_numba.bitops` then count disagreements for
4 pixels x 16 output channels per call (``TILE_P`` x ``TILE_V``). Rows come
in two forms:

* **direct** (XNOR and MV with ``C % 64 == 0``, every ResNet-18 layer): the
  input carries a zero border of ``padding`` pixels (``pack_activations(...,
  pad=)``, or one padding copy here), and a pixel's row is read in place as
  ``kh`` segments of ``kw*NW`` consecutive words, one per kernel row. No im2col.
* **streams** (HMV, or channel counts not a multiple of 64): the input
  channels split into ``G`` contiguous blocks (``G = 1`` without HMV); block
  ``g`` of a pixel becomes one bit stream, its ``c = C/G`` channels at tap 0,
  then tap 1, ... (bit ``t*c + i`` = channel ``g*c + i`` at tap ``t``), zero-
  padded to ``Kg = ceil(T*c/64)`` words, built per chunk of pixels (im2col)
  into a buffer that stays in cache. Odd channel counts waste no words but
  the stream's last; an HMV block is one segment of the micro-kernel.

Padded taps hold zero fields, so a count ``D_g`` also includes the weight's
+1 bits there. Rather than masking, the epilogue compares with a per-pixel
threshold ``base = N_g + 2*corr_g`` (``N_g = c * valid taps``, ``corr_g`` =
+1 weight bits at the padded taps), precomputed per *border pattern* (9 for a
3x3 conv with padding 1) by :meth:`CpuWeights.border_table`:
``s_g = base - 2*D_g``. Then, fused into the micro-kernel's epilogue:

* popcount: ``s`` stored as int16 (int32 when ``kh*kw*C > 32767``) ``[B, Ho, Wo, Co]``;
* MV: bit ``2*D <= base`` (``s >= 0``, tie -> +1), packed ``[B, Ho, Wo, ceil(Co/64)]``;
* HMV: the inner votes of every block, then the bit-sliced
  :func:`cuda_numba.bitops.tree_vote_masks` over 64 outputs at once.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .bitops import TILE_P, TILE_V, vote_plan
from .chunk_conv import chunk_rows, chunk_tiles
from .layout import n_words

MODE_POPCOUNT, MODE_MV, MODE_HMV = 0, 1, 2
MAX_CHUNK = 64  # pixels per chunk: each weight slice is reused over 16 pixel tiles


class CpuWeights:
    """Weights of one binary convolution in the CPU kernels' stream layout.

    Built from real or ±1 weights ``[Co, Ci, kh, kw]`` (bit = ``w >= 0``), with
    ``blocks`` contiguous input-channel blocks (1 for XNOR/MV). Attributes:
    ``panel`` (uint64, ``[ceil(Co/16), K, 16]`` flattened: 16 output
    channels' stream words interleaved per k), ``wpop`` (int64 ``[G, T, Co]``,
    +1 weights per block, tap and output channel).
    """

    def __init__(self, w: np.ndarray, blocks: int = 1):
        w = np.asarray(w)
        if w.ndim != 4:
            raise ValueError(f"weights must be [Co, Ci, kh, kw], got shape {w.shape}")
        co, ci, kh, kw = w.shape
        if blocks < 1 or ci % blocks:
            raise ValueError(f"{blocks} blocks must divide the {ci} input channels")
        if kh * kw > 62:
            raise ValueError("kernels with more than 62 taps are not supported")
        self.co, self.ci, self.kh, self.kw, self.blocks = co, ci, kh, kw, blocks
        t, c = kh * kw, ci // blocks
        self.kg = -(-t * c // 64)
        self.k = blocks * self.kg
        bits = (w >= 0).reshape(co, blocks, c, t).transpose(0, 1, 3, 2)  # [Co, G, T, c]
        self.wpop = np.ascontiguousarray(bits.sum(-1).transpose(1, 2, 0), dtype=np.int64)  # [G, T, Co]
        stream = np.zeros((co, blocks, self.kg * 64), dtype=bool)
        stream[:, :, : t * c] = bits.reshape(co, blocks, t * c)
        words = np.packbits(stream, axis=-1, bitorder="little").view("<u8").reshape(co, self.k)
        n_ot = -(-co // TILE_V)
        padded = np.zeros((n_ot * TILE_V, self.k), np.uint64)  # outputs beyond Co: zero weights, results dropped
        padded[:co] = words
        self.panel = np.ascontiguousarray(padded.reshape(n_ot, TILE_V, self.k).transpose(0, 2, 1)).ravel()

        self.co_pad = n_ot * TILE_V
        self._tables: dict = {}

    def out_size(self, h: int, w: int, stride: int, padding: int) -> tuple[int, int]:
        return (h + 2 * padding - self.kh) // stride + 1, (w + 2 * padding - self.kw) // stride + 1

    def border_table(self, h: int, w: int, stride: int, padding: int):
        """Per-pixel thresholds ``base[u, g, o] = N_g + 2*corr_g`` and the pattern index per output pixel.

        ``u`` enumerates the distinct sets of valid taps (9 for a 3x3 conv with
        padding 1: interior, 4 edges, 4 corners), ``N_g = c * (valid taps)``
        and ``corr_g`` the +1 weight bits at the padded taps, which the
        kernel counted as disagreements against the zero fields; then
        ``s_g = base - 2*count``. Cached per input geometry.
        """
        key = (h, w, stride, padding)
        if key not in self._tables:
            ho, wo = self.out_size(h, w, stride, padding)
            hi = np.arange(ho)[:, None] * stride - padding + np.arange(self.kh)[None, :]
            wi = np.arange(wo)[:, None] * stride - padding + np.arange(self.kw)[None, :]
            vh, vw = (hi >= 0) & (hi < h), (wi >= 0) & (wi < w)
            valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(ho * wo, self.kh * self.kw)
            uniq, inv = np.unique(valid, axis=0, return_inverse=True)
            corr = np.einsum("ut,gto->ugo", (~uniq).astype(np.int64), self.wpop)
            base = np.zeros((len(uniq), self.blocks, self.co_pad), np.int64)
            base[:, :, : self.co] = (self.ci // self.blocks) * uniq.sum(1)[:, None, None] + 2 * corr
            self._tables[key] = (base.ravel(), inv.reshape(-1).astype(np.int64))
        return self._tables[key]


def prepare_cpu_weights(w, blocks: int = 1) -> CpuWeights:
    """Prepare weights (``[Co, Ci, kh, kw]``, any real values, sign taken) for the CPU kernels."""
    return CpuWeights(np.asarray(w), blocks)


@njit(parallel=True, cache=True)
def _conv_kernel(xflat, B, H, W, NW, in_pad, panel, base, pix_u, C, Co, G, kh, kw, stride, pad, Ho, Wo,
                 chunk, n_items, mode, fanins, tie, wide, out16, out32, out_b):
    T = kh * kw
    c = C // G
    Kg = (T * c + 63) // 64
    K = G * Kg
    co_pad = panel.shape[0] // K
    M = B * Ho * Wo
    n_chunks = (M + chunk - 1) // chunk
    per_item = (n_chunks + n_items - 1) // n_items
    # direct: the input carries its zero border, taps are read in place (kh segments of kw*NW words)
    direct = in_pad == pad and G == 1 and C % 64 == 0
    Hp = H + 2 * in_pad
    Wp = W + 2 * in_pad
    l16 = out16.ravel()
    l32 = out32.ravel()
    lb = out_b.ravel()
    NWo = out_b.shape[1]
    src_nseg = kh if direct else 1
    sstride = Wp * NW if direct else 0
    slen = kw * NW if direct else Kg
    popcount, mv = mode == MODE_POPCOUNT, mode == MODE_MV
    for item in prange(n_items):  # one work item per thread: its buffers are allocated once
        A = np.zeros(1 if direct else chunk * K, np.uint64)  # im2col rows; rows past M stay 0
        pix_off = np.zeros(chunk, np.int64)  # where each row starts (padded input or A)
        urow = np.zeros(chunk, np.int64)     # border pattern of each row (row index into base)
        roff = np.zeros(TILE_P, np.int64)
        toff = np.zeros(TILE_P, np.int64)
        D = np.empty(TILE_P * TILE_V, np.uint64)
        V = np.empty(G, np.uint64)
        planes = np.empty(8, np.uint64)
        src = xflat if direct else A
        for ch in range(item * per_item, min(n_chunks, (item + 1) * per_item)):
            m0 = ch * chunk
            rows = min(chunk, M - m0)
            chunk_rows(m0, rows, chunk, direct, xflat, A, pix_u, pix_off, urow, H, W, Hp, Wp, NW, c, G, Kg, K, kh, kw,
                       stride, pad, Ho, Wo)
            # int16 or int32 sums: two specializations of the inlined tiles, one branch per chunk
            if wide:
                chunk_tiles(src, pix_off, urow, rows, src_nseg, sstride, slen, panel, base, Co, co_pad, G, Kg, K,
                            popcount, mv, fanins, tie, l32, m0 * Co, lb, m0 * NWo, NWo, roff, toff, D, V, planes)
            else:
                chunk_tiles(src, pix_off, urow, rows, src_nseg, sstride, slen, panel, base, Co, co_pad, G, Kg, K,
                            popcount, mv, fanins, tie, l16, m0 * Co, lb, m0 * NWo, NWo, roff, toff, D, V, planes)


def _chunk_size(m: int) -> int:
    """Pixels per chunk: up to MAX_CHUNK, but at least ~4 chunks per thread."""
    per = -(-m // (4 * numba.get_num_threads()))
    return int(min(MAX_CHUNK, max(TILE_P, -(-per // TILE_P) * TILE_P)))


def sum_dtype(wts: CpuWeights):
    """int16 when every ``|s| <= kh*kw*Ci`` fits (all ResNet-18 layers: halves the output traffic), else int32."""
    return np.int16 if wts.kh * wts.kw * wts.ci <= np.iinfo(np.int16).max else np.int32


def pad_packed(xb: np.ndarray, pad: int) -> np.ndarray:
    """Packed activations with ``pad`` zero pixels around H and W (zero words = padded taps)."""
    if pad == 0:
        return np.ascontiguousarray(xb)
    B, H, W, NW = xb.shape
    out = np.zeros((B, H + 2 * pad, W + 2 * pad, NW), np.uint64)
    out[:, pad:pad + H, pad:pad + W] = xb
    return out


def _out_buffer(out, shape, dtype, zero: bool):
    """``out`` when it fits (reused: no page faults on a fresh allocation), else a new array."""
    if out is not None and out.shape == shape and out.dtype == dtype and out.flags.c_contiguous:
        if zero:
            out.fill(0)
        return out
    return (np.zeros if zero else np.empty)(shape, dtype)


def _run(xb, wts: CpuWeights, stride, padding, mode, fanins=None, tie=0, in_pad=0, out=None):
    xb = np.ascontiguousarray(xb, dtype=np.uint64)
    B, Hp, Wp, NW = xb.shape
    H, W = Hp - 2 * in_pad, Wp - 2 * in_pad
    if NW != n_words(wts.ci):
        raise ValueError(f"packed input has {NW} words per pixel; {wts.ci} channels need {n_words(wts.ci)}")
    direct = direct_path(wts)
    if in_pad and (not direct or in_pad != padding):
        xb, in_pad = np.ascontiguousarray(xb[:, in_pad:in_pad + H, in_pad:in_pad + W]), 0
    if direct and in_pad != padding:
        # the direct path reads taps in place from a zero-bordered input: pad once (32x smaller than fp32)
        xb, in_pad = pad_packed(xb, padding), padding
    ho, wo = wts.out_size(H, W, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError("output would be empty")
    m = B * ho * wo
    # int16 and int32 outputs are both arguments (the unused one a 1x1 dummy): one compiled specialization
    out16, out32 = np.empty((1, 1), np.int16), np.empty((1, 1), np.int32)
    out_b = np.zeros((1, 1), np.uint64)
    wide = bool(sum_dtype(wts) == np.int32)
    if mode != MODE_POPCOUNT:
        out_b = _out_buffer(out, (m, n_words(wts.co)), np.uint64, True)
    elif wide:
        out32 = _out_buffer(out, (m, wts.co), np.int32, False)
    else:
        out16 = _out_buffer(out, (m, wts.co), np.int16, False)
    fan = np.ones(1, np.int64) if fanins is None else fanins
    base, pix_u = wts.border_table(H, W, stride, padding)
    _conv_kernel(xb.ravel(), B, H, W, NW, in_pad, wts.panel, base, pix_u, wts.ci, wts.co, wts.blocks,
                 wts.kh, wts.kw, int(stride), int(padding), ho, wo, _chunk_size(m), numba.get_num_threads(), mode,
                 fan, int(tie),
                 wide, out16, out32, out_b)
    if mode == MODE_POPCOUNT:
        return (out32 if wide else out16).reshape(B, ho, wo, wts.co)
    return out_b.reshape(B, ho, wo, n_words(wts.co))


def conv_popcount_cpu(xb: np.ndarray, wts: CpuWeights, stride: int = 1, padding: int = 1,
                      in_pad: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """XNOR + popcount: the integer dot products ``s`` as ``[B, Ho, Wo, Co]`` (:func:`sum_dtype`: int16 or int32).

    ``xb``: packed activations, carrying ``in_pad`` zero pixels of border
    (``pack_activations(..., pad=padding)`` saves the kernel a padding copy).
    ``out``: an ``[M, Co]`` array of the right dtype to reuse (all three kernels).
    """
    if wts.blocks != 1:
        raise ValueError("the popcount kernel needs weights prepared with blocks=1")
    return _run(xb, wts, stride, padding, MODE_POPCOUNT, in_pad=in_pad, out=out)


def conv_mv_cpu(xb: np.ndarray, wts: CpuWeights, stride: int = 1, padding: int = 1, in_pad: int = 0,
                out: np.ndarray | None = None) -> np.ndarray:
    """XNOR + majority voter: ``sign(s)`` (tie +1) packed as ``[B, Ho, Wo, ceil(Co/64)]`` uint64."""
    if wts.blocks != 1:
        raise ValueError("the MV kernel needs weights prepared with blocks=1")
    return _run(xb, wts, stride, padding, MODE_MV, in_pad=in_pad, out=out)


def conv_hmv_cpu(xb: np.ndarray, wts: CpuWeights, stride: int = 1, padding: int = 1,
                 fanins=4, tie: str = "pos", in_pad: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """XNOR + hierarchical MV (fan-ins outer->inner, tie rule), packed like :func:`conv_mv_cpu`.

    ``wts`` must be prepared with ``blocks = prod(fanins)``.
    """
    fan, nblocks, tie_code = vote_plan(fanins, tie)
    if wts.blocks != nblocks:
        raise ValueError(f"fan-ins {tuple(fan)} need weights prepared with blocks={nblocks}, got {wts.blocks}")
    return _run(xb, wts, stride, padding, MODE_HMV, fan, tie_code, in_pad=in_pad, out=out)


def direct_path(wts: CpuWeights) -> bool:
    """Whether a layer reads its taps in place (no im2col) and so wants a zero-bordered packed input."""
    return wts.blocks == 1 and wts.ci % 64 == 0
