"""Convert an ``mvlib`` model into one whose binary convolutions run on the bit kernels.

:func:`convert_model` deep-copies a model and replaces every
:class:`mvlib.layers.BinaryConv2d` by a :class:`BitConv2d` that computes the
same forward pass on packed bits (inference only):

* pack ``a = sign(x + shift)`` (the RSign shift of ReActNet, none for
  Bi-Real/XNOR) - the same float32 addition and ``>= 0`` test as the float
  simulation;
* no voter: ``y = alpha * s`` with ``s`` from the XNOR + popcount kernel;
* a majority voter: the MV kernel's packed ±1, unpacked, times the voter's
  output scale (``voter.scale``: none, alpha or the calibrated magnitude);
* a hierarchical voter: the HMV kernel with the voter's fan-ins and tie rule;
* a BN-Free layer (:class:`mvlib.models.norms.ScaledStdBinaryConv2d`): its
  weights are the standardized ``W_hat`` (through ``binary_weight``, as in the
  simulation), and its learned per-channel gain ``g`` multiplies the result of
  either of the above afterwards, ``y = (alpha * s) * g`` or
  ``y = voter(...) * g``, in that order as in the layer's own forward.

Kernel size, stride and zero padding are the layer's own (1x1 shortcut
convolutions with padding 0 included). A layer whose forward is not one of
those two definitions, or that runs with real weights or activations (step 1
of two-step training, a real-valued teacher), has no bit twin:
:func:`convert_model` refuses it with an error naming the layer rather than
computing something else.

``s`` is exact and every scale is applied by the same float32 multiply as in
the simulation, so every layer output is bit-identical to the float model's.
By default outputs are returned in the memory format the float model's layer
would produce, so the real-valued layers between (BN, shortcuts, RPReLU) run
the same torch kernels and the logits match exactly; ``channels_last=True``
keeps the kernels' NHWC output (no copy, faster on the CPU) at the price of
possible last-bit differences in the real-valued layers.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from mvlib.layers import BinaryConv2d
from mvlib.models.norms import ScaledStdBinaryConv2d

from .cpu_kernels import sum_dtype
from .layout import n_words
from .ops import BitConvWeights, conv_hmv, conv_mv, conv_popcount, input_pad, pack, scaled_bits, scaled_sums


def voter_kind(voter: nn.Module | None) -> str:
    """``"popcount"`` (no voter), ``"mv"`` or ``"hmv"``; anything else is an error."""
    if voter is None:
        return "popcount"
    name = getattr(voter, "name", None)
    if name in ("mv", "hmv"):
        return name
    raise TypeError(f"no bit kernel for voter {type(voter).__name__}; supported: MajorityVoter, HierarchicalVoter")


def output_gain(conv: BinaryConv2d) -> torch.Tensor | None:
    """The per-output-channel factor ``conv``'s forward applies after the sum or the voter (None: none).

    Decided by which forward the layer runs, not by its attributes: a
    subclass that changes the forward in any other way is an error, since its
    bit twin would silently compute the plain binary convolution.
    """
    forward = type(conv).forward
    if forward is BinaryConv2d.forward:
        return None
    if forward is ScaledStdBinaryConv2d.forward:  # y = BinaryConv2d.forward(x) * g
        return conv.gain.detach().reshape(-1).clone()
    raise TypeError(f"no bit kernel for {type(conv).__name__}: its forward is neither BinaryConv2d's "
                    "nor ScaledStdBinaryConv2d's")


class BitConv2d(nn.Module):
    """Inference twin of a :class:`mvlib.layers.BinaryConv2d` running on the bit kernels."""

    def __init__(self, conv: BinaryConv2d, channels_last: bool = False):
        super().__init__()
        if not (conv.binary_weights and conv.binary_activations):
            raise ValueError("no bit kernel for a convolution with real weights or activations "
                             f"(binary_weights={conv.binary_weights}, binary_activations={conv.binary_activations})")
        gain = output_gain(conv)
        with torch.no_grad():
            w_sign, alpha = conv.binary_weight()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.padding = conv.stride, conv.padding
        self.kind = voter_kind(conv.voter)
        self.voter = copy.deepcopy(conv.voter)  # kept for its output scale (and fan-ins / tie rule)
        self.channels_last = channels_last
        self.register_buffer("alpha", alpha.detach().clone())
        shift = conv.act.shift
        self.register_buffer("shift", None if shift is None else shift.detach().clone())
        self.register_buffer("gain", gain)  # BN-Free's learned gain, None for the plain layer
        self.fanins = tuple(self.voter.fanins) if self.kind == "hmv" else None
        self.tie = self.voter.tie if self.kind == "hmv" else None
        blocks = 1
        if self.fanins:
            for g in self.fanins:
                blocks *= g
        self.weights = BitConvWeights(w_sign, blocks)
        self._buffers_cpu: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = input_pad(x, self.weights, self.padding, self.kind)  # pack straight into a zero border
        B, _, H, W = x.shape
        ho, wo = self.weights.out_size(H, W, self.stride, self.padding)
        bits_buf = self._scratch("bits", (B, H + 2 * pad, W + 2 * pad, n_words(self.in_channels)), x)
        bits = pack(x, self.shift, pad, out=bits_buf)
        if x.is_cuda:
            out = None
        elif self.kind == "popcount":
            out = self._scratch("sums", (B * ho * wo, self.out_channels), x, sum_dtype(self.weights.cpu(1)))
        else:
            out = self._scratch("votes", (B * ho * wo, n_words(self.out_channels)), x, np.uint64)
        # Output in the memory format the float simulation produces, so that the real-valued layers
        # after this one run the same torch kernels and round identically: its conv output follows
        # the input's format (oneDNN), its HMV output is rebuilt contiguous by reshapes.
        cl = self.channels_last or (self.kind != "hmv" and not x.is_contiguous()
                                    and x.is_contiguous(memory_format=torch.channels_last))
        if self.kind == "popcount":
            s = conv_popcount(bits, self.weights, self.stride, self.padding, pad, out=out)
            y = scaled_sums(s, self.alpha, cl)
        else:
            if self.kind == "mv":
                out_bits = conv_mv(bits, self.weights, self.stride, self.padding, pad, out=out)
            else:
                out_bits = conv_hmv(bits, self.weights, self.stride, self.padding, self.fanins, self.tie, out=out)
            # the voter's own scale rule (none / alpha / matched) applied to ones: its per-channel factor
            scale = self.voter.scale(torch.ones(1, self.out_channels, 1, 1, device=x.device), self.alpha).reshape(-1)
            y = scaled_bits(out_bits, scale, cl)
        if self.gain is not None:
            # a second float32 multiply, not folded into alpha or the voter's scale: the simulation
            # rounds (alpha * s) first and then multiplies by g, and (alpha * g) * s can differ in the last bit
            y = y * self.gain.view(1, -1, 1, 1)
        return y

    def _scratch(self, name, shape, x, np_dtype=None):
        """Internal CPU buffers reused across calls (fresh 10-30 MB allocations cost page faults).

        Only intermediates live here (packed input, sums, votes); the layer's
        returned float tensor is always a new one. ``np_dtype`` None: a zeroed
        int64 torch tensor (packed words; its zero border is never written).
        """
        if x.is_cuda:
            return None
        buf = self._buffers_cpu.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape) or (np_dtype is not None and buf.dtype != np_dtype):
            buf = torch.zeros(shape, dtype=torch.int64) if np_dtype is None else np.empty(shape, np_dtype)
            self._buffers_cpu[name] = buf
        return buf

    def extra_repr(self) -> str:
        extra = f", fanins={self.fanins}, tie={self.tie}" if self.kind == "hmv" else ""
        extra += ", gain" if self.gain is not None else ""
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, padding={self.padding}, "
                f"kernel={self.kind}{extra}")


def convert_model(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose binary convolutions run on the bit kernels.

    A binary convolution without a bit twin (see :class:`BitConv2d`) raises
    the error of :class:`BitConv2d` prefixed with the layer's name; ``model``
    itself is never modified.
    """
    out = copy.deepcopy(model).eval()
    targets = [(name, m) for name, m in out.named_modules() if isinstance(m, BinaryConv2d)]
    for name, conv in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        try:
            bit = BitConv2d(conv, channels_last).eval()
        except (TypeError, ValueError) as err:
            raise type(err)(f"cannot convert binary convolution {name or '(the model itself)'!r}: {err}") from err
        if not name:  # the model is a single binary convolution: its twin is the whole result
            return bit
        setattr(parent, attr, bit)
    return out


def bit_convs(model: nn.Module) -> list[tuple[str, BitConv2d]]:
    """The converted convolutions of a model, in forward order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BitConv2d)]


@torch.no_grad()
def prediction_agreement(model: nn.Module, bit_model: nn.Module, batches, device="cpu") -> dict:
    """Run both models over ``batches`` (an iterable of ``(images, labels)``) and compare.

    Returns the image count, the number of differing top-1 predictions (0
    expected: the logits are bit-identical), the largest absolute logit
    difference and both models' top-1 accuracy.
    """
    model, bit_model = model.eval().to(device), bit_model.eval().to(device)
    n = differ = correct_ref = correct_bit = 0
    max_diff = 0.0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        ref, got = model(images), bit_model(images)
        p_ref, p_bit = ref.argmax(1), got.argmax(1)
        n += len(labels)
        differ += int((p_ref != p_bit).sum())
        correct_ref += int((p_ref == labels).sum())
        correct_bit += int((p_bit == labels).sum())
        max_diff = max(max_diff, float((ref - got).abs().max()))
    return {"images": n, "differing_predictions": differ, "max_abs_logit_diff": max_diff,
            "top1_float": 100.0 * correct_ref / max(n, 1), "top1_bit": 100.0 * correct_bit / max(n, 1)}
