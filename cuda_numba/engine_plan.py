"""The engine's plan of a trained network's binary blocks, and what it refuses to compile.

:class:`BlockPlan` turns one binary ResNet-18 block of an mvlib model into what
:func:`cuda_numba.engine_kernels.block_kernel` reads: the weights in the CPU
kernels' layout, the per-channel parameter table ``P`` and the flag vector
(voter mode, BatchNorm, residual, RPReLU, the next layer's sign), and the
torch modules of a projection shortcut. Every float in ``P`` is formed the way
torch forms it (:func:`bn_affine`: BatchNorm as ``fma(x, A, B)``), which is
what keeps the engine's outputs the float model's bit for bit.

What the engine does not compile is refused here with :class:`EngineUnsupported`
(a clear message, never a silent approximation); :mod:`cuda_numba.engine`
builds the plan and runs it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from mvlib.layers import BinaryActivation, BinaryConv2d, RPReLU

from .bitops import MAX_VOTE_BLOCKS, vote_plan
from .cpu_kernels import CpuWeights
from .engine_kernels import (F_BITS, F_HAS_BN, F_MODE, F_OUT_PAD, F_RES_BN, F_RPRELU, F_TIE, MODE_HMV, MODE_LINEAR,
                             MODE_MV, MODE_THRESHOLD, N_FLAGS, N_PARAMS, P_ALPHA, P_BN_A, P_BN_B, P_GAMMA, P_LNEG,
                             P_LPOS, P_NEXT_A, P_NEXT_B, P_POL, P_RES_A, P_RES_B, P_SLOPE, P_THETA, P_ZETA,
                             affine_fma, bn_terms)


class EngineUnsupported(ValueError):
    """The model holds something the engine does not compile (a clear refusal, not a failure).

    A subclass of ValueError, as the refusals were before they had their own type; a caller that
    falls back to the float model catches this class only, so that any other error still surfaces.
    """


def _f32(t) -> np.ndarray:
    return t.detach().reshape(-1).to(torch.float32).contiguous().numpy().copy()


def bn_affine(bn: nn.Module, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, B)`` with ``BN(x) = fma(x, A, B)`` exactly as torch's CPU eval kernel; None for ``nn.Identity``."""
    if isinstance(bn, nn.Identity):
        return None
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
        raise EngineUnsupported(f"only BatchNorm2d with running statistics (or no norm) is supported, got {bn}")
    w = _f32(bn.weight) if bn.weight is not None else np.ones(channels, np.float32)
    b = _f32(bn.bias) if bn.bias is not None else np.zeros(channels, np.float32)
    return bn_terms(w, b, _f32(bn.running_mean), _f32(bn.running_var), np.float32(bn.eps))


def _voter_mode(conv: BinaryConv2d):
    """(mode, fan-ins, tie code, blocks) of a binary convolution's voter."""
    voter = conv.voter
    name = None if voter is None else getattr(voter, "name", None)
    if voter is None:
        return MODE_LINEAR, np.ones(1, np.int64), 0, 1
    if name == "mv":
        return MODE_MV, np.ones(1, np.int64), 0, 1
    if name == "hmv":
        if math.prod(voter.fanins) > MAX_VOTE_BLOCKS:
            raise EngineUnsupported(f"hierarchical voter of {math.prod(voter.fanins)} leaves: the kernels hold the "
                                    f"inner votes in one uint64 ({MAX_VOTE_BLOCKS} at most)")
        fan, blocks, tie = vote_plan(voter.fanins, voter.tie)
        return MODE_HMV, fan, tie, blocks
    if name == "threshold":
        return MODE_THRESHOLD, np.ones(1, np.int64), 0, 1
    raise EngineUnsupported(f"no engine kernel for voter {type(voter).__name__}")


class BlockPlan:
    """One binary block's plan: weights in the kernels' layout, per-channel parameters, flags, shortcut."""

    def __init__(self, blk, style: str):
        conv = blk.conv
        if type(conv).forward is not BinaryConv2d.forward or not isinstance(conv, BinaryConv2d):
            raise EngineUnsupported(f"no engine kernel for {type(conv).__name__} (BN-Free and other variants)")
        if not (conv.binary_weights and conv.binary_activations):
            raise EngineUnsupported("the engine needs binary weights and activations")
        if type(conv.act) is not BinaryActivation or conv.kernel_size != 3 or conv.padding != 1:
            raise EngineUnsupported("the engine runs 3x3 binary convolutions with padding 1 and RSign activations")
        if not blk.branch_enabled or blk.beta != 1.0 or blk.alpha_res != 1.0:
            raise EngineUnsupported("shortcut-only blocks and branch scalings (bnfree) are not supported")
        self.cin, self.cout, self.stride = conv.in_channels, conv.out_channels, conv.stride
        self.mode, self.fanins, tie, blocks = _voter_mode(conv)
        with torch.no_grad():
            w_sign, alpha = conv.binary_weight()
        self.wts = CpuWeights((w_sign.detach() >= 0).numpy().astype(np.int8) * 2 - 1, blocks)
        # direct kernel path (taps read in place from a zero-bordered input) as in cpu_kernels._conv_kernel
        self.in_pad = 1 if (blocks == 1 and self.cin % 64 == 0) else 0
        co = self.cout
        P = np.zeros((N_PARAMS, co), np.float32)
        P[P_NEXT_A] = 1.0
        P[P_ALPHA] = _f32(alpha)
        flags = np.zeros(N_FLAGS, np.int64)
        flags[F_MODE], flags[F_TIE] = self.mode, tie
        if self.mode in (MODE_MV, MODE_HMV):  # the voter's own scale rule on +-1: exact levels
            with torch.no_grad():
                ones = torch.ones(1, co, 1, 1)
                P[P_LPOS], P[P_LNEG] = _f32(conv.voter.scale(ones, alpha)), _f32(conv.voter.scale(-ones, alpha))
        elif self.mode == MODE_THRESHOLD:
            v = conv.voter
            if v.theta.numel() == 0:
                raise RuntimeError("the threshold voter needs calibration first")
            P[P_POL], P[P_THETA], P[P_LPOS], P[P_LNEG] = (_f32(v.polarity), _f32(v.theta), _f32(v.level_pos),
                                                          _f32(v.level_neg))
        post = bn_affine(blk.norm, co)
        if post is not None and self.mode == MODE_LINEAR:
            flags[F_HAS_BN] = 1
            P[P_BN_A], P[P_BN_B] = post
        elif post is not None:  # a voter's output takes two values per channel: BN folded into them, exactly
            P[P_LPOS], P[P_LNEG] = affine_fma(P[P_LPOS], *post), affine_fma(P[P_LNEG], *post)
        self.shortcut = None
        if blk.shortcut.body is not None:
            pool, sc_conv, sc_bn = blk.shortcut.body
            if isinstance(sc_conv, BinaryConv2d):
                raise EngineUnsupported("binary 1x1 shortcut convolutions (binary_downsample=True) are not fused; "
                                        "use cuda_numba.convert_model for such a model")
            if not (isinstance(pool, nn.Identity) or (isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2
                                                      and pool.stride == 2 and pool.padding == 0
                                                      and not pool.ceil_mode)):
                raise EngineUnsupported(f"unexpected shortcut pooling {pool}")
            self.shortcut = (pool, sc_conv)
            aff = bn_affine(sc_bn, co)
            if aff is not None:
                flags[F_RES_BN] = 1
                P[P_RES_A], P[P_RES_B] = aff
        if style == "reactnet":
            if not isinstance(blk.act, RPReLU):
                raise EngineUnsupported("a reactnet block without RPReLU")
            flags[F_RPRELU] = 1
            P[P_GAMMA], P[P_SLOPE], P[P_ZETA] = _f32(blk.act.shift_in), _f32(blk.act.slope), _f32(blk.act.shift_out)
        elif not isinstance(blk.act, nn.Identity):
            raise EngineUnsupported(f"unexpected activation {blk.act} in a {style} block")
        self.P, self.flags = P, flags

    def set_next(self, nxt: "BlockPlan | None", pre: tuple[np.ndarray, np.ndarray] | None, shift: np.ndarray | None):
        """What the epilogue packs: the next layer's ``sign(fma(x, A, B))`` (its shift or pre-norm), or nothing."""
        if nxt is None:
            self.flags[F_BITS], self.flags[F_OUT_PAD] = 0, 0
            return
        self.flags[F_BITS], self.flags[F_OUT_PAD] = 1, nxt.in_pad
        next_terms(self.P, pre, shift)


def next_terms(P, pre, shift):
    """Rows ``P_NEXT_A``, ``P_NEXT_B`` of ``P``: the next layer's input is ``sign(fma(x, A, B))``."""
    if pre is not None:  # XNOR-Net: the next block's BN before its sign
        P[P_NEXT_A], P[P_NEXT_B] = pre
    elif shift is not None:  # ReActNet's RSign: x + b (fma(x, 1, b) is that sum, rounded once)
        P[P_NEXT_A], P[P_NEXT_B] = 1.0, shift
    else:
        P[P_NEXT_A], P[P_NEXT_B] = 1.0, 0.0


def input_sign_terms(blk) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """``(pre, shift)`` of how block ``blk`` signs its input: its pre-norm's ``(A, B)`` or its RSign shift."""
    pre = bn_affine(blk.pre_norm, blk.conv.in_channels)
    shift = None if blk.conv.act.shift is None else _f32(blk.conv.act.shift)
    return pre, shift
