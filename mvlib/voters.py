"""Majority voters: the exact MV and the hierarchical MV (docs/SEMANTICS.md).

Two layers of API:

* Reference functions on integer partial sums (``majority_vote``,
  ``hierarchical_vote``). They are the definition every kernel, circuit and
  layer is checked against.
* ``nn.Module`` voters that a :class:`mvlib.layers.BinaryConv2d` calls on its
  binarized operands: forward is exactly the reference vote, backward goes
  through every sign by a surrogate gradient on a normalized pre-activation.
  They are built by name with :func:`build_voter` (``"mv"``, ``"hmv"``).

Semantics: bit/value +1 for ``s >= 0`` (an exact tie ``s == 0`` votes +1);
padded taps contribute 0 to ``s``; the hierarchical voter splits the input
channels into ``G1*G2*...`` equal contiguous blocks, the innermost votes tie to
+1, every level above uses ``tie`` (``"pos"`` +1, ``"neg"`` -1, ``"first"`` the
vote of the first child of that group).

Surrogate normalization (``norm``; the backward pass only, forward values never
depend on it). The surrogate sees ``u = s / c``: ``sqrt_fanin`` (c = sqrt(N), the
std of s for random ±1 inputs), ``fanin`` (c = N, u in [-1, 1]) or ``batch_std``
(c = the batch's std of s per output channel, detached, at least 1). Default
``batch_std``, chosen on the validation split by retraining the ``cpu``
baselines through the exact voter with each (``python tools/probe_retrain.py
--profile cpu``; every number, with the backward-pass diagnostics of each
normalization, in ``results/probes/retrain_choice_cpu.json``). Why it fits: the
BN after the convolution divides the popcount's gradient by std(s); dividing u
by the same std gives the voter the step size the baseline was trained with,
where sqrt(N) leaves most of a trained network's sums outside ApproxSign's
window and N shrinks the gradient by about N.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import fused
from .binarizers import get_binarizer, sign_pm1, surrogate_grad
# The vocabulary lives in the torch-free mvlib.voter_spec (the circuits and the bit kernels read it too); it is
# imported here so that every caller of mvlib.voters keeps finding it where it always was.
from .voter_spec import (DEFAULT_SURROGATE_NORM, OUTPUT_SCALES, SURROGATE_NORMS, TIE_RULES,  # noqa: F401
                         normalize_fanins)
# From this many leaf blocks the hierarchical voter's training path keeps only its operands and recomputes the
# tree in the backward pass. Why: the float simulation keeps m partial sums per output plus every level's counts,
# so its memory grows with the leaves: at width 64 a ReActNet-18 training step kept 254 MiB per image for 64
# leaves (~130 GiB at Bi-RealNet-18's batch 512), 176 for (4, 4, 4), 56 for (4, 4) (within an 80 GB GPU), and
# 16 with the tree recomputed. Why not always: recomputing made a step x1.12-1.47 slower (4-64 leaves), so it is
# used only where memory requires it. ``python tools/probe_voter_speed.py --recompute`` (2-core VM:
# results/probes/voter_recompute_cpu.txt); peaks with ``python tools/memory_check.py --profile paper``.
RECOMPUTE_FROM_LEAVES = 32


# --------------------------------------------------------------------------
# Reference votes on integer partial sums
# --------------------------------------------------------------------------
def majority_vote(s: torch.Tensor) -> torch.Tensor:
    """Exact MV: ``sign(s)`` with ties (s == 0) giving +1."""
    return sign_pm1(s)


def _check_tie(tie: str) -> None:
    if tie not in TIE_RULES:
        raise ValueError(f"unknown tie rule {tie!r}; choose one of {TIE_RULES}")


def _tie_vote(votes: torch.Tensor, tie: str) -> torch.Tensor:
    """Vote over the last axis of ±1 ``votes`` with an explicit tie rule."""
    t = votes.sum(-1)
    if tie == "pos":
        at_tie = torch.ones_like(t)
    elif tie == "neg":
        at_tie = -torch.ones_like(t)
    else:
        at_tie = votes[..., 0]
    return torch.where(t > 0, torch.ones_like(t), torch.where(t < 0, -torch.ones_like(t), at_tie))


def hierarchical_vote(block_sums: torch.Tensor, fanins: int | Sequence[int], tie: str = "pos") -> torch.Tensor:
    """Hierarchical MV from the innermost blocks' partial sums.

    ``block_sums[..., m]`` is the partial sum ``s_m`` of the m-th contiguous
    channel block (channel order), ``m < G1*G2*...*Gk``. ``fanins`` runs from
    the outer level inwards. Innermost votes are ``sign(s_m)`` (tie +1); each
    level above votes over its ``G`` children with ``tie``.
    """
    fs = normalize_fanins(fanins)
    _check_tie(tie)
    m = math.prod(fs)
    if block_sums.shape[-1] != m:
        raise ValueError(f"expected {m} block sums for fan-ins {fs}, got {block_sums.shape[-1]}")
    votes = sign_pm1(block_sums)
    lead = block_sums.shape[:-1]
    for g in reversed(fs):  # innermost level first
        votes = _tie_vote(votes.reshape(*lead, -1, g), tie)
    return votes.reshape(lead)


def outer_tie_mask(block_sums: torch.Tensor, fanins: int | Sequence[int], tie: str) -> torch.Tensor:
    """True where the outermost vote of the hierarchy is a tie (its ``G1`` children split evenly).

    The children are computed exactly as in :func:`hierarchical_vote`: innermost
    votes ``sign(s_m)`` (tie +1), every level between them and the outer one
    with ``tie``. So for nested fan-ins the mask depends on the tie rule (an
    inner tie resolved to -1 instead of +1 changes the outer count); for a
    single level it does not, but the rule is still required so that no
    caller can get the ``pos`` mask for another rule by omission.
    """
    fs = normalize_fanins(fanins)
    _check_tie(tie)
    m = math.prod(fs)
    if block_sums.shape[-1] != m:
        raise ValueError(f"expected {m} block sums for fan-ins {fs}, got {block_sums.shape[-1]}")
    votes = sign_pm1(block_sums)
    lead = block_sums.shape[:-1]
    for g in reversed(fs[1:]):  # innermost level first, as in hierarchical_vote
        votes = _tie_vote(votes.reshape(*lead, -1, g), tie)
    return votes.reshape(*lead, fs[0]).sum(-1) == 0


# --------------------------------------------------------------------------
# Integer convolutions of ±1 operands (float simulation)
# --------------------------------------------------------------------------
class _RoundSTE(torch.autograd.Function):
    """Round to the nearest integer; gradient passes unchanged (values are integers up to fp error)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def integer_conv(a_bin: torch.Tensor, w_bin: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """``s = conv(a, w)`` of ±1 operands, zero-padded, rounded to integers."""
    return _RoundSTE.apply(F.conv2d(a_bin, w_bin, None, stride, padding))


def block_partial_sums(a_bin, w_bin, blocks: int, stride: int, padding: int) -> torch.Tensor:
    """Partial sums of ``blocks`` contiguous input-channel blocks: [B, Cout, H, W, blocks].

    One grouped convolution (same MAC count as the full convolution): group m
    sees input channels ``m*c .. (m+1)*c`` and every output channel's weights
    restricted to that block.
    """
    cout, cin = w_bin.shape[:2]
    if cin % blocks:
        raise ValueError(f"{blocks} blocks must divide the {cin} input channels")
    s = _RoundSTE.apply(_grouped_conv(a_bin, _block_weights(w_bin, blocks), stride, padding, blocks))
    b, _, h, wd = s.shape
    return s.reshape(b, blocks, cout, h, wd).permute(0, 2, 3, 4, 1)


def _block_weights(w_bin: torch.Tensor, blocks: int) -> torch.Tensor:
    """``[Cout, Cin, kh, kw]`` -> ``[blocks*Cout, Cin/blocks, kh, kw]``: group m holds every output's block-m weights."""
    cout, cin = w_bin.shape[:2]
    c = cin // blocks
    return w_bin.reshape(cout, blocks, c, *w_bin.shape[2:]).transpose(0, 1).reshape(blocks * cout, c, *w_bin.shape[2:])


CHANNELS_LAST_BELOW = 16  # channels per block under which the grouped convolution runs channels-last


def _grouped_conv(a_bin: torch.Tensor, w: torch.Tensor, stride: int, padding: int, groups: int) -> torch.Tensor:
    """``conv2d(..., groups=groups)``, channels-last when the groups are narrow; the result is NCHW-contiguous.

    oneDNN's NCHW grouped convolution is slow for a few channels per group:
    forward+backward at width 16 (16 channels in 4 blocks of 4, 32x32, batch
    128) took 142 ms NCHW against 60 ms channels-last on the 2-core Xeon; from
    8 channels per block on the two were about equal. The copy back to NCHW is
    included (``python tools/probe_voter_speed.py`` → results/probes/voter_speed_cpu.txt).
    """
    if a_bin.shape[1] // groups < CHANNELS_LAST_BELOW:
        out = F.conv2d(a_bin.contiguous(memory_format=torch.channels_last), w, None, stride, padding, 1, groups)
        return out.contiguous()
    return F.conv2d(a_bin, w, None, stride, padding, 1, groups)


def _channel_std(s: torch.Tensor) -> torch.Tensor:
    """Per-channel (axis 1) standard deviation of ``s`` as ``[1, C, 1, ...]``, unbiased.

    From the sum and the sum of squares in one view: 2-5x faster than
    ``torch.std`` over axes (0, 2, 3) on CPU (``python tools/probe_voter_speed.py``),
    which was 8 % of a retraining step; ``s`` holds integer dot products of mean near 0, so the
    cancellation in ``sum(s^2) - sum(s)^2 / n`` costs no accuracy that matters here.
    """
    c = s.shape[1]
    v = s.reshape(s.shape[0], c, -1)
    n = v.shape[0] * v.shape[2]
    total, squares = v.sum((0, 2)), (v * v).sum((0, 2))
    var = ((squares - total * total / n) / max(n - 1, 1)).clamp_min(0.0)
    return var.sqrt().view(1, c, *([1] * (s.dim() - 2)))


class _VoteSign(torch.autograd.Function):
    """The voter's sign with its surrogate, in one autograd node.

    Forward: ``sign(round(s))`` (tie +1), i.e. ``+1 where s >= -0.5``.
    Backward: ``dL/ds = dL/dy * f'(round(s) / c) / c``, ``f'`` the named
    estimator's closed-form surrogate (:func:`mvlib.binarizers.surrogate_grad`).
    Identical values and gradients to ``binarizer(_RoundSTE(s) / c)``, with
    one saved tensor and a few in-place passes instead of five graph nodes:
    the voter's elementwise work was about a third of a retraining step.
    """

    @staticmethod
    def forward(ctx, s, c, estimator: str):
        ctx.save_for_backward(s, c)
        ctx.estimator = estimator
        return _fast_sign(s)

    @staticmethod
    def backward(ctx, grad):
        s, c = ctx.saved_tensors
        u = torch.round(s).div_(c)
        return surrogate_grad(ctx.estimator, u, inplace=True).mul_(grad).div_(c), None, None


class _LevelVote(torch.autograd.Function):
    """One level of the hierarchical voter on child votes ``v`` grouped along axis 2 (G children).

    Forward: the exact vote of the G children with the tie rule
    (``sign(sum v)``, ties to +1 / -1 / the first child).
    Backward: ``dL/dv_i = dL/dy * f'(sum(v) / G) / G`` for every child,
    ``f'`` the estimator's closed-form surrogate. ``u = sum / G`` lies in
    [-1, 1], so every non-unanimous vote passes gradient (``sum / sqrt(G)``
    would close ApproxSign's window for everything but exact ties when G <= 4).
    """

    @staticmethod
    def forward(ctx, grouped, tie: str, estimator: str):
        t = grouped.sum(2)
        ctx.save_for_backward(t)
        ctx.g, ctx.estimator, ctx.shape = grouped.shape[2], estimator, grouped.shape
        # t is an integer of G's parity, so |t| >= 1 off ties: a bias of +-0.5 only decides the ties
        if tie == "pos":
            bias = 0.5
        elif tie == "neg":
            bias = -0.5
        else:
            bias = 0.5 * grouped.select(2, 0)
        return sign_pm1(t + bias)

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        d = surrogate_grad(ctx.estimator, t / ctx.g, inplace=True).mul_(grad).div_(ctx.g)
        return d.unsqueeze(2).expand(ctx.shape), None, None


def _fast_sign(s: torch.Tensor) -> torch.Tensor:
    """``sign(round(s))`` (tie +1) in one pass: s is an integer up to float error < 0.5.

    On a channels-last float32 CPU tensor the numba sign kernel computes
    ``s + 0.5 >= 0``, the same comparison as ``s >= -0.5`` (the sum is exact
    near the threshold), in one parallel pass instead of torch's three.
    """
    if fused._use_kernels(s):
        return fused.shifted_sign(s, torch.full((s.shape[1],), 0.5))
    one = torch.ones((), dtype=s.dtype, device=s.device)
    return torch.where(s >= -0.5, one, -one)


def _fast_sign_of_bool(up: torch.Tensor, dtype) -> torch.Tensor:
    one = torch.ones((), dtype=dtype, device=up.device)
    return torch.where(up, one, -one)


# --------------------------------------------------------------------------
# Voter modules
# --------------------------------------------------------------------------
class _Voter(nn.Module):
    """Shared parts: surrogate binarizer, pre-activation normalization, output scale."""

    def __init__(self, estimator: str = "approxsign", norm: str = DEFAULT_SURROGATE_NORM, output_scale: str = "none"):
        super().__init__()
        get_binarizer(estimator)
        if norm not in SURROGATE_NORMS:
            raise ValueError(f"unknown surrogate normalization {norm!r}; choose one of {SURROGATE_NORMS}")
        if output_scale not in OUTPUT_SCALES:
            raise ValueError(f"unknown output scale {output_scale!r}; choose one of {OUTPUT_SCALES}")
        self.estimator, self.norm, self.output_scale = estimator, norm, output_scale
        # per-output-channel magnitude for output_scale="matched" (set by calibration)
        self.register_buffer("matched_scale", torch.empty(0))

    def _surrogate_sign(self, s: torch.Tensor, fanin: int) -> torch.Tensor:
        """sign(round(s)) forward on the raw convolution ``s``; surrogate gradient of the estimator at u = round(s) / c."""
        if self.norm == "sqrt_fanin":
            c = s.new_tensor(math.sqrt(fanin))
        elif self.norm == "fanin":
            c = s.new_tensor(float(fanin))
        else:  # batch_std: per output channel, detached
            c = _channel_std(s.detach()).clamp_min(1.0)
        return _VoteSign.apply(s, c, self.estimator)

    def scale(self, out: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if self.output_scale == "none":
            return out
        if self.output_scale == "alpha":
            return out * alpha.view(1, -1, 1, 1)
        if self.matched_scale.numel() == 0:
            raise RuntimeError("output_scale='matched' needs calibration first (mvlib.voter_ops.calibrate_matched_scale)")
        return out * self.matched_scale.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"estimator={self.estimator}, norm={self.norm}, output_scale={self.output_scale}"


class MajorityVoter(_Voter):
    """Exact majority voter on the integer dot product: ``out = sign(s)`` (tie +1)."""

    name = "mv"

    def vote_sums(self, s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The evaluation-mode output from the integer sums ``s`` (the layer may compute them in int8)."""
        return self.scale(_fast_sign(s), alpha)

    def forward(self, a_bin, w_bin, alpha, stride: int, padding: int) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation: one comparison, no surrogate bookkeeping
            return self.vote_sums(F.conv2d(a_bin, w_bin, None, stride, padding), alpha)
        fanin = w_bin.shape[1] * w_bin.shape[2] * w_bin.shape[3]
        return self.scale(self._surrogate_sign(F.conv2d(a_bin, w_bin, None, stride, padding), fanin), alpha)


class HierarchicalVoter(_Voter):
    """Hierarchical majority voter, fan-ins ``(G1, G2, ...)`` from the outer level in.

    Forward equals :func:`hierarchical_vote` on the blocks' partial sums.
    Backward: each inner vote is ``binarizer(s_m / c_m)`` (``c_m`` from ``norm``
    on the block's fan-in); each level above is ``binarizer(sum of child votes / G)``
    for the gradient, while its value follows the tie rule exactly (ties only
    change the forward value). The upper levels divide by G, not sqrt(G): their
    inputs are ±1 votes, whose sum lies in [-G, G], so every non-unanimous vote
    stays inside the surrogate's window.

    ``recompute``: in training, keep only the operands and recompute the tree in the backward pass
    (``torch.utils.checkpoint``); same values and gradients, memory no longer grows with the leaves. ``None``
    (default) turns it on from :data:`RECOMPUTE_FROM_LEAVES` leaves.
    """

    name = "hmv"

    def __init__(self, fanins: int | Sequence[int] = 4, tie: str = "pos", recompute: bool | None = None, **kw):
        super().__init__(**kw)
        self.fanins = normalize_fanins(fanins)
        _check_tie(tie)
        self.tie = tie
        if recompute is not None and not isinstance(recompute, bool):
            raise ValueError(f"recompute must be True, False or None (by the number of leaves), not {recompute!r}")
        self.recompute = math.prod(self.fanins) >= RECOMPUTE_FROM_LEAVES if recompute is None else recompute

    def forward(self, a_bin, w_bin, alpha, stride: int, padding: int) -> torch.Tensor:
        m = math.prod(self.fanins)
        cin = w_bin.shape[1]
        if cin % m:
            raise ValueError(f"{m} blocks must divide the {cin} input channels")
        if not torch.is_grad_enabled():
            s = _grouped_conv(a_bin, _block_weights(w_bin, m), stride, padding, m)
            return self.scale(self._fast_forward(s, m, w_bin.shape[0]), alpha)
        if self.recompute:
            # Keep only the operands for the backward pass and recompute the tree there: values and
            # gradients are unchanged (the recomputation repeats the same operations; see RECOMPUTE_FROM_LEAVES).
            votes = checkpoint(self._train_votes, a_bin, w_bin, stride, padding,
                               use_reentrant=False, preserve_rng_state=False)
        else:
            votes = self._train_votes(a_bin, w_bin, stride, padding)
        return self.scale(votes, alpha)

    def _train_votes(self, a_bin, w_bin, stride: int, padding: int) -> torch.Tensor:
        """The votes with their surrogate gradients, [B, Cout, H, W]."""
        m = math.prod(self.fanins)
        cout, cin = w_bin.shape[:2]
        # Block partial sums as [B, m*Cout, H, W] (channel = block*Cout + o): one grouped convolution, and
        # every later step is a view on the block axis (no permuted copies of this m-times-larger tensor).
        s = _grouped_conv(a_bin, _block_weights(w_bin, m), stride, padding, m)
        votes = self._surrogate_sign(s, cin // m * w_bin.shape[2] * w_bin.shape[3])
        b, _, h, wd = votes.shape
        votes = votes.view(b, m, cout, h, wd)
        for g in reversed(self.fanins):  # innermost level first: its groups are consecutive blocks
            votes = _LevelVote.apply(votes.reshape(b, -1, g, cout, h, wd), self.tie, self.estimator)
        return votes.view(b, cout, h, wd)

    def _fast_forward(self, s: torch.Tensor, m: int, cout: int) -> torch.Tensor:
        """The same votes without gradients, on booleans ("vote is +1") and int8 counts.

        The evaluation sweeps spend most of their time in elementwise passes
        over the m-times-larger partial-sum tensor; this does one float pass
        (``s >= -0.5``, i.e. ``round(s) >= 0``) and the rest on 1-byte values.
        """
        b, _, h, wd = s.shape
        up = (s >= -0.5).view(b, m, cout, h, wd)
        for g in reversed(self.fanins):
            grouped = up.reshape(b, -1, g, cout, h, wd)
            twice = 2 * grouped.sum(2, dtype=torch.int16)
            if self.tie == "pos":
                up = twice >= g
            elif self.tie == "neg":
                up = twice > g
            else:
                up = (twice > g) | ((twice == g) & grouped.select(2, 0))
        return _fast_sign_of_bool(up.view(b, cout, h, wd), s.dtype)

    def extra_repr(self) -> str:
        return f"fanins={self.fanins}, tie={self.tie}, " + super().extra_repr()


def threshold_vote(s: torch.Tensor, polarity: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-channel threshold vote on integer sums ``s`` [B, C, ...]: ``sign(p_c * s - theta_c)``, ties +1.

    ``p_c = +1`` votes +1 for ``s >= theta_c``; ``p_c = -1`` votes +1 for
    ``s <= -theta_c``. ``p = 1, theta = 0`` is the exact MV. ``theta`` holds
    integers, so the comparison is exact in float32.
    """
    view = (1, -1) + (1,) * (s.dim() - 2)
    return sign_pm1(torch.round(s) * polarity.view(view) - theta.view(view))


class _NoGradient(torch.autograd.Function):
    """Identity on ``out`` in the forward; a backward through it is an error (no surrogate is defined)."""

    @staticmethod
    def forward(ctx, s, out):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("the threshold voter has no gradient (evaluation only); retrain through 'mv' or 'hmv'")


class ThresholdVoter(nn.Module):
    """A majority voter whose threshold has the following BatchNorm folded in; evaluation only.

    ``vote_c = threshold_vote(s, polarity, theta)`` (:func:`threshold_vote`) and
    the output is one of two per-channel values, ``level_pos_c`` where the
    vote is +1 and ``level_neg_c`` where it is -1, in the convolution's output
    space (the BN after it is kept and sees them). Buffers are empty until
    :func:`mvlib.voter_analysis.calibrate_threshold_voters` sets them from the
    BN that consumes the layer's output: ``polarity`` and ``theta`` such that
    the vote equals ``sign(BN(alpha * s))`` for every integer ``s`` the layer
    can produce, and the levels (see there). Forward values only: a backward
    pass through it raises.
    """

    name = "threshold"

    def __init__(self):
        super().__init__()
        for buf in ("polarity", "theta", "level_pos", "level_neg"):
            self.register_buffer(buf, torch.empty(0))

    def forward(self, a_bin, w_bin, alpha, stride: int, padding: int) -> torch.Tensor:
        if self.theta.numel() == 0:
            raise RuntimeError("the threshold voter needs calibration first "
                               "(mvlib.voter_analysis.calibrate_threshold_voters)")
        s = F.conv2d(a_bin, w_bin, None, stride, padding)
        up = threshold_vote(s.detach(), self.polarity, self.theta) > 0
        out = torch.where(up, self.level_pos.view(1, -1, 1, 1), self.level_neg.view(1, -1, 1, 1))
        if torch.is_grad_enabled() and s.requires_grad:
            out = _NoGradient.apply(s, out)
        return out


VOTERS = {"mv": MajorityVoter, "hmv": HierarchicalVoter, "threshold": ThresholdVoter}


def build_voter(name: str | None, **options) -> nn.Module | None:
    """Build a voter by name (``"mv"``, ``"hmv"``, ``"threshold"``); ``None`` means no voter."""
    if name is None or name == "none":
        return None
    try:
        cls = VOTERS[name]
    except KeyError:
        raise ValueError(f"unknown voter {name!r}; choose one of {sorted(VOTERS)} or None") from None
    return cls(**options)
