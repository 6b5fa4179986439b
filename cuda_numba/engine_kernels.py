"""Numba kernels of the inference engine: one binary block per call, epilogue fused.

:func:`block_kernel` runs one binary convolution of a ResNet-18 block and
everything after it up to the next layer's packed input:

    s (XNOR + popcount)  or  the voter's +-1 (MV / HMV / BN-folded threshold)
    -> y = alpha * s  or  the voter's level          (the layer's output)
    -> BN(y)                                          (reactnet, birealnet)
    -> + residual  (identity, or BN of the torch shortcut's 1x1 conv)
    -> RPReLU                                         (reactnet)
    -> the float residual stream of the next block    (written)
    -> sign(pre(x_next)) packed into uint64 words     (written)

``pre`` is the next layer's learnable shift (``x + b``, ReActNet), nothing
(Bi-Real) or the next block's pre-norm BN (XNOR-Net). Work is split by
chunks of output pixels, one chunk per thread at a time: its integer sums or
votes for *all* output channels go to a small per-thread buffer (L1/L2),
then the epilogue runs over the chunk's rows and writes the two outputs. No
fp32 tensor of the convolution output exists.

Why the float operations are the ones they are (predictions must equal the
float simulation's, docs/SEMANTICS.md): every float32 operation is the one torch
performs in :mod:`mvlib`'s float model, in the same order and rounding, so
the residual stream and every sign are bit for bit those of the simulation:

* ``float32(s) * alpha``: the simulation's ``round(conv) * alpha``; the
  integer ``s`` is exact (``N - 2 * disagreements``, padded taps left out);
* BatchNorm in eval mode: torch's CPU kernel computes ``fma(x, A, B)`` with
  ``A = float32(invstd * weight)``, ``B = fma(-mean, A, bias)`` and
  ``invstd = 1 / sqrt(var + eps)`` in float32 (checked against
  ``nn.BatchNorm2d`` in the tests), so the epilogue calls ``llvm.fma.f32``
  (:func:`fma32`) - an unfused ``x * A + B`` differed in ~30 % of outputs;
* the residual add, RPReLU's ``z = v - gamma; (z or z * slope) + zeta``
  and the shift ``x + b`` are single float32 operations, never contracted
  (Numba leaves ``a * b + c`` unfused without fastmath);
* the voters' levels are exact (``+-1 * scale``), so BN of a vote is the
  same ``fma`` on one of two values per channel.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .bitops import TILE_P, TILE_V
from .chunk_conv import chunk_rows, chunk_tiles, next_pixel, pixel_of
from .simd import epilogue16, fma16, fma32, sign_word_fma

# voter modes of a binary layer
MODE_LINEAR, MODE_MV, MODE_HMV, MODE_THRESHOLD = 0, 1, 2, 3
# rows of the per-channel parameter table P [N_PARAMS, Co] of one block
P_ALPHA, P_LPOS, P_LNEG, P_BN_A, P_BN_B, P_RES_A, P_RES_B, P_GAMMA, P_SLOPE, P_ZETA, P_NEXT_A, P_NEXT_B, \
    P_POL, P_THETA = range(14)
N_PARAMS = 14
# entries of the int64 flag vector of one block
F_MODE, F_HAS_BN, F_RES_BN, F_RPRELU, F_BITS, F_OUT_PAD, F_TIE = range(7)
N_FLAGS = 7

@njit(inline="always", cache=True)
def _pack_row(xout, xo, Co, P, nbits, dst):
    """Pack the next layer's bits of one pixel (``xout[xo:xo+Co]``) into ``nbits[dst:]``."""
    na, nb = P[P_NEXT_A], P[P_NEXT_B]
    full = Co // 64
    for j in range(full):
        nbits[dst + j] = sign_word_fma(xout, xo + j * 64, na, nb, j * 64)
    if full * 64 < Co:
        word = np.uint64(0)
        for c in range(full * 64, Co):
            if fma32(xout[xo + c], na[c], nb[c]) >= np.float32(0.0):
                word |= np.uint64(1) << np.uint64(c - full * 64)
        nbits[dst + full] = word


@njit(inline="always", cache=True)
def _epilogue_rows(m0, rows, Co, NWo, S, VB, P, flags, res, xout, nbits, Ho, Wo):
    """Rows ``m0 .. m0+rows`` of the block output: layer output -> BN -> + residual -> RPReLU -> stream, bits.

    ``S`` holds the chunk's sums (``[rows, Co]``, modes linear/threshold),
    ``VB`` its votes (``[rows, NWo]`` words, MV/HMV). Groups of 16 channels
    go through :func:`cuda_numba.simd.epilogue16` (everything in registers,
    the next layer's sign bits returned); the ``Co % 16`` last channels run
    the same float operations in scalar code. ``xout`` may be ``res``: each
    element is read before it is written.
    """
    mode = flags[F_MODE]
    alpha, lpos, lneg = P[P_ALPHA], P[P_LPOS], P[P_LNEG]
    bn_a, bn_b, r_a, r_b = P[P_BN_A], P[P_BN_B], P[P_RES_A], P[P_RES_B]
    gam, slope, zeta = P[P_GAMMA], P[P_SLOPE], P[P_ZETA]
    pol, theta, na, nb = P[P_POL], P[P_THETA], P[P_NEXT_A], P[P_NEXT_B]
    has_bn, res_bn, rprelu, want_bits = flags[F_HAS_BN], flags[F_RES_BN], flags[F_RPRELU], flags[F_BITS]
    zero = np.float32(0.0)
    opad = flags[F_OUT_PAD]
    Hp, Wp = Ho + 2 * opad, Wo + 2 * opad
    c16 = Co - Co % 16
    b, ho, wo = pixel_of(m0, Ho, Wo)
    for i in range(rows):
        m = m0 + i
        xo = m * Co
        so = i * Co
        vo = i * NWo
        dst = ((b * Hp + ho + opad) * Wp + wo + opad) * NWo
        word = np.uint64(0)
        for c in range(0, c16, 16):
            word |= epilogue16(S, so + c, VB[vo + (c >> 6)], c & 63, P, c, res, xout, xo + c, mode, has_bn, res_bn,
                               rprelu, want_bits) << np.uint64(c & 63)
            if want_bits and (c & 63) == 48:
                nbits[dst + (c >> 6)] = word
                word = np.uint64(0)
        for c in range(c16, Co):  # the same operations, one lane
            if mode == MODE_LINEAR:
                y = np.float32(S[so + c]) * alpha[c]
            elif mode == MODE_THRESHOLD:
                y = lpos[c] if np.float32(S[so + c]) * pol[c] >= theta[c] else lneg[c]
            else:
                y = lpos[c] if (VB[vo + (c >> 6)] >> np.uint64(c & 63)) & np.uint64(1) else lneg[c]
            if has_bn:
                y = fma32(y, bn_a[c], bn_b[c])
            y = y + (fma32(res[xo + c], r_a[c], r_b[c]) if res_bn else res[xo + c])
            if rprelu:
                z = y - gam[c]
                y = (z if z >= zero else z * slope[c]) + zeta[c]
            xout[xo + c] = y
            if fma32(y, na[c], nb[c]) >= zero:
                word |= np.uint64(1) << np.uint64(c & 63)
        if want_bits and Co % 64:
            nbits[dst + (Co >> 6)] = word
        b, ho, wo = next_pixel(b, ho, wo, Ho, Wo)


@njit(parallel=True, cache=True, nogil=True)
def block_kernel(xflat, B, H, W, NW, in_pad, panel, base, pix_u, C, Co, G, kh, kw, stride, pad, Ho, Wo,
                 chunk, fanins, P, flags, res, xout, nbits, scr_s, scr_a, scr_v):
    """One fused binary block over the whole batch (see the module docstring).

    ``xflat``: packed input ``[B, H+2*in_pad, W+2*in_pad, NW]`` flattened;
    ``panel``/``base``/``pix_u``: the layer's :class:`cuda_numba.cpu_kernels.CpuWeights`
    panel and border table; ``res``/``xout``: float32 ``[B*Ho*Wo*Co]``;
    ``nbits``: the next layer's packed input (zero border of ``flags[F_OUT_PAD]``);
    ``scr_*``: per-thread scratch ``[n_items, ...]`` (sums, im2col rows, votes).
    ``xout`` may be ``res`` (an identity shortcut updates the stream in place).
    The convolution part is the layer kernel's own (:mod:`cuda_numba.chunk_conv`), into the thread's scratch.
    """
    mode = flags[F_MODE]
    tie = flags[F_TIE]
    n_items = scr_s.shape[0]
    T = kh * kw
    c = C // G
    Kg = (T * c + 63) // 64
    K = G * Kg
    co_pad = panel.shape[0] // K
    NWo = (Co + 63) // 64
    M = B * Ho * Wo
    n_chunks = (M + chunk - 1) // chunk
    per_item = (n_chunks + n_items - 1) // n_items
    direct = in_pad == pad and G == 1 and C % 64 == 0
    Hp = H + 2 * in_pad
    Wp = W + 2 * in_pad
    src_nseg = kh if direct else 1
    sstride = Wp * NW if direct else 0
    slen = kw * NW if direct else Kg
    popcount = mode == MODE_LINEAR or mode == MODE_THRESHOLD
    for item in prange(n_items):
        S = scr_s[item]
        A = scr_a[item]
        VB = scr_v[item]
        pix_off = np.empty(chunk, np.int64)  # small per-thread index vectors (stack-sized)
        urow = np.empty(chunk, np.int64)
        roff = np.zeros(TILE_P, np.int64)
        toff = np.zeros(TILE_P, np.int64)
        D = np.empty(TILE_P * TILE_V, np.uint64)
        V = np.empty(G, np.uint64)
        planes = np.empty(8, np.uint64)
        src = xflat if direct else A
        for ch in range(item * per_item, min(n_chunks, (item + 1) * per_item)):
            m0 = ch * chunk
            rows = min(chunk, M - m0)
            if not popcount:
                VB[: rows * NWo] = 0
            chunk_rows(m0, rows, chunk, direct, xflat, A, pix_u, pix_off, urow, H, W, Hp, Wp, NW, c, G, Kg, K, kh, kw,
                       stride, pad, Ho, Wo)
            # the chunk's sums or votes go to the thread's scratch (row 0 = the chunk's first), not to an output
            chunk_tiles(src, pix_off, urow, rows, src_nseg, sstride, slen, panel, base, Co, co_pad, G, Kg, K,
                        popcount, mode == MODE_MV, fanins, tie, S, 0, VB, 0, NWo, roff, toff, D, V, planes)
            _epilogue_rows(m0, rows, Co, NWo, S, VB, P, flags, res, xout, nbits, Ho, Wo)


@njit(parallel=True, cache=True, nogil=True)
def stem_kernel(y, P, flags, xout, nbits, B, H, W):
    """The stem's epilogue: ``x0 = BN(conv)`` (when ``flags[F_HAS_BN]``) and block 0's packed input.

    ``y``: the stem convolution's output rows ``[B*H*W*C]`` (channels-last);
    parameters and bit layout as in :func:`block_kernel`.
    """
    Co = P.shape[1]
    NWo = (Co + 63) // 64
    opad = flags[F_OUT_PAD]
    Hp, Wp = H + 2 * opad, W + 2 * opad
    bn_a, bn_b = P[P_BN_A], P[P_BN_B]
    c16 = Co - Co % 16
    for r in prange(B * H):
        b = r // H
        h = r - b * H
        for w in range(W):
            m = (b * H + h) * W + w
            xo = m * Co
            if flags[F_HAS_BN]:
                for c in range(0, c16, 16):
                    fma16(y, xout, xo + c, bn_a, bn_b, c)
                for c in range(c16, Co):
                    xout[xo + c] = fma32(y[xo + c], bn_a[c], bn_b[c])
            else:
                xout[xo: xo + Co] = y[xo: xo + Co]
            _pack_row(xout, xo, Co, P, nbits, ((b * Hp + h + opad) * Wp + w + opad) * NWo)


@njit(cache=True)
def bn_terms(w, b, mean, var, eps):
    """``(A, B)`` of an eval-mode BatchNorm as torch's CPU kernel forms them, so that ``BN(x) = fma(x, A, B)``.

    ``invstd = 1 / sqrt(var + eps)``, ``A = invstd * w`` and ``B = b - mean * A``
    (one rounding), all in float32 (``aten/src/ATen/native/cpu/batch_norm_kernel.cpp``,
    ``batch_norm_cpu_collect_linear_and_constant_terms``; checked bit for bit in the tests).
    """
    n = w.shape[0]
    A = np.empty(n, np.float32)
    B = np.empty(n, np.float32)
    one = np.float32(1.0)
    for c in range(n):
        inv = one / np.sqrt(var[c] + eps)
        A[c] = inv * w[c]
        B[c] = fma32(-mean[c], A[c], b[c])
    return A, B



@njit(cache=True)
def affine_fma(x, a, b):
    """``fma(x, a, b)`` elementwise (float32): BN applied once to a voter's two levels per channel."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = fma32(x[i], a[i], b[i])
    return out
