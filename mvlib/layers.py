"""Binary layers: RSign-style activation binarization, the binary 3x3 convolution, RPReLU.

The binary convolution follows docs/SEMANTICS.md exactly:

* activations ``a = sign(x + b)`` (``b`` the learnable RSign shift, optional),
  surrogate gradient chosen by name (``act_binarizer``);
* weights ``w = sign(W)``, clipped STE to ``W``; per-output-channel scale
  ``alpha = mean|W|`` (detached);
* ``s = round(conv(a, w))`` on the ±1 operands with zero padding of the
  *binarized* input, then ``y = alpha * s``. Alpha is never folded into the
  weights first (that would turn exact ties into ±eps).
* ``voter`` (``None`` by default) replaces ``alpha * s`` by a majority voter's
  output; see :mod:`mvlib.voters`.

Speed: without a voter, :class:`BinaryConv2d` runs as one autograd
function (:class:`_FusedBinaryConv`) and :class:`RPReLU` as another, whose
elementwise passes are single numba loops on channels-last CPU tensors
(:mod:`mvlib.fused`). They compute the same values and surrogate gradients as
the module-by-module definition (``BinaryActivation`` -> ``binary_weight`` ->
``integer_conv`` -> ``* alpha``), which stays the path for voters, hooks and
anything the fused path does not cover; ``tests/test_layers_equivalence.py``
checks the two against each other and against an unfused reference model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cpu_fast, fused
from .binarizers import WeightSTESign, get_binarizer, surrogate_grad
from .voters import build_voter, integer_conv


class _ShiftedSign(torch.autograd.Function):
    """``sign(x + b)`` with a named surrogate gradient, fused (one saved tensor).

    Forward: ``y = sign(x + b)``; backward: ``g * f'(x + b)`` to x and the
    sum over batch and space to the per-channel shift b, where f' is the
    estimator's closed-form surrogate (:func:`mvlib.binarizers.surrogate_grad`).
    Equivalent to ``binarizer(x + b)`` with ``b`` a learnable bias
    (ReActNet's RSign, Liu et al. 2020), with one elementwise pass less.
    """

    @staticmethod
    def forward(ctx, x, b, name):
        ctx.save_for_backward(x, b)
        ctx.name = name
        return fused.shifted_sign(x, b)  # numba's one pass where it applies; the same values as torch's

    @staticmethod
    def backward(ctx, g):
        x, b = ctx.saved_tensors
        z = x + b.view(1, -1, 1, 1)  # recomputed bit for bit: one tensor saved, as before
        gx = g * surrogate_grad(ctx.name, z)
        return gx, gx.sum((0, 2, 3)), None


class BinaryActivation(nn.Module):
    """RSign: ``sign(x + b)``; ``b`` per channel when ``learnable_shift`` (ReActNet), absent otherwise (Bi-Real, XNOR)."""

    def __init__(self, channels: int, binarizer: str = "approxsign", learnable_shift: bool = True):
        super().__init__()
        get_binarizer(binarizer)
        self.binarizer = binarizer
        self.shift = nn.Parameter(torch.zeros(channels)) if learnable_shift else None

    def forward(self, x):
        if self.shift is None:
            return get_binarizer(self.binarizer)(x)
        return _ShiftedSign.apply(x, self.shift, self.binarizer)

    def extra_repr(self):
        return f"binarizer={self.binarizer}, learnable_shift={self.shift is not None}"


class _FusedBinaryConv(torch.autograd.Function):
    """``alpha * round(conv(sign(x + b), sign(W)))`` with the surrogate and clipped-STE gradients, fused.

    Same forward and gradients as ``BinaryActivation`` -> ``WeightSTESign`` ->
    ``integer_conv`` -> ``* alpha`` (alpha = mean|W| detached), with fewer
    passes and saved tensors: the sign and its backward are one kernel each,
    ``round(s) * alpha`` is done in place, and ``x`` itself is saved (the
    surrogate's ``x + b`` is recomputed bit for bit in the backward). On CPU
    the forward convolution runs on the bits in int8 (exact, see
    :func:`mvlib.cpu_fast.int8_binary_conv`); the backward stays float32.
    """

    @staticmethod
    def forward(ctx, x, shift, w, stride, padding, name):
        # Under CPU/CUDA autocast to bf16 the forward stays exact: it runs in float32 (the int8 path on
        # CPU), and only the backward's two convolutions take bf16 operands (see backward).
        dev = x.device.type
        ctx.bf16 = torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16
        with torch.autocast(dev, enabled=False):
            x = x.float()
            alpha = w.detach().abs().mean((1, 2, 3))
            # sign(W) in the activations' layout: oneDNN would otherwise reorder it on every call.
            cl = dev == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
            wb = fused.weight_sign(w, cl)
            # Exact int8 convolution of the bits where available (CPU); sign(x + b) is then
            # recomputed in the backward instead of being stored.
            y = cpu_fast.int8_binary_conv(x, shift, wb, alpha, stride, padding)
            a = None
            if y is None:
                a = fused.shifted_sign(x, shift)
                y = fused.round_scale_(F.conv2d(a, wb, None, stride, padding), alpha)
        ctx.save_for_backward(x, shift, w, a, wb, alpha)
        ctx.stride, ctx.padding, ctx.name = stride, padding, name
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, shift, w, a, wb, alpha = ctx.saved_tensors
        if a is None:
            a = fused.shifted_sign(x, shift)
        need_x, need_shift, need_w = ctx.needs_input_grad[:3]
        st, pad = [ctx.stride] * 2, [ctx.padding] * 2
        # bf16 (the forward ran under autocast): a and sign(W) are exact in bf16, g is rounded to it;
        # the convolutions accumulate in float32 and their results come back as float32.
        low = (lambda t: t.to(torch.bfloat16)) if ctx.bf16 else (lambda t: t)
        ga_in, a_in = low(g), low(a)

        def conv_backward(weight, mask):
            out = torch.ops.aten.convolution_backward(ga_in, a_in, low(weight), None, st, pad, [1, 1], False,
                                                      [0, 0], 1, mask)
            return [None if t is None else t.float() for t in out]

        # The gradient of s is g * alpha (round() passes it unchanged). To the input,
        # conv_T(g * alpha, wb) == conv_T(g, alpha * wb) bit for bit, as alpha * (+-1) is
        # exact: folding alpha into the small weight saves a pass over the activation
        # gradient. To the weight, alpha scales the sum afterwards (float reassociation).
        gx = gshift = gw = None
        if need_x or need_shift:
            ga = conv_backward(wb * alpha.view(-1, 1, 1, 1), [True, False, False])[0]
            # ga is this function's own buffer: the surrogate gradient overwrites it.
            gx, gshift = fused.shifted_sign_backward(ga, x, shift, ctx.name, inplace=True)
        if need_w:  # WeightSTESign's clipped STE
            gw = fused.weight_ste_grad(conv_backward(wb, [False, True, False])[1], w, alpha)
        return gx, gshift, gw, None, None, None


class BinaryConv2d(nn.Module):
    """Binary k x k convolution: ``y = alpha * round(conv(sign(x + b), sign(W)))`` or a voter on it.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``.
        act_binarizer: name of the activation estimator (``"approxsign"``, ``"ste"``).
        learnable_shift: RSign's learnable per-channel shift before the sign.
        voter: ``None`` (popcount, integer output) or a voter module / name from
            :func:`mvlib.voters.build_voter`; switch later with
            :func:`mvlib.voter_ops.set_voter`.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                 act_binarizer="approxsign", learnable_shift=True, voter=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.act = BinaryActivation(in_channels, act_binarizer, learnable_shift)
        # small uniform init as in the ReActNet / "BNN - BN" reference code
        self.weight = nn.Parameter(torch.rand(out_channels, in_channels, kernel_size, kernel_size) * 1e-3)
        self.voter = build_voter(voter) if isinstance(voter, str) else voter
        # two-step training (ReActNet) and real-valued teachers switch these off; see set_binarization
        self.binary_weights = True
        self.binary_activations = True

    def binary_weight(self):
        """(sign(W) with clipped STE, alpha = mean|W| per output channel, detached)."""
        w = self.latent_weight()
        alpha = w.detach().abs().mean((1, 2, 3))
        return WeightSTESign.apply(w), alpha

    def latent_weight(self):
        """The real-valued weight that is binarized (a hook for weight standardization)."""
        return self.weight

    def integer_sums(self, x):
        """The integer dot products ``s`` (no scale, no voter): for analysis and kernels."""
        a = self.act(x)
        w, _ = self.binary_weight()
        return integer_conv(a, w, self.stride, self.padding)

    def fused_path_ok(self) -> bool:
        """Whether :meth:`forward` may run as :class:`_FusedBinaryConv`.

        Only for the plain definition: no voter, the stock activation module
        without hooks, an estimator the fused backward knows. Any option that
        changes the computation must either be honoured by the fused function
        or make this return False.
        """
        act = self.act
        return (self.voter is None and self.binary_weights and self.binary_activations
                and type(act) is BinaryActivation and act.binarizer in fused.KERNEL_KINDS
                and not act._forward_hooks and not act._forward_pre_hooks)

    def int8_vote_ok(self) -> bool:
        """Whether an evaluation-mode forward may feed the voter the int8 convolution's sums.

        The same conditions as :meth:`fused_path_ok` on the activation side, a
        voter that takes sums (:meth:`mvlib.voters.MajorityVoter.vote_sums`)
        and has no hooks, and no gradient being recorded.
        """
        act, voter = self.act, self.voter
        return (voter is not None and hasattr(voter, "vote_sums") and not torch.is_grad_enabled()
                and self.binary_weights and self.binary_activations
                and type(act) is BinaryActivation and act.binarizer in fused.KERNEL_KINDS
                and not act._forward_hooks and not act._forward_pre_hooks
                and not voter._forward_hooks and not voter._forward_pre_hooks)

    def forward(self, x):
        if self.fused_path_ok():
            return _FusedBinaryConv.apply(x, self.act.shift, self.latent_weight(), self.stride,
                                          self.padding, self.act.binarizer)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            # The sums and the voters' thresholds need integers up to 9 * C_in: bf16 holds them only to 256.
            with torch.autocast(dev, enabled=False):
                return self._float32_forward(x.float())
        return self._float32_forward(x)

    def _float32_forward(self, x):
        if self.int8_vote_ok():
            w = self.latent_weight().detach()
            alpha = w.abs().mean((1, 2, 3))
            cl = x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
            # exact integer sums s (alpha = 1), or None where the int8 path does not apply
            s = cpu_fast.int8_binary_conv(x, self.act.shift, fused.weight_sign(w, cl), torch.ones_like(alpha),
                                          self.stride, self.padding)
            if s is not None:
                return self.voter.vote_sums(s, alpha)
        if not (self.binary_weights and self.binary_activations):
            return self._partly_real_forward(x)
        a = self.act(x)
        w, alpha = self.binary_weight()
        if self.voter is None:
            return integer_conv(a, w, self.stride, self.padding) * alpha.view(1, -1, 1, 1)
        return self.voter(a, w, alpha, self.stride, self.padding)

    def _partly_real_forward(self, x):
        """Real weights and/or real activations: a plain convolution (no rounding, no alpha).

        Step 1 of ReActNet's two-step recipe keeps real weights under binary
        activations; a real-valued teacher has neither binarized (the RSign
        shift is still applied so that the shapes of the parameters match).
        """
        if self.voter is not None:
            raise RuntimeError("a voter needs binary weights and activations (set_binarization(model, True, True))")
        if self.binary_activations:
            a = self.act(x)
        else:
            a = x if self.act.shift is None else x + self.act.shift.view(1, -1, 1, 1)
        w = self.binary_weight()[0] * self.binary_weight()[1].view(-1, 1, 1, 1) if self.binary_weights else self.latent_weight()
        return F.conv2d(a, w, None, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class _FusedRPReLU(torch.autograd.Function):
    """RPReLU of ``x (+ residual)`` in one pass each way (see :func:`mvlib.fused.rprelu`)."""

    @staticmethod
    def forward(ctx, x, residual, gamma, slope, zeta):
        ctx.save_for_backward(x, residual, gamma, slope)
        return fused.rprelu(x, residual, gamma, slope, zeta)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, residual, gamma, slope = ctx.saved_tensors
        gz, ggamma, gslope, gzeta = fused.rprelu_backward(g, x, residual, gamma, slope)
        return gz, (gz if residual is not None else None), ggamma, gslope, gzeta


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` with per-channel gamma, slope and zeta (Liu et al. 2020).

    ``forward(x, residual)`` computes ``RPReLU(x + residual)`` with the
    residual addition fused in (the blocks pass their shortcut this way).
    """

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), init_slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x, residual=None):
        return _FusedRPReLU.apply(x, residual, self.shift_in, self.slope, self.shift_out)


def set_binarization(model: nn.Module, weights: bool = True, activations: bool = True) -> nn.Module:
    """Switch every binary convolution's weight and activation binarization on or off."""
    for _, conv in binary_convs(model):
        conv.binary_weights, conv.binary_activations = bool(weights), bool(activations)
    return model


def binary_convs(model: nn.Module) -> list[tuple[str, BinaryConv2d]]:
    """All binary convolutions of a model, in forward order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]
