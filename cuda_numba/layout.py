"""The packed bit layout shared by every kernel (CPU and CUDA), and packing.

Layout (one for activations, weights and voter outputs)
--------------------------------------------------------
* **word**: unsigned 64-bit (``uint64``; torch tensors carry the same bits as
  ``int64`` because torch's ``uint64`` supports few operations).
* **bit value**: bit 1 stands for +1, bit 0 for -1 (docs/SEMANTICS.md), with
  ``sign(z) = +1`` for ``z >= 0``.
* **bit order**: channel ``c`` is bit ``c % 64`` (LSB first) of word ``c // 64``.
* **activations**: ``[B, H, W, NW]`` with ``NW = ceil(C / 64)``: the channels of
  one pixel are packed along the last axis (NHWC). Bits of the channels
  ``C .. 64*NW - 1`` of the last word are always 0.
* **weights**: ``[C_out, kh, kw, NW]``, the same packing along input channels.
* **MV / HMV outputs**: ``[B, H_out, W_out, ceil(C_out / 64)]``: exactly the
  activation layout, so a voter's output can be the next layer's input.

Because unused bits are 0 in both operands, the kernels count disagreements
``popcount(a XOR w)`` and never mask a word; ``s = N - 2 * disagreements``
with ``N`` the number of valid (channel, tap) terms. Kernel-specific
rearrangements (the CPU im2col bit streams and weight panels, the CUDA
weight transpose) are derived from this layout inside the kernels' modules.

Packing here: Numba CPU kernels that binarize float32 activations, with
ReActNet's per-channel shift fused in (``bit = (x + shift >= 0)``, the same
float32 addition as the torch simulation), from NCHW or NHWC memory; the
way back to float32 (``alpha * s`` and ``±1 * scale`` into NCHW or NHWC
memory, for the converted models); and a NumPy reference packer and
unpacker for weights and tests.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .bitops import sign_bits16_f32, sign_word_f32, transpose64

WORD_BITS = 64
WORD_DTYPE = np.uint64


def n_words(channels: int) -> int:
    """Words per pixel for ``channels`` packed channels."""
    return -(-int(channels) // WORD_BITS)


def pack_reference(pm1: np.ndarray, axis: int = 1) -> np.ndarray:
    """NumPy reference packer: ``+1`` (``>= 0``) -> bit 1, along ``axis``, moved last.

    ``[B, C, H, W]`` with ``axis=1`` gives ``[B, H, W, NW]``; a weight
    ``[Co, Ci, kh, kw]`` gives ``[Co, kh, kw, NW]``.
    """
    a = np.moveaxis(np.asarray(pm1) >= 0, axis, -1)
    c = a.shape[-1]
    pad = n_words(c) * WORD_BITS - c
    if pad:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    # little bit order within bytes + little-endian bytes within a word = LSB-first words
    by = np.packbits(a, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").astype(WORD_DTYPE, copy=False)


def unpack_reference(bits: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_reference` for activations: ``[B, H, W, NW]`` -> ±1 float32 ``[B, C, H, W]``."""
    by = np.ascontiguousarray(bits.astype("<u8")).view(np.uint8)
    a = np.unpackbits(by, axis=-1, bitorder="little")[..., :channels]
    return np.moveaxis(np.where(a == 1, 1.0, -1.0).astype(np.float32), -1, 1)


# --------------------------------------------------------------------------
# Numba packing kernels
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def pack_nchw(x, shift, out, pad):
    """Pack float32 ``x [B, C, H, W]`` (C-contiguous) into ``out[:, pad:pad+H, pad:pad+W, :]``.

    One (image, word) per work item, 64 pixels at a time: each of the
    word's 64 channel planes gives one word of sign bits over the pixels
    (sequential reads, 16-lane vector compares), and a 64x64 bit transpose
    turns those into the pixels' words. Per float that is a fraction of an
    instruction; the former loop (one compare, shift and OR into a pixel's
    word per float) ran 3-4x slower at 8x8 and 4x4 planes.
    """
    B, C, H, W = x.shape
    NW = out.shape[3]
    HW = H * W
    xf = x.reshape(B * C * HW)
    for r in prange(B * NW):
        b = r // NW
        j = r - b * NW
        nc = min(64, C - j * 64)
        m = np.empty(64, np.uint64)
        for p0 in range(0, HW, 64):
            n = min(64, HW - p0)
            n16 = n - n % 16
            for i in range(64):
                word = np.uint64(0)
                if i < nc:
                    c = j * 64 + i
                    sh = shift[c]
                    src = (b * C + c) * HW + p0
                    for q in range(0, n16, 16):
                        word |= sign_bits16_f32(xf, src + q, sh) << np.uint64(q)
                    for q in range(n16, n):
                        word |= np.uint64(xf[src + q] + sh >= 0) << np.uint64(q)
                m[i] = word
            transpose64(m)  # m[p]: the word j of pixel p0 + p
            h = p0 // W
            w = p0 - h * W
            for p in range(n):
                out[b, pad + h, pad + w, j] = m[p]
                w += 1
                if w == W:
                    w = 0
                    h += 1


@njit(parallel=True, cache=True)
def pack_nhwc(x, shift, out, pad):
    """Pack float32 ``x [B, H, W, C]`` (channels-last, C-contiguous) into ``out[:, pad:pad+H, pad:pad+W, :]``.

    Whole words come from :func:`cuda_numba.bitops.sign_word_f32` (vector
    compares straight to bits); a last partial word bit by bit.
    """
    B, H, W, C = x.shape
    NW = out.shape[3]
    full = C // 64
    xf = x.reshape(B * H * W * C)
    for r in prange(B * H):
        b = r // H
        h = r - b * H
        for w in range(W):
            base = ((b * H + h) * W + w) * C
            for j in range(full):
                out[b, pad + h, pad + w, j] = sign_word_f32(xf, base + j * 64, shift, j * 64)
            if full < NW:
                word = np.uint64(0)
                for c in range(full * 64, C):
                    word |= np.uint64(xf[base + c] + shift[c] >= 0) << np.uint64(c - full * 64)
                out[b, pad + h, pad + w, full] = word


# --------------------------------------------------------------------------
# Back to float: kernel outputs (pixel-major [M, Co]) to NCHW or NHWC float32
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def sums_to_float(s, alpha, out, nchw):
    """``y = float32(s) * alpha[o]`` from sums ``s [B*HW, Co]`` into ``out``.

    ``out`` is ``[B, Co, HW]`` (NCHW memory) when ``nchw``, else ``[B, HW, Co]``
    (NHWC memory). The same float32 product as the simulation's ``round(conv) * alpha``.
    """
    M, Co = s.shape
    if nchw:
        B, _, HW = out.shape
        for r in prange(B * Co):  # contiguous writes per channel plane
            b = r // Co
            o = r - b * Co
            for p in range(HW):
                out[b, o, p] = np.float32(s[b * HW + p, o]) * alpha[o]
    else:
        B, HW, _ = out.shape
        for m in prange(M):
            b = m // HW
            for o in range(Co):
                out[b, m - b * HW, o] = np.float32(s[m, o]) * alpha[o]


@njit(parallel=True, cache=True)
def bits_to_float(bits, scale, out, nchw):
    """``y = (+1 or -1) * scale[o]`` from packed ``bits [B*HW, NW]`` into ``out`` (layouts as :func:`sums_to_float`)."""
    if nchw:
        B, Co, HW = out.shape
        for r in prange(B * Co):
            b = r // Co
            o = r - b * Co
            j = o >> 6
            sh = np.uint64(o & 63)
            for p in range(HW):
                bit = (bits[b * HW + p, j] >> sh) & np.uint64(1)
                out[b, o, p] = scale[o] if bit else -scale[o]
    else:
        B, HW, Co = out.shape
        for m in prange(B * HW):
            b = m // HW
            for o in range(Co):
                bit = (bits[m, o >> 6] >> np.uint64(o & 63)) & np.uint64(1)
                out[b, m - b * HW, o] = scale[o] if bit else -scale[o]


def pack_activations(x: np.ndarray, shift: np.ndarray | None = None, channels_last: bool = False,
                     out: np.ndarray | None = None, pad: int = 0) -> np.ndarray:
    """Binarize and pack float32 activations: ``bit = (x + shift >= 0)``.

    ``x`` is ``[B, C, H, W]``, or ``[B, H, W, C]`` with ``channels_last``;
    ``shift`` is per channel (``None`` = no shift). Returns ``[B, H, W, NW]``
    uint64, or with ``pad > 0`` ``[B, H + 2*pad, W + 2*pad, NW]`` with a border
    of zero words: what the CPU kernels' direct path reads (``in_pad=pad``).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if channels_last:
        B, H, W, C = x.shape
    else:
        B, C, H, W = x.shape
    sh = np.zeros(C, np.float32) if shift is None else np.ascontiguousarray(shift, dtype=np.float32)
    if sh.shape != (C,):
        raise ValueError(f"shift must have shape ({C},), got {sh.shape}")
    shape = (B, H + 2 * pad, W + 2 * pad, n_words(C))
    if out is None:
        out = (np.zeros if pad else np.empty)(shape, np.uint64)
    elif out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    (pack_nhwc if channels_last else pack_nchw)(x, sh, out, pad)
    return out


def unpack_activations(bits: np.ndarray, channels: int) -> np.ndarray:
    """Packed ``[B, H, W, NW]`` -> ±1 float32 ``[B, H, W, C]`` (channels last)."""
    B, H, W, NW = bits.shape
    if NW != n_words(channels):
        raise ValueError(f"{channels} channels need {n_words(channels)} words, got {NW}")
    out = np.empty((B, H, W, channels), np.float32)
    bits_to_float(np.ascontiguousarray(bits).reshape(B * H * W, NW), np.ones(channels, np.float32),
                  out.reshape(B, H * W, channels), False)
    return out
