"""The convolution of one chunk of output pixels, shared by the layer kernels and the engine's block kernel.

A chunk is up to :data:`cuda_numba.cpu_kernels.MAX_CHUNK` consecutive output pixels (``m0 .. m0+rows`` of
``[B, Ho, Wo]``) that one thread computes for every output channel:
:func:`chunk_rows` sets up where each pixel's row of packed words starts (in
the zero-bordered input, or in im2col streams it builds), then
:func:`chunk_tiles` runs the register-blocked XOR-popcount micro-kernels of
:mod:`cuda_numba.bitops` over tiles of 4 pixels x 16 output channels and
writes the sums or the votes (the layout and the thresholds are explained in
:mod:`cuda_numba.cpu_kernels`).

Why a module of its own: :func:`cuda_numba.cpu_kernels._conv_kernel` writes a
layer's output and :func:`cuda_numba.engine_kernels.block_kernel` a thread's
scratch that its fused epilogue reads; the convolution itself is the same,
and one definition keeps the two bit for bit alike. Every function here is
``inline="always"``: Numba compiles it into each caller's own loop, as if it
were written there (interleaved timings of both kernels, before and after,
agree within noise).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .bitops import (TILE_P, TILE_V, get_bits, or_bits, tree_vote_masks, xor_popcount_tile, xor_popcount_tile_hmv,
                     xor_popcount_tile_mv, xor_popcount_tile_s)


@njit(inline="always", cache=True)
def im2col_row(A, row, xflat, b, ho, wo, H, W, NW, c, G, Kg, kh, kw, stride, pad):
    """Write the G block streams of output pixel (b, ho, wo) at ``A[row:]`` (zeroed by the caller)."""
    c64 = c // 64
    wi0 = wo * stride - pad
    if c < 64 and 64 % c == 0:
        # fields never straddle a word (e.g. 64 channels in 4 blocks of 16): shift and OR
        fmask = (np.uint64(1) << np.uint64(c)) - np.uint64(1)
        for ky in range(kh):
            hi = ho * stride - pad + ky
            if hi < 0 or hi >= H:
                continue
            for kx in range(max(0, -wi0), min(kw, W - wi0)):
                d = (ky * kw + kx) * c
                dst = row + (d >> 6)
                dsh = np.uint64(d & 63)
                src = ((b * H + hi) * W + wi0 + kx) * NW
                for g in range(G):
                    v = (xflat[src + ((g * c) >> 6)] >> np.uint64((g * c) & 63)) & fmask
                    A[dst + g * Kg] |= v << dsh
        return
    for ky in range(kh):
        hi = ho * stride - pad + ky
        if hi < 0 or hi >= H:
            continue  # padded taps stay zero fields, corrected through base
        for kx in range(max(0, -wi0), min(kw, W - wi0)):
            t = ky * kw + kx
            src = ((b * H + hi) * W + wi0 + kx) * NW
            if c % 64 == 0:  # whole words: word w of the pixel is word q of block g
                g_off = row + t * c64
                q = 0
                for w in range(NW):
                    A[g_off + q] = xflat[src + w]
                    q += 1
                    if q == c64:
                        q = 0
                        g_off += Kg
            else:
                for g in range(G):
                    for s0 in range(0, c, 64):
                        n = min(64, c - s0)
                        or_bits(A, row + g * Kg, t * c + s0, get_bits(xflat, src, g * c + s0, n), n)


@njit(inline="always", cache=True)
def pixel_of(m, Ho, Wo):
    """(image, row, column) of output pixel ``m`` of a ``[B, Ho, Wo]`` output."""
    b = m // (Ho * Wo)
    r = m - b * (Ho * Wo)
    ho = r // Wo
    return b, ho, r - ho * Wo


@njit(inline="always", cache=True)
def next_pixel(b, ho, wo, Ho, Wo):
    """The pixel after ``(b, ho, wo)``: counters, where a walk over rows would divide per row."""
    wo += 1
    if wo == Wo:
        wo = 0
        ho += 1
        if ho == Ho:
            ho = 0
            b += 1
    return b, ho, wo


@njit(inline="always", cache=True)
def chunk_rows(m0, rows, chunk, direct, xflat, A, pix_u, pix_off, urow, H, W, Hp, Wp, NW, c, G, Kg, K, kh, kw,
               stride, pad, Ho, Wo):
    """Set up the rows of the chunk of output pixels ``m0 .. m0+rows``: where each row starts and its border pattern.

    ``pix_off[i]``: the row's offset in the zero-bordered input (direct) or in ``A``, where its
    im2col streams are built (``A`` zeroed first); ``urow[i]``: its border pattern (row of ``base``).
    """
    if not direct:
        A[: chunk * K] = 0
    b, ho, wo = pixel_of(m0, Ho, Wo)
    for i in range(rows):
        urow[i] = pix_u[ho * Wo + wo]
        if direct:
            pix_off[i] = ((b * Hp + ho * stride) * Wp + wo * stride) * NW
        else:
            pix_off[i] = i * K
            im2col_row(A, i * K, xflat, b, ho, wo, H, W, NW, c, G, Kg, kh, kw, stride, pad)
        b, ho, wo = next_pixel(b, ho, wo, Ho, Wo)


@njit(inline="always", cache=True)
def chunk_tiles(src, pix_off, urow, rows, src_nseg, sstride, slen, panel, base, Co, co_pad, G, Kg, K, popcount, mv,
                fanins, tie, sums, sums_at, votes, votes_at, NWo, roff, toff, D, V, planes):
    """The chunk's convolution in tiles of 4 pixels x 16 output channels, after :func:`chunk_rows`.

    ``popcount``: the sums ``s`` of row ``i``, channel ``o`` go to ``sums[sums_at + i*Co + o]``;
    else the votes (``mv``: majority, or the hierarchical vote of ``G`` blocks) are OR-ed into
    ``votes[votes_at + i*NWo + o//64]``, bit ``o % 64``. ``roff``, ``toff``, ``D``, ``V``, ``planes``:
    the caller's per-thread scratch. Output channels outer: one weight slice (K x 16 words) stays in
    L1 while every pixel tile of the chunk meets it.
    """
    for ot in range(co_pad // TILE_V):
        o0 = ot * TILE_V
        nl = min(TILE_V, Co - o0)
        w_off = ot * K * TILE_V
        lane_mask = (np.uint64(1) << np.uint64(nl)) - np.uint64(1)
        for i0 in range(0, rows, TILE_P):
            np_ = min(TILE_P, rows - i0)
            for p in range(TILE_P):
                roff[p] = pix_off[i0 + p] if p < np_ else pix_off[i0]  # ragged tile: repeat a valid row
            if popcount:
                for p in range(TILE_P):
                    toff[p] = urow[i0 + p] * co_pad + o0 if p < np_ else 0
                if np_ == TILE_P and nl == TILE_V:
                    xor_popcount_tile_s(src, roff, src_nseg, sstride, slen, panel, w_off, base, toff,
                                        sums, sums_at + i0 * Co + o0, Co)
                else:  # ragged edge of the output: raw counts, scalar epilogue
                    xor_popcount_tile(src, roff, src_nseg, sstride, slen, panel, w_off, D, 0)
                    for p in range(np_):
                        for l in range(nl):
                            sums[sums_at + (i0 + p) * Co + o0 + l] = base[toff[p] + l] - 2 * np.int64(D[p * TILE_V + l])
                continue
            for p in range(TILE_P):
                toff[p] = urow[i0 + p] * G * co_pad + o0 if p < np_ else 0
            if mv:
                V[0] = xor_popcount_tile_mv(src, roff, src_nseg, sstride, slen, panel, w_off, base, toff)
                word = V[0]
            else:  # one segment per block: its stream of Kg words, its thresholds co_pad further on
                xor_popcount_tile_hmv(src, roff, G, Kg, Kg, panel, w_off, base, toff, co_pad, V)
                word = tree_vote_masks(V, G, fanins, tie, planes)
            for p in range(np_):
                bits = (word >> np.uint64(p * TILE_V)) & lane_mask
                votes[votes_at + (i0 + p) * NWo + (o0 >> 6)] |= bits << np.uint64(o0 & 63)
