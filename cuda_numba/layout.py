"""The packed bit layout shared by every kernel (CPU and CUDA), and packing.

Layout (one for activations, weights and voter outputs)
--------------------------------------------------------
* **word**: unsigned 64-bit (``uint64``; torch tensors carry the same bits as
  ``int64`` because torch's ``uint64`` supports few operations).
* **bit value**: bit 1 stands for +1, bit 0 for -1 (STUDY.md §2), with
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
inverse unpacking to ±1; and a NumPy reference packer for weights and tests.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

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

    One (image, word) per work item: each of the word's 64 channel planes is
    read sequentially and its sign bits are OR-ed into a plane of words kept
    in L1 (vectorized: compare, widen, shift, or), then scattered to the
    NHWC output. Reading whole planes keeps the reads sequential; a loop over
    pixels would stride by H*W floats per channel.
    """
    B, C, H, W = x.shape
    NW = out.shape[3]
    HW = H * W
    xf = x.reshape(B, C, HW)
    for r in prange(B * NW):
        b = r // NW
        j = r - b * NW
        tmp = np.zeros(HW, np.uint64)
        for c in range(j * 64, min(C, (j + 1) * 64)):
            sh = shift[c]
            pos = np.uint64(c - j * 64)
            plane = xf[b, c]
            for p in range(HW):
                tmp[p] |= np.uint64(plane[p] + sh >= 0) << pos
        for h in range(H):
            for w in range(W):
                out[b, pad + h, pad + w, j] = tmp[h * W + w]


@njit(parallel=True, cache=True)
def pack_nhwc(x, shift, out, pad):
    """Pack float32 ``x [B, H, W, C]`` (channels-last, C-contiguous) into ``out[:, pad:pad+H, pad:pad+W, :]``."""
    B, H, W, C = x.shape
    NW = out.shape[3]
    for r in prange(B * H):
        b = r // H
        h = r - b * H
        for w in range(W):
            for j in range(NW):
                word = np.uint64(0)
                for c in range(j * 64, min(C, (j + 1) * 64)):
                    word |= np.uint64(x[b, h, w, c] + shift[c] >= 0) << np.uint64(c - j * 64)
                out[b, pad + h, pad + w, j] = word


@njit(parallel=True, cache=True)
def unpack_nhwc(bits, out):
    """``bits [B, H, W, NW]`` -> ±1 float32 ``out [B, H, W, C]`` (C taken from ``out``)."""
    B, H, W, C = out.shape
    for r in prange(B * H):
        b = r // H
        h = r - b * H
        for w in range(W):
            for c in range(C):
                bit = (bits[b, h, w, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)
                out[b, h, w, c] = np.float32(2.0) * np.float32(bit) - np.float32(1.0)


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
    unpack_nhwc(np.ascontiguousarray(bits), out)
    return out
