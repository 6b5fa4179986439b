"""PyTorch operators on the bit kernels, for CPU and CUDA tensors (inference only).

Packed tensors are torch ``int64`` tensors holding the uint64 words of
:mod:`cuda_numba.layout` (``[B, H, W, NW]``); the kernels see them as
``uint64`` through zero-copy views (``Tensor.numpy().view`` on the CPU,
``numba.cuda.as_cuda_array(...).view`` on the GPU). Every operator
dispatches on the device of its input:

* :func:`pack` / :func:`unpack` - fp32 activations <-> packed bits
  (``bit = x + shift >= 0``, ReActNet's per-channel shift fused in);
* :func:`conv_popcount` - the integer dot products ``s`` ``[B, Co, Ho, Wo]``;
* :func:`conv_mv`, :func:`conv_hmv` - the voters' ±1 outputs as packed bits
  ``[B, Ho, Wo, ceil(Co/64)]`` (the next layer's input layout).

Weights are prepared once per layer and device by :class:`BitConvWeights`.
"""
from __future__ import annotations

import numpy as np
import torch

from . import cpu_kernels
from .bitops import vote_plan
from .layout import bits_to_float, n_words, pack_activations, sums_to_float, unpack_activations


def _u64(t: torch.Tensor) -> np.ndarray:
    """uint64 NumPy view of an int64 CPU tensor (no copy)."""
    return t.numpy().view(np.uint64)


def _from_u64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.view(np.int64))


def _cuda():
    from . import cuda_kernels  # imported lazily: numba.cuda must not load for CPU-only use

    return cuda_kernels


def _dev(t: torch.Tensor, dtype=None):
    from numba import cuda

    arr = cuda.as_cuda_array(t.detach())
    return arr.view(dtype) if dtype is not None else arr


class BitConvWeights:
    """The binarized weights of one convolution, prepared for the kernels.

    ``weight`` is ``[Co, Ci, kh, kw]`` (real or ±1; bit = ``w >= 0``).
    ``blocks`` is the number of HMV inner blocks (``prod(fanins)``), 1 for
    XNOR/MV. Per-device preparations are built on first use and cached.
    """

    def __init__(self, weight: torch.Tensor, blocks: int = 1):
        self.sign = (weight.detach() >= 0).cpu()
        self.co, self.ci, self.kh, self.kw = self.sign.shape
        self.blocks = blocks
        self._cpu: dict[int, cpu_kernels.CpuWeights] = {}
        self._gpu: dict = {}

    def cpu(self, blocks: int | None = None) -> cpu_kernels.CpuWeights:
        g = self.blocks if blocks is None else blocks
        if g not in self._cpu:
            self._cpu[g] = cpu_kernels.prepare_cpu_weights(self.sign.numpy().astype(np.int8) * 2 - 1, g)
        return self._cpu[g]

    def gpu(self, device: torch.device):
        key = str(device)
        if key not in self._gpu:
            from numba import cuda

            with cuda.devices.gpus[device.index or 0]:
                self._gpu[key] = _cuda().prepare_cuda_weights(self.sign.numpy().astype(np.int8) * 2 - 1)
        return self._gpu[key]

    def out_size(self, h, w, stride, padding):
        return (h + 2 * padding - self.kh) // stride + 1, (w + 2 * padding - self.kw) // stride + 1


def _np_out(out: torch.Tensor | None):
    """A reusable CPU output tensor as a NumPy array (uint64 view for packed words), or None."""
    if out is None:
        return None
    return _u64(out) if out.dtype == torch.int64 else out.numpy()


def pack(x: torch.Tensor, shift: torch.Tensor | None = None, pad: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Binarize and pack fp32 ``x [B, C, H, W]`` along channels: int64 ``[B, H, W, NW]``.

    CPU: NCHW-contiguous and channels-last inputs are read in place; ``pad``
    adds a zero border (``[B, H+2pad, W+2pad, NW]``) for the kernels'
    ``in_pad``. The CUDA kernels skip padded taps themselves (``pad`` must be 0).
    ``out`` (CPU): an int64 tensor of the result's shape to reuse (its border must be zero).
    """
    x = x.detach()
    B, C, H, W = x.shape
    if x.dtype != torch.float32:
        x = x.float()
    if x.is_cuda:
        if pad:
            raise ValueError("the CUDA kernels take unpadded packed inputs (pad=0)")
        sh = torch.zeros(C, device=x.device) if shift is None else shift.detach().float().contiguous()
        out = torch.empty(B, H, W, n_words(C), dtype=torch.int64, device=x.device)
        _cuda().pack_cuda(_dev(x.contiguous()), _dev(sh), _dev(out, np.uint64))
        return out
    sh = None if shift is None else shift.detach().float().numpy()
    buf = _np_out(out)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        res = pack_activations(x.permute(0, 2, 3, 1).numpy(), sh, channels_last=True, pad=pad, out=buf)
    else:
        res = pack_activations(x.contiguous().numpy(), sh, pad=pad, out=buf)
    return out if buf is not None else _from_u64(res)


def unpack(bits: torch.Tensor, channels: int) -> torch.Tensor:
    """Packed ``[B, H, W, NW]`` -> ±1 float32 ``[B, C, H, W]`` (CPU: a channels-last view)."""
    if bits.is_cuda:
        B, H, W, _ = bits.shape
        out = torch.empty(B, channels, H, W, device=bits.device)
        _cuda().unpack_cuda(_dev(bits, np.uint64), channels, _dev(out))
        return out
    return torch.from_numpy(unpack_activations(_u64(bits.contiguous()), channels)).permute(0, 3, 1, 2)


def _gpu_conv(fn, xbits, weights, stride, padding, in_pad=0, **kw):
    if in_pad:
        raise ValueError("the CUDA kernels take unpadded packed inputs (in_pad=0)")
    wt = weights.gpu(xbits.device)
    ho, wo = weights.out_size(xbits.shape[1], xbits.shape[2], stride, padding)
    B = xbits.shape[0]
    if fn == "popcount":
        out = torch.empty(B, ho, wo, weights.co, dtype=torch.int32, device=xbits.device)
        _cuda().conv_popcount_cuda(_dev(xbits.contiguous(), np.uint64), wt, weights.ci, weights.kh, weights.kw,
                                   stride, padding, out=_dev(out))
        return out
    out = torch.empty(B, ho, wo, n_words(weights.co), dtype=torch.int64, device=xbits.device)
    launch = _cuda().conv_mv_cuda if fn == "mv" else _cuda().conv_hmv_cuda
    launch(_dev(xbits.contiguous(), np.uint64), wt, weights.ci, weights.kh, weights.kw, stride, padding,
           out=_dev(out, np.uint64), **kw)
    return out


def conv_popcount(xbits: torch.Tensor, weights: BitConvWeights, stride: int = 1, padding: int = 1,
                  in_pad: int = 0, out: np.ndarray | None = None) -> torch.Tensor:
    """XNOR + popcount: integer ``s`` ``[B, Co, Ho, Wo]`` (CPU: int16/int32 channels-last view; GPU: int32).

    ``in_pad``: zero border already around ``xbits`` (CPU, from ``pack(..., pad=)``).
    ``out`` (CPU, all three convolutions): a NumPy ``[M, Co]`` / ``[M, NW]`` array to reuse.
    """
    if xbits.is_cuda:
        return _gpu_conv("popcount", xbits, weights, stride, padding, in_pad).permute(0, 3, 1, 2)
    s = cpu_kernels.conv_popcount_cpu(_u64(xbits.contiguous()), weights.cpu(1), stride, padding, in_pad, out)
    return torch.from_numpy(s).permute(0, 3, 1, 2)


def conv_mv(xbits: torch.Tensor, weights: BitConvWeights, stride: int = 1, padding: int = 1,
            in_pad: int = 0, out: np.ndarray | None = None) -> torch.Tensor:
    """XNOR + MV: packed ``sign(s)`` (tie +1), int64 ``[B, Ho, Wo, ceil(Co/64)]``."""
    if xbits.is_cuda:
        return _gpu_conv("mv", xbits, weights, stride, padding, in_pad)
    return _from_u64(cpu_kernels.conv_mv_cpu(_u64(xbits.contiguous()), weights.cpu(1), stride, padding, in_pad, out))


def conv_hmv(xbits: torch.Tensor, weights: BitConvWeights, stride: int = 1, padding: int = 1,
             fanins=4, tie: str = "pos", in_pad: int = 0, out: np.ndarray | None = None) -> torch.Tensor:
    """XNOR + hierarchical MV (fan-ins outer->inner, tie rule): packed like :func:`conv_mv`."""
    _, blocks, _ = vote_plan(fanins, tie)
    if xbits.is_cuda:
        return _gpu_conv("hmv", xbits, weights, stride, padding, in_pad, fanins=fanins, tie=tie)
    return _from_u64(cpu_kernels.conv_hmv_cpu(_u64(xbits.contiguous()), weights.cpu(blocks), stride, padding,
                                              fanins, tie, in_pad, out))


def input_pad(x: torch.Tensor, weights: BitConvWeights, padding: int, voter: str = "popcount") -> int:
    """The zero border :func:`pack` should add for this layer (CPU direct path only; else 0)."""
    if x.is_cuda or voter == "hmv" or not cpu_kernels.direct_path(weights.cpu(1)):
        return 0
    return padding


def _float_out(B, C, H, W, channels_last: bool, device) -> torch.Tensor:
    """An empty float32 ``[B, C, H, W]`` tensor in NCHW or channels-last memory."""
    if channels_last:
        return torch.empty(B, H, W, C, device=device).permute(0, 3, 1, 2)
    return torch.empty(B, C, H, W, device=device)


def _flat3(t: torch.Tensor, channels_last: bool) -> np.ndarray:
    """The NumPy ``[B, C, HW]`` (NCHW) or ``[B, HW, C]`` (NHWC) view of a tensor from :func:`_float_out`."""
    B, C, H, W = t.shape
    mem = t.permute(0, 2, 3, 1) if channels_last else t
    return mem.numpy().reshape((B, H * W, C) if channels_last else (B, C, H * W))


def scaled_sums(s: torch.Tensor, alpha: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``alpha * s`` as float32 ``[B, Co, Ho, Wo]`` from :func:`conv_popcount`'s output, NCHW or channels-last.

    CPU: one fused Numba pass (torch's cast + broadcast multiply on the
    channels-last int16 view was ~10x slower); the same float32 products.
    """
    B, C, H, W = s.shape
    if s.is_cuda:
        y = s.to(torch.float32) * alpha.view(1, -1, 1, 1)
        return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out = _float_out(B, C, H, W, channels_last, s.device)
    s_rows = s.permute(0, 2, 3, 1).contiguous().numpy().reshape(B * H * W, C)  # no copy: s is NHWC memory
    sums_to_float(s_rows, alpha.detach().float().contiguous().numpy(), _flat3(out, channels_last), not channels_last)
    return out


def scaled_bits(bits: torch.Tensor, scale: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``(±1) * scale`` as float32 ``[B, Co, Ho, Wo]`` from packed voter outputs ``[B, Ho, Wo, NW]``."""
    B, H, W, NW = bits.shape
    C = scale.numel()
    if bits.is_cuda:
        y = unpack(bits, C) * scale.view(1, -1, 1, 1)
        return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out = _float_out(B, C, H, W, channels_last, bits.device)
    bits_to_float(_u64(bits.contiguous()).reshape(B * H * W, NW), scale.detach().float().contiguous().numpy(),
                  _flat3(out, channels_last), not channels_last)
    return out
