"""Fused elementwise passes of the binary layers: numba kernels on CPU, torch everywhere else.

Why: in a binary ResNet-18 training step on a CPU, eager PyTorch spends about
as long on elementwise work as on the convolutions. Every aten op reads and
writes a whole activation tensor, and ``sign(x + b)`` with its ApproxSign
gradient, or RPReLU, is five or six such ops each way. One numba loop per
direction does the same arithmetic in a single pass.

What is computed does not change. Each kernel evaluates, element by element,
the *same float32 operations in the same order* as the torch expression it
replaces (``z = x + b``; ``z >= 0``; ``2 - 2|z|`` clamped at 0; ``g * d`` ...),
so forward values and elementwise gradients are bitwise equal to the torch
fallback; only per-channel gradient sums are accumulated in another order
(in float64 partial sums, then rounded once to float32).

The kernels run on float32 CPU tensors in channels-last layout, where a
tensor is a [rows, C] matrix with the per-channel parameters along the
contiguous axis (:func:`as_rows`). Anything else (CUDA, other dtypes,
NCHW, ``MVLIB_FUSED=0``, numba missing) takes the torch path, which is the
reference definition the tests compare against. The int8 forward convolution
and the allocator setting are in :mod:`mvlib.cpu_fast`.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import torch

from .binarizers import sign_pm1, surrogate_grad

try:  # numba is a dependency of the project, but the library runs without it
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
else:
    # numba's default OpenMP layer leaves its threads spinning after each kernel,
    # which halves the speed of the torch ops that follow on a 2-core machine;
    # the workqueue layer parks them. It is not safe for concurrent launches
    # from several Python threads, hence _LAUNCH below. An explicit
    # NUMBA_THREADING_LAYER from the user wins.
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
_LAUNCH = threading.Lock()

# Surrogate gradients the kernels implement (the names of mvlib.binarizers.BINARIZERS).
KERNEL_KINDS = {"approxsign": 0, "ste": 1}
# Per-channel sums are split into this many row chunks (one partial row each);
# enough chunks to balance the threads, few enough that the partials are tiny.
_CHUNKS = 32


def kernels_enabled() -> bool:
    """True when the numba kernels may be used (numba importable, ``MVLIB_FUSED`` not ``0``, not being traced).

    Under ``torch.compile`` the layers take the torch path: the compiler cannot trace into a numba call, and it
    fuses the same elementwise expressions itself.
    """
    return (numba is not None and os.environ.get("MVLIB_FUSED", "1") != "0"
            and not torch.compiler.is_compiling())


def as_rows(t: torch.Tensor) -> np.ndarray | None:
    """A channels-last float32 CPU tensor [N, C, H, W] as a writable numpy [N*H*W, C] view, else None."""
    if (t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() != 4
            or not t.is_contiguous(memory_format=torch.channels_last)):
        return None
    n, c, h, w = t.shape
    # .view (never .reshape): a silent copy would make the kernels' writes vanish.
    return t.detach().permute(0, 2, 3, 1).view(n * h * w, c).numpy()


def _use_kernels(*tensors: torch.Tensor) -> bool:
    return kernels_enabled() and all(as_rows(t) is not None for t in tensors)


@contextlib.contextmanager
def _launch():
    """Serialize kernel launches and give numba as many threads as torch has."""
    with _LAUNCH:
        want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() != want:
            numba.set_num_threads(want)
        yield


def _empty_rows_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.channels_last)


def _chan(v: torch.Tensor | None, c: int) -> np.ndarray:
    """A per-channel parameter as a contiguous float32 numpy vector (zeros when absent)."""
    if v is None:
        return np.zeros(c, np.float32)
    return v.detach().reshape(c).to(torch.float32).contiguous().numpy()


if numba is not None:
    _jit = njit(parallel=True, cache=True, nogil=True)

    @_jit
    def _sign_rows(x, b, out):
        """out = +1 where x + b >= 0 else -1 (b = 0 when there is no shift)."""
        rows, c = x.shape
        one = np.float32(1.0)
        for r in prange(rows):
            for j in range(c):
                out[r, j] = one if x[r, j] + b[j] >= np.float32(0.0) else -one

    @_jit
    def _sign_backward_rows(g, x, b, kind, out, part):
        """out = g * f'(x + b); part[k] += out over chunk k (f' ApproxSign: kind 0, clipped STE: 1)."""
        rows, c = x.shape
        chunks = part.shape[0]
        step = (rows + chunks - 1) // chunks
        two, one, zero = np.float32(2.0), np.float32(1.0), np.float32(0.0)
        for k in prange(chunks):
            acc = part[k]
            lo, hi = k * step, min(rows, (k + 1) * step)
            # One loop per estimator, so that the inner loop has no branch on kind.
            if kind == 0:
                for r in range(lo, hi):
                    for j in range(c):
                        d = two - two * abs(x[r, j] + b[j])
                        v = g[r, j] * (zero if d < zero else d)  # torch.clamp(d, min=0)
                        out[r, j] = v
                        acc[j] += v
            else:
                for r in range(lo, hi):
                    for j in range(c):
                        v = g[r, j] * (one if abs(x[r, j] + b[j]) <= one else zero)
                        out[r, j] = v
                        acc[j] += v

    @_jit
    def _round_scale_rows(s, alpha):
        """s = rint(s) * alpha in place (rint: round half to even, as torch.round)."""
        rows, c = s.shape
        for r in prange(rows):
            for j in range(c):
                s[r, j] = np.rint(s[r, j]) * alpha[j]

    @_jit
    def _rprelu_rows(x, res, has_res, gamma, slope, zeta, out):
        """out = where(z >= 0, z, z * slope) + zeta with z = (x [+ res]) - gamma."""
        rows, c = x.shape
        for r in prange(rows):
            for j in range(c):
                v = x[r, j] + res[r, j] if has_res else x[r, j]
                z = v - gamma[j]
                out[r, j] = (z if z >= np.float32(0.0) else z * slope[j]) + zeta[j]

    @_jit
    def _rprelu_backward_rows(g, x, res, has_res, gamma, slope, out, part):
        """out = g (z >= 0) or g * slope; part[k, 0] += out, [k, 1] += g*z (z < 0), [k, 2] += g."""
        rows, c = x.shape
        chunks = part.shape[0]
        step = (rows + chunks - 1) // chunks
        zero = np.float32(0.0)
        for k in prange(chunks):
            acc = part[k]
            for r in range(k * step, min(rows, (k + 1) * step)):
                for j in range(c):  # selects, not branches: the loop vectorizes
                    v = x[r, j] + res[r, j] if has_res else x[r, j]
                    z = v - gamma[j]
                    gr = g[r, j]
                    neg = z < zero
                    gz = gr * slope[j] if neg else gr
                    out[r, j] = gz
                    acc[0, j] += gz
                    acc[1, j] += gr * z if neg else zero
                    acc[2, j] += gr

    @_jit
    def _weight_sign(w, out):
        """out = sign(w) (ties +1); [O, I, kh*kw] views, each array in its own layout."""
        o_n, i_n, k_n = w.shape
        one = np.float32(1.0)
        for o in prange(o_n):
            for i in range(i_n):
                for k in range(k_n):
                    out[o, i, k] = one if w[o, i, k] >= np.float32(0.0) else -one

    @_jit
    def _weight_ste(g, w, scale, out):
        """out = (g * scale[o]) * (|w| <= 1): WeightSTESign's backward; [O, I, kh*kw] views, any layout."""
        o_n, i_n, k_n = w.shape
        one, zero = np.float32(1.0), np.float32(0.0)
        for o in prange(o_n):
            for i in range(i_n):
                for k in range(k_n):
                    out[o, i, k] = (g[o, i, k] * scale[o]) * (one if abs(w[o, i, k]) <= one else zero)


# ----------------------------------------------------------------------------
# Public operations: kernel when possible, the torch definition otherwise
# ----------------------------------------------------------------------------
def shifted_sign(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """``+1`` where ``x + shift >= 0`` else ``-1`` (no shift: ``x >= 0``), dtype of ``x``."""
    if _use_kernels(x):
        out = _empty_rows_like(x)
        with _launch():
            _sign_rows(as_rows(x), _chan(shift, x.shape[1]), as_rows(out))
        return out
    z = x if shift is None else x + shift.view(1, -1, 1, 1)
    return torch.where(z >= 0, 1.0, -1.0).to(x.dtype)


def shifted_sign_backward(g: torch.Tensor, x: torch.Tensor, shift: torch.Tensor | None,
                          name: str, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(g * f'(x + shift), its sum per channel or None)``; ``f'`` the named surrogate derivative.

    ``inplace=True`` lets the kernel write the result over ``g`` (a buffer the
    caller owns): a 32 MiB activation gradient is not allocated afresh.
    """
    if name in KERNEL_KINDS and _use_kernels(g, x):
        out = g if inplace else _empty_rows_like(x)
        part = np.zeros((_CHUNKS, x.shape[1]), np.float64)
        with _launch():
            _sign_backward_rows(as_rows(g), as_rows(x), _chan(shift, x.shape[1]), KERNEL_KINDS[name],
                                as_rows(out), part)
        return out, (None if shift is None else torch.from_numpy(part.sum(0)).to(shift.dtype))
    z = x if shift is None else x + shift.view(1, -1, 1, 1)
    gx = g * surrogate_grad(name, z)
    return gx, (None if shift is None else gx.sum((0, 2, 3)))


def _cpu_f32(*ts: torch.Tensor) -> bool:
    return kernels_enabled() and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts)


def _oik(t: torch.Tensor) -> np.ndarray | None:
    """A 4-d weight (or its gradient) as a numpy [O, I, kh*kw] view in its own layout, else None."""
    try:
        return t.detach().view(t.shape[0], t.shape[1], -1).numpy()
    except RuntimeError:  # a layout whose kernel dimensions do not merge
        return None


def weight_sign(w: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``sign(w)`` (ties +1); in channels-last layout when ``channels_last`` (what oneDNN wants)."""
    if _cpu_f32(w) and w.dim() == 4 and _oik(w) is not None:
        out = torch.empty_like(w, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        with _launch():
            _weight_sign(_oik(w), _oik(out))
        return out
    out = sign_pm1(w)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def weight_ste_grad(g: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(g * scale[o]) * (|w| <= 1)`` in ``w``'s layout (so AccumulateGrad need not copy it)."""
    if _cpu_f32(g, w, scale) and w.dim() == 4 and _oik(g) is not None:
        out = torch.empty_like(w)
        with _launch():
            _weight_ste(_oik(g), _oik(w), _chan(scale, w.shape[0]), _oik(out))
        return out
    return (g * scale.view(-1, 1, 1, 1)) * surrogate_grad("ste", w).to(g.dtype)


def round_scale_(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``s = round(s) * alpha`` per output channel, in place; returns ``s``."""
    if _use_kernels(s):
        with _launch():
            _round_scale_rows(as_rows(s), _chan(alpha, s.shape[1]))
        return s
    return torch.round(s, out=s).mul_(alpha.view(1, -1, 1, 1))


def rprelu(x: torch.Tensor, residual: torch.Tensor | None, gamma: torch.Tensor, slope: torch.Tensor,
           zeta: torch.Tensor) -> torch.Tensor:
    """RPReLU of ``x (+ residual)``: ``where(z >= 0, z, z * slope) + zeta``, ``z = x - gamma``."""
    if _use_kernels(x) and (residual is None or (_use_kernels(residual) and residual.shape == x.shape)):
        out = _empty_rows_like(x)
        rx = as_rows(x)
        with _launch():
            _rprelu_rows(rx, rx if residual is None else as_rows(residual), residual is not None,
                         _chan(gamma, x.shape[1]), _chan(slope, x.shape[1]), _chan(zeta, x.shape[1]), as_rows(out))
        return out
    v = x if residual is None else x + residual
    z = v - gamma.view(1, -1, 1, 1)
    return torch.where(z >= 0, z, z * slope.view(1, -1, 1, 1)) + zeta.view(1, -1, 1, 1)


def rprelu_backward(g: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None, gamma: torch.Tensor,
                    slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(to x and residual, to gamma, to slope, to zeta)`` of :func:`rprelu`."""
    c = x.shape[1]
    if _use_kernels(g, x) and (residual is None or _use_kernels(residual)):
        out = _empty_rows_like(x)
        part = np.zeros((_CHUNKS, 3, c), np.float64)
        rx = as_rows(x)
        with _launch():
            _rprelu_backward_rows(as_rows(g), rx, rx if residual is None else as_rows(residual),
                                  residual is not None, _chan(gamma, c), _chan(slope, c), as_rows(out), part)
        sums = torch.from_numpy(part.sum(0)).to(g.dtype)
        return out, -sums[0], sums[1], sums[2]
    v = x if residual is None else x + residual
    z = v - gamma.view(1, -1, 1, 1)
    neg = z < 0
    gz = torch.where(neg, g * slope.view(1, -1, 1, 1), g)
    return gz, -gz.sum((0, 2, 3)), torch.where(neg, g * z, 0.0).sum((0, 2, 3)), g.sum((0, 2, 3))
