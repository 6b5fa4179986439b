"""Why a substituted voter costs what it costs: weight scale, BN-folded thresholds, sign flips (notebook 08).

The naive substitution (docs/SEMANTICS.md) puts the MV's ±1 output, times a
magnitude chosen by convention (``output_scale``: none, alpha, matched), into
the BN that was fitted to ``alpha * s``. This module holds what it takes to
tell the convention from the architecture:

* :func:`rescale_binary_weights`: multiply every binary convolution's latent
  weights by ``k`` (so ``alpha`` and the output ``alpha * s`` scale by ``k``)
  and compensate where the network needs it, leaving the float network's
  function unchanged. Only the ``none`` convention (a bare ±1) sees ``k``:
  ``alpha * v`` and the matched magnitude scale with it, and the BN absorbs it.
* :func:`fold_bn_threshold` / :func:`calibrate_threshold_voters`: the
  convention-free voter (:class:`mvlib.voters.ThresholdVoter`) whose vote is
  exactly ``sign(BN(alpha * s))``, a per-channel threshold on ``s``.
* :func:`layer_sign_flips`: per layer, the fraction of outputs whose sign after
  the BN flips when ``alpha * s`` is replaced by the voter's output under each
  convention, and how far the folded threshold lies from the MV's fixed 0.

Where each applies: a binary convolution whose output tensor is the input of
a BatchNorm (:func:`conv_bn_pairs`, found by tracing one forward pass). In the
ResNet-18s with ``norm="bn"`` that is every 3x3 convolution of ReActNet-18 and
Bi-RealNet-18 (conv -> BN -> + shortcut) and the binary 1x1 shortcut
convolution (``binary_downsample=True``, conv -> BN) of every style. It is no
XNORNet-18 3x3 convolution: there the output is added to the residual before
any BN (the next block's BN sees ``alpha * s + shortcut``), so the sign after
the BN is no function of ``s`` alone. ``norm="none"`` / ``"bnfree"`` have no BN.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binarizers import sign_pm1
from .layers import BinaryConv2d, binary_convs
from .voter_ops import (LayerSpec, _hooked_eval_passes, calibrate_matched_scale, popcount_network, select_layers,
                        set_voter, voters_kept)
from .voters import OUTPUT_SCALES, ThresholdVoter, threshold_vote

_BN = nn.modules.batchnorm._BatchNorm
THRESHOLD_LEVELS = ("conditional", "symmetric")


# --------------------------------------------------------------------------
# Structure: which BN consumes which binary convolution's output
# --------------------------------------------------------------------------
@torch.no_grad()
def conv_bn_pairs(model: nn.Module, image_size: int = 32) -> dict[str, tuple[str, nn.Module]]:
    """``{conv name: (bn name, bn)}`` for every binary convolution whose output *is* a BatchNorm's input.

    Found by one eval-mode forward pass of a zero image batch with hooks (the
    same tensor object leaves the convolution and enters the BN; nothing in
    between). Voters are switched off for the pass and restored; no statistic changes.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise TypeError("conv_bn_pairs needs a model whose first layer is an nn.Conv2d (the stem)")
    bn_names = {m: n for n, m in model.named_modules() if isinstance(m, _BN)}
    produced: list[tuple[torch.Tensor, str]] = []  # references keep the tensors alive: no id reuse
    pairs: dict[str, tuple[str, nn.Module]] = {}

    def conv_hook(name):
        def fn(_mod, _inp, out):
            produced.append((out, name))
        return fn

    def bn_hook(mod, inp):
        for t, name in produced:
            if inp[0] is t:
                pairs[name] = (bn_names[mod], mod)

    convs = binary_convs(model)
    handles = [m.register_forward_hook(conv_hook(n)) for n, m in convs]
    handles += [m.register_forward_pre_hook(bn_hook) for m in bn_names]
    was_training = model.training
    try:
        with popcount_network(model):
            model.eval()
            model(torch.zeros(2, first.in_channels, image_size, image_size, device=first.weight.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return pairs


# --------------------------------------------------------------------------
# Rescaling invariance
# --------------------------------------------------------------------------
def _scale_bn(bn: nn.Module, k_in: float, k_out: float) -> None:
    """Make ``BN'(k_in * x) = k_out * BN(x)`` in eval mode.

    ``BN(x) = gamma * (x - mu) / sqrt(var + eps) + beta``: ``mu *= k_in``,
    ``var *= k_in^2``, ``eps *= k_in^2`` (so ``sqrt(var + eps)`` scales by
    exactly ``k_in``; leaving eps would change channels of small variance),
    ``gamma, beta *= k_out``. Bit-exact in float32 when the factors are powers of two.
    """
    bn.running_mean.mul_(k_in)
    bn.running_var.mul_(k_in * k_in)
    bn.eps = bn.eps * k_in * k_in
    if k_out != 1.0:
        if bn.weight is None or bn.bias is None:
            raise ValueError("scaling a BN's output needs its affine parameters")
        bn.weight.mul_(k_out)
        bn.bias.mul_(k_out)


def _scale_conv(conv: BinaryConv2d, k: float) -> None:
    """Latent weights (hence alpha and ``alpha * s``) times k; calibrated voter outputs in conv space too."""
    if type(conv).latent_weight is not BinaryConv2d.latent_weight:
        raise ValueError(f"{type(conv).__name__} binarizes a transformed weight (standardized: scale-free); "
                         "rescaling its latent weight does not scale its output")
    conv.weight.mul_(k)
    v = conv.voter
    if v is not None and getattr(v, "matched_scale", torch.empty(0)).numel():
        v.matched_scale.mul_(k)  # the matched magnitude is measured on alpha * s, which scaled by k
    if isinstance(v, ThresholdVoter) and v.level_pos.numel():
        v.level_pos.mul_(k)
        v.level_neg.mul_(k)


def _rescale_residual_stream(model: nn.Module, k: float) -> None:
    """XNORNet-18 (pre-norm): scale the whole residual stream by k; every BN before a sign absorbs it.

    Block ``x' = BinConv(sign(BN_pre(x))) + shortcut(x)``: the convolution's
    output ``k * alpha * s`` is added to the shortcut before any BN, so the
    shortcut and the stem must carry ``k`` as well: stem BN and shortcut BN
    outputs times k (their gamma, beta), every BN fed by the stream (pre-norms,
    shortcut BNs) sees ``k * x`` (mu, var, eps), a binary shortcut's RSign
    shift (if any) times k so ``sign(k x + k b)`` is unchanged, and the
    classifier weight divided by k (its input is ``k`` times the pooled stream).
    """
    _scale_bn(model.stem[1], 1.0, k)
    for blk in model.blocks:
        _scale_bn(blk.pre_norm, k, 1.0)
        _scale_conv(blk.conv, k)
        if blk.shortcut.body is not None:
            sc = blk.shortcut.body[1]
            if isinstance(sc, BinaryConv2d):
                _scale_conv(sc, k)
                if sc.act.shift is not None:
                    sc.act.shift.mul_(k)
            _scale_bn(blk.shortcut.body[2], k, k)  # input k * x (a linear conv of k * x, or k * alpha * s)
    model.classifier.weight.div_(k)


@torch.no_grad()
def rescale_binary_weights(model: nn.Module, k: float, inplace: bool = False) -> nn.Module:
    """Multiply every binary convolution's latent weights by ``k > 0`` without changing the float network.

    ``sign(k W) = sign(W)`` and ``alpha = mean|k W| = k * alpha``, so each
    binary convolution outputs ``k * alpha * s``. Compensation per network:

    * post-norm (ReActNet-18, Bi-RealNet-18, ReActNet-A; ``norm="bn"``): the BN
      that consumes each convolution's output (:func:`conv_bn_pairs`) gets
      ``mu * k``, ``var * k^2``, ``eps * k^2`` and normalizes the output back;
      the binary 1x1 shortcut convolution likewise. Nothing else changes (the
      BN's output, the residual stream, RSign shifts and RPReLU are as before).
    * XNORNet-18 (pre-norm, ``norm="bn"``): the residual stream carries ``k``
      (:func:`_rescale_residual_stream`).
    * ``norm="none"`` / ``"bnfree"``: refused (no BN to absorb ``k``; bnfree
      binarizes standardized weights, whose scale does not depend on ``k``).

    Voters already on the model keep their calibrated meaning (a matched
    magnitude or threshold-voter levels scale by k). The ``"weights"`` shortcut
    (real activations, :class:`mvlib.models.resnet18.BinaryWeightConv2d`) is no
    binary convolution here and is left as it is. For powers of two the logits
    are bit-identical (every float multiply by ``k`` is exact); other ``k``
    change them by rounding only. Training after a rescale is not equivalent
    (the clipped STE's window ``|W| <= 1`` does not scale).

    Returns the rescaled model: ``model`` itself when ``inplace``, else a deep copy.
    """
    k = float(k)
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"k must be a positive finite number, got {k!r}")
    out = model if inplace else copy.deepcopy(model)
    pairs = conv_bn_pairs(out)
    convs = binary_convs(out)
    unpaired = [n for n, _ in convs if n not in pairs]
    if not unpaired:
        for n, conv in convs:
            _scale_conv(conv, k)
            _scale_bn(pairs[n][1], k, 1.0)
    elif getattr(out, "style", None) == "xnornet" and getattr(out, "norm_kind", None) == "bn":
        _rescale_residual_stream(out, k)
    else:
        raise ValueError(f"binary convolutions {unpaired} have no BatchNorm directly after them and the "
                         "model is no pre-norm XNORNet-18: nothing absorbs the weight scale")
    return out


@torch.no_grad()
def compare_logits(model_a: nn.Module, model_b: nn.Module, loader, batches: int = 0) -> dict[str, Any]:
    """Both models in eval mode on the first ``batches`` batches (all when 0).

    Returns the image count, the largest absolute logit difference and the
    number of differing top-1 predictions (the rescaling check of experiment 1).
    """
    was = model_a.training, model_b.training
    model_a.eval(), model_b.eval()
    dev = next(model_a.parameters()).device
    n = differ = 0
    max_diff = 0.0
    try:
        for i, (x, _) in enumerate(loader):
            if batches and i >= batches:
                break
            la, lb = model_a(x.to(dev)), model_b(x.to(dev))
            n += x.shape[0]
            differ += int((la.argmax(1) != lb.argmax(1)).sum())
            max_diff = max(max_diff, float((la - lb).abs().max()))
    finally:
        model_a.train(was[0])
        model_b.train(was[1])
    return {"images": n, "max_abs_logit_diff": max_diff, "differing_predictions": differ}


# --------------------------------------------------------------------------
# BN folded into the voter's threshold
# --------------------------------------------------------------------------
def bn_sign_reference(bn: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``sign(BN(y))`` (ties +1) of BN in eval mode, ``y`` [B, C, ...]: the definition the fold reproduces.

    ``BN(y) = (y - mu) * (gamma / sqrt(var + eps)) + beta``, evaluated in
    float64 on the float32 ``y`` and statistics, ``y - mu`` first: that
    difference of two float32 numbers is exact in float64 (unless their
    exponents differ by more than 29), so an exact tie
    ``y == mu`` (with ``beta = 0``) gives ``BN = 0`` and votes +1. PyTorch's
    own BN computes ``y * a + (beta - mu * a)`` instead and returns a rounding
    residue of either sign there; elsewhere the two can differ only where
    ``BN(y)`` is within a float32 rounding error of 0 (:func:`layer_sign_flips`
    counts it on real activations: ``flip_threshold``).
    """
    d = torch.float64
    view = (1, -1) + (1,) * (y.dim() - 2)
    gamma = bn.weight.to(d) if bn.weight is not None else torch.ones_like(bn.running_var, dtype=d)
    beta = bn.bias.to(d) if bn.bias is not None else torch.zeros_like(bn.running_var, dtype=d)
    gain = gamma / (bn.running_var.to(d) + bn.eps).sqrt()
    return sign_pm1((y.to(d) - bn.running_mean.to(d).view(view)) * gain.view(view) + beta.view(view))


@torch.no_grad()
def fold_bn_threshold(conv: BinaryConv2d, bn: nn.Module) -> dict[str, torch.Tensor]:
    """Per output channel c, the polarity and integer threshold with ``sign(BN(alpha * s)) = sign(p_c * s - theta_c)``.

    ``s`` is any integer the layer can produce, ``|s| <= N = C_in * k * k``
    (borders, with padded taps left out, stay in that range); ``alpha * s`` is
    the layer's own float32 product and the sign is :func:`bn_sign_reference`.
    In exact arithmetic ``BN(alpha s) = gamma (alpha s - mu) / sqrt(var + eps) + beta``
    is affine in s, so the vote is a step: for ``gamma > 0`` it is +1 from
    ``s >= t = (mu - beta sqrt(var + eps) / gamma) / alpha`` on (``p = +1``,
    ``theta = ceil(t)``), for ``gamma < 0`` up to ``s <= t`` (``p = -1``,
    ``theta = -floor(t)``), an exact tie ``BN = 0`` voting +1. Rather than
    round ``t``, the step is read off the sign table of all ``2N + 1`` integers
    (float rounding is monotone, so the table is a step; checked), which makes
    the fold exact on every integer, ties included. A channel whose table is
    constant (``gamma = 0``, ``alpha = 0`` or a threshold beyond ``±N``) gets
    ``p = +1`` and ``theta = -N`` (always +1) or ``N + 1`` (always -1).

    Returns ``polarity``, ``theta`` (float tensors holding integers), ``boundary``
    (the folded decision in the MV's orientation: ``s >= boundary_c``, where
    the MV's is ``s >= 0``; for ``p = -1`` the vote is its negation),
    ``constant`` (bool) and ``fanin`` (N).
    """
    n = conv.in_channels * conv.kernel_size * conv.kernel_size
    _, alpha = conv.binary_weight()
    s = torch.arange(-n, n + 1, dtype=alpha.dtype, device=alpha.device)
    y = s.view(-1, 1, 1, 1) * alpha.view(1, -1, 1, 1)  # [2N+1, C, 1, 1]
    up = bn_sign_reference(bn, y).view(2 * n + 1, -1) > 0
    count = up.sum(0)  # integers s with vote +1, per channel
    idx = torch.arange(2 * n + 1, device=alpha.device).view(-1, 1)
    increasing = (up == (idx >= 2 * n + 1 - count)).all(0)  # +1 exactly on the top `count` integers
    decreasing = (up == (idx < count)).all(0)
    constant = (count == 0) | (count == 2 * n + 1)
    if not bool((increasing | decreasing).all()):
        bad = (~(increasing | decreasing)).nonzero().flatten().tolist()
        raise RuntimeError(f"sign(BN(alpha * s)) is not a step in s for channels {bad}")
    polarity = torch.where(increasing, 1.0, -1.0).to(alpha.dtype)
    first_up = (-n + 2 * n + 1 - count).to(alpha.dtype)  # increasing: +1 from this s on (N + 1: never)
    last_up = (-n + count - 1).to(alpha.dtype)  # decreasing: +1 up to this s
    theta = torch.where(increasing, first_up, -last_up)
    boundary = torch.where(increasing, first_up, last_up + 1)
    return {"polarity": polarity, "theta": theta, "boundary": boundary, "constant": constant, "fanin": n}


def _nearest_levels(fold: dict[str, torch.Tensor], alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha * s`` at the integers nearest the threshold on the +1 and the -1 side (one side if constant)."""
    n, p, b = fold["fanin"], fold["polarity"], fold["boundary"]
    s_hi, s_lo = b, b - 1  # first s with s >= boundary, last s below it
    s_pos = torch.where(p > 0, s_hi, s_lo)
    s_neg = torch.where(p > 0, s_lo, s_hi)
    s_pos = torch.where((s_pos < -n) | (s_pos > n), s_neg, s_pos)  # no +1 side: never used, any valid value
    s_neg = torch.where((s_neg < -n) | (s_neg > n), s_pos, s_neg)
    return s_pos * alpha, s_neg * alpha


def _bn_eval(bn: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The BN's own eval-mode float32 map (as in the network)."""
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@torch.no_grad()
def calibrate_threshold_voters(model: nn.Module, loader, batches: int = 4,
                               levels: str = "conditional") -> dict[str, dict[str, Any]]:
    """Fold each :class:`mvlib.voters.ThresholdVoter`'s BN into its threshold and set its two output levels.

    The vote is :func:`fold_bn_threshold`'s. The output (in the convolution's
    space, the BN after it unchanged) is ``level_pos_c`` / ``level_neg_c`` by
    vote, measured like the matched scale on the *float* network (every voter
    off) over the first ``batches`` batches of ``loader``:

    ``conditional`` (default)
        the mean of the float output ``alpha * s`` over the outputs with that
        vote: the two values closest in mean square to what the BN was fitted
        to, given the vote. Invariant under :func:`rescale_binary_weights`.
    ``symmetric``
        the values the BN maps to ``±M_c``, ``M_c = mean |BN(alpha * s)|``:
        the BN's output is the vote times one per-channel magnitude.

    A level whose BN output (float32, as in the network) does not carry its
    vote's sign (a side with no calibration output, a constant channel) is
    replaced by ``alpha * s`` at the nearest integer on that side of the
    threshold. A layer with a threshold voter but no BN right after it is an error.
    Returns per layer: ``bn``, ``fanin``, ``constant_channels``,
    ``inverted_channels`` (``p = -1``), ``fallback_levels``.
    """
    if levels not in THRESHOLD_LEVELS:
        raise ValueError(f"unknown levels {levels!r}; choose one of {THRESHOLD_LEVELS}")
    targets = [(n, m) for n, m in binary_convs(model) if isinstance(m.voter, ThresholdVoter)]
    if not targets:
        return {}
    pairs = conv_bn_pairs(model)
    missing = [n for n, _ in targets if n not in pairs]
    if missing:
        raise ValueError(f"threshold voters on {missing}: no BatchNorm directly after these convolutions "
                         "(the fold needs conv -> BN; XNORNet-18's and BN-less models' layers have none)")
    folds = {n: fold_bn_threshold(m, pairs[n][1]) for n, m in targets}
    acc: dict[str, dict[str, torch.Tensor]] = {n: {} for n, _ in targets}

    def add(d, key, val):
        d[key] = d.get(key, 0) + val.double()

    def hook(name):
        def fn(conv, inp, out):
            f, bn, a = folds[name], pairs[name][1], acc[name]
            up = threshold_vote(conv.integer_sums(inp[0]), f["polarity"], f["theta"]) > 0
            if levels == "conditional":
                add(a, "sum_pos", torch.where(up, out, 0).sum((0, 2, 3)))
                add(a, "sum_neg", torch.where(up, 0, out).sum((0, 2, 3)))
                add(a, "n_pos", up.sum((0, 2, 3)))
                add(a, "n_neg", (~up).sum((0, 2, 3)))
            else:
                add(a, "abs_bn", _bn_eval(bn, out).abs().sum((0, 2, 3)))
                add(a, "n", torch.tensor(out.shape[0] * out.shape[2] * out.shape[3]))
        return fn

    with popcount_network(model):
        _hooked_eval_passes(model, [(m, hook(n)) for n, m in targets], loader, batches)
    report = {}
    for n, m in targets:
        f, (bn_name, bn), a = folds[n], pairs[n], acc[n]
        _, alpha = m.binary_weight()
        near_pos, near_neg = _nearest_levels(f, alpha)
        if levels == "conditional":
            pos = (a["sum_pos"] / a["n_pos"].clamp_min(1)).to(alpha.dtype)
            neg = (a["sum_neg"] / a["n_neg"].clamp_min(1)).to(alpha.dtype)
        else:
            mag = (a["abs_bn"] / a["n"]).view(-1, 1)
            d = torch.float64
            gamma = bn.weight.to(d) if bn.weight is not None else torch.ones_like(mag.flatten())
            beta = bn.bias.to(d) if bn.bias is not None else torch.zeros_like(mag.flatten())
            sd = (bn.running_var.to(d) + bn.eps).sqrt()
            inv = torch.where(gamma != 0, sd / gamma, torch.zeros_like(gamma))  # gamma = 0: constant channel
            pos = (bn.running_mean.to(d) + (mag.flatten() - beta) * inv).to(alpha.dtype)
            neg = (bn.running_mean.to(d) + (-mag.flatten() - beta) * inv).to(alpha.dtype)
        ok_pos = _bn_eval(bn, pos.view(1, -1, 1, 1)).flatten() >= 0
        ok_neg = _bn_eval(bn, neg.view(1, -1, 1, 1)).flatten() < 0
        pos = torch.where(ok_pos, pos, near_pos)
        neg = torch.where(ok_neg, neg, near_neg)
        v = m.voter
        v.polarity, v.theta, v.level_pos, v.level_neg = f["polarity"], f["theta"], pos, neg
        report[n] = {"bn": bn_name, "fanin": f["fanin"], "constant_channels": int(f["constant"].sum()),
                     "inverted_channels": int((f["polarity"] < 0).sum()),
                     "fallback_levels": int((~ok_pos).sum() + (~ok_neg).sum())}
    return report


# --------------------------------------------------------------------------
# Where it breaks: sign flips after the BN, per layer and convention
# --------------------------------------------------------------------------
@torch.no_grad()
def layer_sign_flips(model: nn.Module, loader, batches: int = 2, layers: LayerSpec = None) -> list[dict[str, Any]]:
    """Per binary convolution, on the popcount network's own activations: how often the BN's output sign flips.

    Every voter is off during the passes (each layer sees the input the trained
    network gives it, as in :func:`mvlib.voter_ops.calibrate_matched_scale`),
    so the numbers measure each layer in isolation. For a layer with a BN ``B``
    directly after it (:func:`conv_bn_pairs`), ``v = sign(s)`` the MV's vote and
    ``r = sign(B(alpha * s))`` (float32, the network's own BN), over all outputs
    (images x channels x positions) of the first ``batches`` batches:

    * ``flip_none``, ``flip_alpha``, ``flip_matched``: fraction with
      ``sign(B(v * m)) != r``, ``m = 1``, ``alpha_c`` or the matched magnitude
      ``mean|alpha_c s|`` (:func:`mvlib.voter_ops.calibrate_matched_scale` on the same batches);
    * ``rel_err_none``, ``rel_err_alpha``, ``rel_err_matched``: the BN output's
      error, ``||B(v * m) - B(alpha * s)|| / ||B(alpha * s)||`` (sums over all
      outputs): the sign can survive while the magnitude the residual sum and
      the next sign see does not;
    * ``flip_threshold``: the same for the BN-folded threshold vote (0 up to
      the float32/float64 boundary cases of :func:`bn_sign_reference`);
    * ``vote_change``: fraction where the MV's decision ``s >= 0`` differs from the
      folded one ``s >= boundary_c`` (:func:`fold_bn_threshold`): the deviation
      from the MV's fixed threshold, orientation aside;
    * ``boundary_rms``: ``sqrt(mean_c boundary_c^2) / sqrt(N)``, the folded
      threshold's distance from 0 in units of the std of ``s`` for random ±1 operands;
    * ``inverted_channels``, ``constant_channels``: fractions of channels with
      ``p = -1`` (negative BN gain: the MV's vote enters inverted) and with a constant vote.

    Layers without such a BN get a row with ``bn = None`` and ``None`` rates.
    """
    chosen = select_layers(model, layers)
    pairs = conv_bn_pairs(model)
    paired = [(n, m) for n, m in chosen if n in pairs]
    with voters_kept(model):  # the matched magnitudes, by the library's own calibration on the same batches
        matched = {}
        if paired:  # (a model without BN has no pair: an empty selection is an error)
            set_voter(model, {"name": "mv", "output_scale": "matched"}, [n for n, _ in paired])
            matched = calibrate_matched_scale(model, loader, batches)
    folds = {n: fold_bn_threshold(m, pairs[n][1]) for n, m in paired}
    keys = [f"flip_{s}" for s in OUTPUT_SCALES] + ["flip_threshold", "vote_change"]
    errs = [f"rel_err_{s}" for s in OUTPUT_SCALES]
    counts = {n: dict.fromkeys(keys + errs + ["n", "ref_sq"], 0) for n, _ in paired}

    def hook(name):
        def fn(conv, inp, out):
            bn, f, c = pairs[name][1], folds[name], counts[name]
            _, alpha = conv.binary_weight()
            s = conv.integer_sums(inp[0])
            z = _bn_eval(bn, out)
            ref = sign_pm1(z)
            v = sign_pm1(s)
            c["ref_sq"] += float(z.double().pow(2).sum())
            for scale, mag in (("none", torch.ones_like(alpha)), ("alpha", alpha), ("matched", matched[name])):
                zv = _bn_eval(bn, v * mag.view(1, -1, 1, 1))
                c[f"flip_{scale}"] += int((sign_pm1(zv) != ref).sum())
                c[f"rel_err_{scale}"] += float((zv - z).double().pow(2).sum())
            c["flip_threshold"] += int((threshold_vote(s, f["polarity"], f["theta"]) != ref).sum())
            c["vote_change"] += int(((s >= 0) != (s >= f["boundary"].view(1, -1, 1, 1))).sum())
            c["n"] += s.numel()
        return fn

    with popcount_network(model):
        _hooked_eval_passes(model, [(m, hook(n)) for n, m in paired], loader, batches)
    rows = []
    for n, m in chosen:
        row: dict[str, Any] = {"layer": n, "kernel_size": m.kernel_size, "fanin": m.in_channels * m.kernel_size ** 2,
                               "out_channels": m.out_channels, "bn": pairs[n][0] if n in pairs else None}
        if n not in pairs:
            row.update(dict.fromkeys(keys + errs + ["boundary_rms", "inverted_channels", "constant_channels"]))
            rows.append(row)
            continue
        c, f = counts[n], folds[n]
        row.update({k: c[k] / c["n"] if c["n"] else None for k in keys})
        row.update({k: math.sqrt(c[k] / c["ref_sq"]) if c["ref_sq"] else None for k in errs})
        row["boundary_rms"] = float(f["boundary"].pow(2).mean().sqrt() / math.sqrt(f["fanin"]))
        row["inverted_channels"] = float((f["polarity"] < 0).float().mean())
        row["constant_channels"] = float(f["constant"].float().mean())
        rows.append(row)
    return rows
