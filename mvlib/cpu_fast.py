"""CPU speed paths beyond elementwise fusion: the exact int8 convolution of the bits, allocator tuning.

Forward of a binary convolution on CPU: ``s = conv(sign(x + b), sign(W))`` is
an integer, so it can be computed on integers. oneDNN's u8 x s8 convolution
(VNNI) accumulates in int32 and is 3-5x faster than the float32 one here,
with the same result bit for bit (:func:`int8_binary_conv`; an exactness
probe guards it at first use). The backward stays float32: its operands
(the incoming gradient) are real numbers, and nothing in it is exact in a
narrower type.

:func:`tune_cpu_allocator` is the other half of the CPU speed: a process-wide
glibc setting that a training run opts into.
"""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np
import torch

from .binarizers import sign_pm1
from .fused import _chan, _cpu_f32, _launch, _use_kernels, as_rows, kernels_enabled, numba

if numba is not None:
    from numba import njit, prange

    _jit = njit(parallel=True, cache=True, nogil=True)

    @_jit
    def _sign_rows_u8(x, b, out):
        """out = 1 where x + b >= 0 else 0: the bit of sign(x + b), for the int8 convolution."""
        rows, c = x.shape
        for r in prange(rows):
            for j in range(c):
                out[r, j] = np.uint8(1) if x[r, j] + b[j] >= np.float32(0.0) else np.uint8(0)

    @_jit
    def _bits_to_sums_rows(t, border, alpha):
        """t = rint(2 t - border[pixel]) * alpha in place: bit sums back to s = conv(a, w), scaled."""
        rows, c = t.shape
        pixels = border.shape[0]
        two = np.float32(2.0)
        for r in prange(rows):
            p = r % pixels
            for j in range(c):
                t[r, j] = np.rint(two * t[r, j] - border[p, j]) * alpha[j]


def _int8_conv_raw(x: torch.Tensor, shift: torch.Tensor | None, wb: torch.Tensor, alpha: torch.Tensor,
                   stride: int, padding: int) -> torch.Tensor | None:
    """``alpha * conv(sign(x + b), wb)`` through oneDNN's u8 x s8 convolution, or None if not applicable.

    With bits ``u = (a + 1) / 2`` in {0, 1} and zero padding, ``t = conv(u, wb)``
    is an int32 sum, and ``s = conv(a, wb) = 2 t - conv(1, wb)``, where
    ``conv(1, wb)`` (an all-ones image, zero padded) is the sum of the
    weights over each position's valid taps, so padded taps count for nothing,
    as docs/SEMANTICS.md (Padding) requires. Every quantity is an integer far below 2^24, so
    ``s`` is exact: the value the float convolution gives.
    """
    if not (_use_kernels(x) and _cpu_f32(wb, alpha)):
        return None
    n, c, h, w = x.shape
    o = wb.shape[0]
    u = torch.empty((n, c, h, w), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    with _launch():
        _sign_rows_u8(as_rows(x), _chan(shift, c), u.permute(0, 2, 3, 1).view(-1, c).numpy())
    wq = wb.detach().contiguous(memory_format=torch.channels_last).to(torch.int8)
    ones_o, zeros_o = torch.ones(o), torch.zeros(o, dtype=torch.int64)
    st, pad = [stride, stride], [padding, padding]
    packed = torch.ops.onednn.qconv_prepack(wq, ones_o, 1.0, 0, st, pad, [1, 1], 1, None)
    t = torch.ops.onednn.qconv2d_pointwise(u, 1.0, 0, packed, ones_o, zeros_o, None, st, pad, [1, 1], 1,
                                           1.0, 0, torch.float32, "none", [], "")
    # conv(1, wb) = conv of one all-ones channel with the weights summed over input
    # channels (integer sums, exact): 1/C of the work of convolving a ones image.
    wsum = wb.detach().sum(1, keepdim=True).contiguous()
    border = torch.nn.functional.conv2d(torch.ones(1, 1, h, w), wsum, None, stride, padding)
    rows = as_rows(t)
    if rows is None:  # oneDNN chose another layout: finish with torch ops
        return torch.round(2 * t - border).mul_(alpha.view(1, -1, 1, 1))
    border_rows = border[0].permute(1, 2, 0).reshape(-1, o).contiguous().numpy()
    with _launch():
        _bits_to_sums_rows(rows, border_rows, _chan(alpha, o))
    return t


_INT8_STATE: dict[str, bool] = {}


def int8_conv_enabled() -> bool:
    """Whether the int8 forward convolution is used: oneDNN's op exists and passed an exactness probe.

    The probe (once per process) compares it bit for bit with the float
    convolution on odd channel counts, stride 1 and 2, zero padding at the
    borders; any difference or error turns the int8 path off for good.
    ``MVLIB_INT8_CONV=0`` turns it off too.
    """
    if os.environ.get("MVLIB_INT8_CONV", "1") == "0" or not kernels_enabled():
        return False
    if "ok" not in _INT8_STATE:
        _INT8_STATE["ok"] = False
        try:
            g = torch.Generator().manual_seed(0)
            for stride, (c, o, hw) in ((1, (5, 7, 7)), (2, (12, 8, 9)), (1, (64, 16, 4))):
                x = torch.randn(3, c, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)
                b = torch.randn(c, generator=g) * 0.1
                wb = sign_pm1(torch.randn(o, c, 3, 3, generator=g))
                alpha = torch.rand(o, generator=g)
                got = _int8_conv_raw(x, b, wb, alpha, stride, 1)
                a = sign_pm1(x + b.view(1, -1, 1, 1))
                want = torch.round(torch.nn.functional.conv2d(a, wb, None, stride, 1)) * alpha.view(1, -1, 1, 1)
                if got is None or not torch.equal(got, want):
                    return False
            _INT8_STATE["ok"] = True
        except Exception:  # op missing in this torch build, no VNNI kernel, ...
            return False
    return _INT8_STATE["ok"]


def int8_binary_conv(x: torch.Tensor, shift: torch.Tensor | None, wb: torch.Tensor, alpha: torch.Tensor,
                     stride: int, padding: int) -> torch.Tensor | None:
    """Exact ``alpha * round(conv(sign(x + b), wb))`` by the int8 convolution, or None where it does not apply."""
    if not int8_conv_enabled():
        return None
    return _int8_conv_raw(x, shift, wb, alpha, stride, padding)


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS; True if applied.

    A stage-1 activation at batch 128, width 64 is exactly 32 MiB, at glibc's
    largest mmap threshold, so by default every such tensor is a fresh mmap
    whose 8192 pages fault in on first touch: about as long as the op that
    fills it. ``mallopt(M_MMAP_MAX, 0)`` and a 2 GiB ``M_TRIM_THRESHOLD`` make
    the allocator reuse the memory instead (the same effect as jemalloc or
    ``THP_MEM_ALLOC_ENABLE=1``, which must be set before torch starts).
    Process-wide and not undone, so it is opt-in: a training run calls it;
    importing mvlib does not. Values computed do not change.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MVLIB_TUNE_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
        return libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2 ** 31 - 1) == 1
    except (OSError, AttributeError):  # not glibc
        return False
