"""Voter analysis (notebook 08): weight rescaling, the BN-folded threshold voter, sign flips, the binary downsample.

Random models at width 8 with trained-like weights (both signs), RSign shifts,
BN gains of both signs and BN running statistics taken from a few
training-mode passes (so the BN is fitted to ``alpha * s`` of this network).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mvlib.binarizers import sign_pm1
from mvlib.layers import BinaryConv2d, binary_convs
from mvlib.models import build_model
from mvlib.models.resnet18 import BinaryWeightConv2d
from mvlib.voter_analysis import (bn_sign_reference, calibrate_threshold_voters, compare_logits, conv_bn_pairs,
                                  fold_bn_threshold, layer_sign_flips, rescale_binary_weights)
from mvlib.voter_ops import calibrate_matched_scale, recalibrate_bn, select_layers, set_voter, voter_from_spec
from mvlib.voters import MajorityVoter, ThresholdVoter, threshold_vote

POW2 = [1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0]


def _images(n=8, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _loader(batches=2, n=8, seed=10):
    return [(_images(n, seed + i), torch.zeros(n, dtype=torch.long)) for i in range(batches)]


def _trained_like(name, width=8, seed=0, neg_gamma=0.25, **options):
    torch.manual_seed(seed)
    model = build_model(name, width=width, **options)
    with torch.no_grad():
        for _, conv in binary_convs(model):
            conv.weight.normal_(0, 0.05)
            if conv.act.shift is not None:
                conv.act.shift.uniform_(-0.2, 0.2)
        for m in model.modules():
            if isinstance(m, BinaryWeightConv2d):
                m.weight.normal_(0, 0.05)
            if isinstance(m, nn.BatchNorm2d):
                sign = torch.where(torch.rand(m.num_features) < neg_gamma, -1.0, 1.0)
                m.weight.copy_(sign * torch.empty(m.num_features).uniform_(0.5, 1.5))
                m.bias.normal_(0, 0.3)
                m.momentum = None  # running stats = the average over the passes below
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(_images(16, 100 + i))
    return model.eval()


# --------------------------------------------------------------------------
# Rescaling invariance
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
@pytest.mark.parametrize("binary_downsample", [False, True])
def test_rescale_leaves_float_logits_unchanged(name, binary_downsample):
    model = _trained_like(name, binary_downsample=binary_downsample)
    x = _images(8)
    with torch.no_grad():
        ref = model(x)
        for k in POW2:
            scaled = rescale_binary_weights(model, k)
            conv = binary_convs(scaled)[3][1]
            assert torch.equal(conv.weight, binary_convs(model)[3][1].weight * k)
            # powers of two: every multiply by k is exact, so the logits are bit-identical
            assert torch.equal(scaled(x), ref), k
        odd = rescale_binary_weights(model, 3.0)  # not a power of two: equal up to rounding
        assert torch.allclose(odd(x), ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(odd(x).argmax(1), ref.argmax(1))
        assert torch.equal(model(x), ref)  # a copy was rescaled, not the model


@pytest.mark.parametrize("name", ["reactnet18", "xnornet18"])
def test_rescale_with_the_official_weights_shortcut(name):
    # real activations, binary weights: no binary conv, untouched (post-norm) or carried by the stream (XNORNet)
    model = _trained_like(name, binary_downsample="weights")
    x = _images(8)
    with torch.no_grad():
        ref = model(x)
        for k in (1 / 8, 8.0):
            assert torch.equal(rescale_binary_weights(model, k)(x), ref), k


def test_rescale_needs_eps_scaled():
    # the BN divides by sqrt(var + eps): without eps * k^2 a channel of small variance moves
    model = _trained_like("reactnet18")
    scaled = rescale_binary_weights(model, 1 / 8)
    with torch.no_grad():
        for m in scaled.modules():
            if isinstance(m, nn.BatchNorm2d) and m.eps != 1e-5:
                m.eps = 1e-5
        x = _images(8)
        assert not torch.equal(scaled(x), model(x))


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
def test_rescale_changes_naive_voter_only_without_output_scale(name):
    x = _images(8)
    for scale in ("none", "alpha", "matched"):
        model = _trained_like(name)
        set_voter(model, {"name": "mv", "output_scale": scale})
        if scale == "matched":
            calibrate_matched_scale(model, _loader(), batches=2)
        with torch.no_grad():
            ref = model(x)
            for k in (1 / 8, 8.0):
                got = rescale_binary_weights(model, k)(x)
                if scale == "none":  # a bare ±1 into a BN fitted to k * alpha * s: the point of experiment 1
                    assert (got - ref).abs().max() > 1e-2, (scale, k)
                else:  # alpha * v and the matched magnitude carry k; the BN absorbs it
                    assert torch.equal(got, ref), (scale, k)


def test_rescaled_matched_scale_equals_recalibration():
    model = _trained_like("birealnet18")
    set_voter(model, {"name": "mv", "output_scale": "matched"})
    calibrate_matched_scale(model, _loader(), batches=2)
    scaled = rescale_binary_weights(model, 4.0)
    carried = {n: m.voter.matched_scale.clone() for n, m in binary_convs(scaled)}
    fresh = calibrate_matched_scale(scaled, _loader(), batches=2)
    for n, s in fresh.items():
        assert torch.allclose(carried[n], s, rtol=1e-5)


@pytest.mark.parametrize("norm", ["none", "bnfree"])
def test_rescale_refuses_models_without_bn_after_the_conv(norm):
    model = build_model("reactnet18", width=8, norm=norm)
    with pytest.raises(ValueError):
        rescale_binary_weights(model, 2.0)
    with pytest.raises(ValueError):
        rescale_binary_weights(_trained_like("reactnet18"), 0.0)


def test_conv_bn_pairs_by_architecture():
    post = conv_bn_pairs(_trained_like("reactnet18", binary_downsample=True))
    assert post["blocks.0.conv"][0] == "blocks.0.norm"
    assert post["blocks.4.shortcut.body.1"][0] == "blocks.4.shortcut.body.2"
    assert len(post) == 19
    pre = conv_bn_pairs(_trained_like("xnornet18", binary_downsample=True))
    assert set(pre) == {"blocks.4.shortcut.body.1", "blocks.8.shortcut.body.1", "blocks.12.shortcut.body.1"}


# --------------------------------------------------------------------------
# BN folded into the threshold
# --------------------------------------------------------------------------
def _conv_bn_pair(cin=4, cout=8, seed=3):
    """One binary 3x3 conv (N = 36, ties possible) and a BN with every kind of channel."""
    g = torch.Generator().manual_seed(seed)
    conv = BinaryConv2d(cin, cout, 3, 1, 1, "approxsign", True)
    bn = nn.BatchNorm2d(cout).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
        conv.weight[7].zero_()  # alpha = 0: alpha * s = 0 for every s, a constant vote
        _, alpha = conv.binary_weight()
        bn.running_mean.copy_(torch.randn(cout, generator=g) * 0.3)
        bn.running_var.uniform_(0.2, 2.0, generator=g)
        bn.weight.copy_(torch.tensor([1.0, -0.7, 0.5, -1.3, 0.0, 0.8, 2.0, 1.0]))
        bn.bias.copy_(torch.randn(cout, generator=g) * 0.2)
        # channels 0 and 1: an exact tie at s = 3 (BN(alpha * 3) == 0 exactly), gains of both signs
        for c in (0, 1):
            bn.running_mean[c] = alpha[c] * 3.0
            bn.bias[c] = 0.0
        bn.running_mean[5] = alpha[5] * 100.0  # threshold beyond N = 36: always -1
    return conv, bn


def test_folded_threshold_equals_bn_sign_on_every_integer():
    conv, bn = _conv_bn_pair()
    fold = fold_bn_threshold(conv, bn)
    n = fold["fanin"]
    assert n == 36
    _, alpha = conv.binary_weight()
    s = torch.arange(-n, n + 1, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 8, 1, 1)
    ref = bn_sign_reference(bn, s * alpha.view(1, -1, 1, 1)).float()
    got = threshold_vote(s, fold["polarity"], fold["theta"])
    assert torch.equal(got, ref)
    # the exact ties vote +1: gain > 0 is +1 from s = 3 on, gain < 0 up to s = 3
    assert fold["polarity"][0] == 1 and fold["theta"][0] == 3
    assert fold["polarity"][1] == -1 and fold["theta"][1] == -3 and fold["boundary"][1] == 4
    assert bool(fold["constant"][4]) and bool(fold["constant"][5]) and bool(fold["constant"][7])
    assert fold["theta"][5] == n + 1  # never +1
    # the network's float32 BN agrees on the whole table except the exact ties, where it
    # computes y * a + (beta - mu * a) and returns a rounding residue of either sign
    y = s * alpha.view(1, -1, 1, 1)
    tie = (y == bn.running_mean.view(1, -1, 1, 1)) & (bn.bias.view(1, -1, 1, 1) == 0)
    assert int(tie.sum()) == 2
    assert torch.equal(sign_pm1(bn(y))[~tie], ref[~tie])


def test_threshold_vote_is_mv_for_identity_bn():
    conv, _ = _conv_bn_pair()
    bn = nn.BatchNorm2d(8).eval()  # mu 0, var 1, gain 1, shift 0: sign(BN(alpha s)) = sign(s) (alpha > 0)
    fold = fold_bn_threshold(conv, bn)
    live = torch.arange(8) != 7  # alpha = 0 channel is constant +1, like the MV's tie rule
    assert torch.equal(fold["theta"][live], torch.zeros(7)) and bool((fold["polarity"] == 1).all())


def test_threshold_voter_output_carries_bn_sign_in_the_network():
    model = _trained_like("reactnet18", binary_downsample=True, neg_gamma=0.4)
    set_voter(model, "threshold", "all")
    assert all(isinstance(m.voter, ThresholdVoter) for _, m in binary_convs(model))
    report = calibrate_threshold_voters(model, _loader(), batches=2)
    assert len(report) == 19 and sum(r["inverted_channels"] for r in report.values()) > 0
    pairs = conv_bn_pairs(model)
    checked = []

    def hook(name):
        def fn(conv, inp, out):
            _, alpha = conv.binary_weight()
            y = conv.integer_sums(inp[0]) * alpha.view(1, -1, 1, 1)  # the popcount output on this input
            bn = pairs[name][1]
            assert torch.equal(sign_pm1(bn(out)), sign_pm1(bn(y))), name
            checked.append(name)
        return fn

    hs = [m.register_forward_hook(hook(n)) for n, m in binary_convs(model)]
    with torch.no_grad():
        model(_images(8, 50))
    for h in hs:
        h.remove()
    assert len(checked) == 19
    # conditional levels: the mean popcount output on each side of the threshold
    conv = dict(binary_convs(model))["blocks.2.conv"]
    set_voter(model, None)
    outs = []
    h = conv.register_forward_hook(lambda m, i, o: outs.append((o, m.integer_sums(i[0]))))
    with torch.no_grad():
        for x, _ in _loader():
            model(x)
    h.remove()
    set_voter(model, "threshold", ["blocks.2.conv"])
    calibrate_threshold_voters(model, _loader(), batches=2)
    v = conv.voter
    y = torch.cat([o for o, _ in outs])
    up = torch.cat([threshold_vote(s, v.polarity, v.theta) for _, s in outs]) > 0
    both = [c for c in range(y.shape[1]) if bool(up[:, c].any()) and bool((~up[:, c]).any())]
    assert both
    for c in both:
        assert torch.allclose(v.level_pos[c], y[:, c][up[:, c]].mean(), rtol=1e-5)
        assert torch.allclose(v.level_neg[c], y[:, c][~up[:, c]].mean(), rtol=1e-5)


def test_threshold_voter_symmetric_levels_and_rescale_invariance():
    model = _trained_like("birealnet18", neg_gamma=0.4)
    set_voter(model, "threshold")
    calibrate_threshold_voters(model, _loader(), batches=2, levels="symmetric")
    conv, bn = model.blocks[5].conv, model.blocks[5].norm
    z_pos, z_neg = bn(conv.voter.level_pos.view(1, -1, 1, 1)), bn(conv.voter.level_neg.view(1, -1, 1, 1))
    assert torch.allclose(z_pos, -z_neg, atol=1e-4) and bool((z_pos > 0).all())
    # convention-free: rescaling the weights and recalibrating gives the same network
    x = _images(8)
    for levels in ("conditional", "symmetric"):
        calibrate_threshold_voters(model, _loader(), batches=2, levels=levels)
        scaled = rescale_binary_weights(model, 8.0)
        calibrate_threshold_voters(scaled, _loader(), batches=2, levels=levels)
        with torch.no_grad():
            assert torch.allclose(scaled(x), model(x), atol=1e-4)


def test_threshold_voter_refusals():
    model = _trained_like("xnornet18")
    set_voter(model, "threshold")
    with pytest.raises(ValueError, match="no BatchNorm directly after"):
        calibrate_threshold_voters(model, _loader(), batches=1)
    model = _trained_like("reactnet18")
    set_voter(model, "threshold")
    with pytest.raises(RuntimeError, match="calibration"), torch.no_grad():
        model(_images(2))
    calibrate_threshold_voters(model, _loader(), batches=1)
    with pytest.raises(RuntimeError, match="no gradient"):
        model(_images(2)).sum().backward()
    assert isinstance(voter_from_spec({"name": "threshold"}), ThresholdVoter)


# --------------------------------------------------------------------------
# Sign flips per layer
# --------------------------------------------------------------------------
def test_layer_sign_flips_rows_and_invariance():
    model = _trained_like("reactnet18", binary_downsample=True, neg_gamma=0.4)
    rows = layer_sign_flips(model, _loader(), batches=2, layers="all")
    assert len(rows) == 19 and all(r["bn"] is not None for r in rows)
    for r in rows:
        assert r["flip_threshold"] == 0.0
        assert all(0.0 <= r[k] <= 1.0 for k in ("flip_none", "flip_alpha", "flip_matched", "vote_change"))
    assert max(r["flip_none"] for r in rows) > 0.0 and all(r["rel_err_none"] > 0 for r in rows)
    # k changes only the bare ±1 convention's flips
    scaled = layer_sign_flips(rescale_binary_weights(model, 8.0), _loader(), batches=2, layers="all")
    for a, b in zip(rows, scaled):
        for key in ("flip_alpha", "flip_matched", "flip_threshold", "vote_change"):
            assert a[key] == b[key], (a["layer"], key)
        for key in ("rel_err_alpha", "rel_err_matched"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["layer"], key)
    assert any(a["flip_none"] != b["flip_none"] for a, b in zip(rows, scaled))


def test_layer_sign_flips_when_bn_keeps_or_inverts_the_vote():
    model = _trained_like("birealnet18")

    def set_bn(gain):  # BN(y) = gain * y: mu 0, var + eps = 1, beta 0
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.zero_(), m.running_var.fill_(1.0 - m.eps), m.weight.fill_(gain), m.bias.zero_()

    set_bn(0.5)  # sign(BN(alpha s)) = sign(s), ties +1: the MV's vote under every convention
    for r in layer_sign_flips(model, _loader(), batches=1):
        for key in ("flip_none", "flip_alpha", "flip_matched", "flip_threshold", "vote_change", "inverted_channels"):
            assert r[key] == 0.0, (r["layer"], key)
        # BN = y / 2 is linear: the error is ||v m - alpha s|| / ||alpha s|| = ||m - |alpha s| ||, per
        # channel least at m = mean|alpha s|, the matched magnitude (measured on these same batches)
        assert r["rel_err_matched"] < r["rel_err_alpha"]
    set_bn(-0.5)  # inverted: sign(BN(alpha s)) = -sign(s) except at s = 0, where BN = 0 votes +1
    rows = layer_sign_flips(model, _loader(), batches=1)
    for r in rows:  # so exactly the ties flip (the MV sends +1 there, which the BN inverts) ...
        assert r["flip_none"] == r["flip_alpha"] == r["flip_matched"] == r["vote_change"]  # ... = the tie rate
        assert r["flip_threshold"] == 0.0 and r["inverted_channels"] == 1.0
    assert rows[0]["flip_none"] > 0  # N = 72 is even: ties occur
    xrows = layer_sign_flips(_trained_like("xnornet18"), _loader(), batches=1)
    assert all(r["bn"] is None and r["flip_none"] is None for r in xrows)


# --------------------------------------------------------------------------
# Binary downsample
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
def test_binary_downsample_layers_and_default_selection(name):
    plain = build_model(name, width=8)
    model = build_model(name, width=8, binary_downsample=True)
    assert all(type(m.shortcut.body[1]) is nn.Conv2d for m in plain.blocks if m.shortcut.body is not None)
    sc = [(n, m) for n, m in binary_convs(model) if m.kernel_size == 1]
    assert [n for n, _ in sc] == ["blocks.4.shortcut.body.1", "blocks.8.shortcut.body.1", "blocks.12.shortcut.body.1"]
    blk = model.blocks[4]
    for _, m in sc:  # the block's own binarizer conventions
        assert m.act.binarizer == blk.conv.act.binarizer
        assert (m.act.shift is None) == (blk.conv.act.shift is None)
    assert [n for n, _ in select_layers(model)] == [n for n, _ in select_layers(plain)]  # default: the 3x3 ones
    assert len(select_layers(model, "3x3")) == 16 and len(select_layers(model, "1x1")) == 3
    assert len(select_layers(model, "all")) == 19 and select_layers(model, "blocks.4.shortcut.body.1")[0][1] is sc[0][1]
    set_voter(model, "mv")
    assert all(m.voter is None for _, m in sc)
    set_voter(model, "mv", "all")
    assert all(isinstance(m.voter, MajorityVoter) for _, m in sc)
    set_voter(model, None)
    assert all(m.voter is None for _, m in binary_convs(model))
    with pytest.raises(ValueError):
        build_model(name, width=8, binary_downsample="popcount")


@pytest.mark.parametrize("name", ["reactnet18", "xnornet18"])
def test_binary_downsample_matches_integer_reference(name):
    model = _trained_like(name, binary_downsample=True)
    conv = model.blocks[4].shortcut.body[1]  # 8 -> 16 channels: N = 8, even, so ties occur
    seen = {}
    h = conv.register_forward_hook(lambda m, i, o: seen.update(x=i[0], out=o))
    with torch.no_grad():
        model(_images(8))
        x = seen["x"]
        shift = 0.0 if conv.act.shift is None else conv.act.shift.view(1, -1, 1, 1)
        a = torch.where(x + shift >= 0, 1, -1).to(torch.int64)  # sign(0) = +1
        w = torch.where(conv.weight >= 0, 1, -1).to(torch.int64)
        s = (a[:, None] * w[None, :, :, 0, 0, None, None]).sum(2)  # exact integer 1x1 dot products
        alpha = conv.weight.abs().mean((1, 2, 3))
        assert torch.equal(seen["out"], s.float() * alpha.view(1, -1, 1, 1))  # y = alpha * s, s exact
        ties = (s == 0)
        assert bool(ties.any())
        set_voter(model, "mv", ["blocks.4.shortcut.body.1"])
        model(_images(8))
        assert torch.equal(seen["out"], torch.where(s >= 0, 1.0, -1.0))  # MV, ties +1
    h.remove()


def test_weights_downsample_is_the_official_convention():
    model = _trained_like("reactnet18", binary_downsample="weights")
    conv = model.blocks[8].shortcut.body[1]
    assert isinstance(conv, BinaryWeightConv2d) and len(binary_convs(model)) == 16
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        alpha = conv.weight.abs().mean((1, 2, 3), keepdim=True)
        assert torch.equal(conv(x), F.conv2d(x, alpha * sign_pm1(conv.weight)))  # real activations, alpha folded
    step1 = build_model("reactnet18", width=8, binary_downsample="weights", binary_weights=False)
    c1 = step1.blocks[8].shortcut.body[1]
    assert not c1.binary_weights
    with torch.no_grad():
        assert torch.equal(c1(x), F.conv2d(x, c1.weight))


@pytest.mark.parametrize("voter_layers", [None, "3x3", "all"])
def test_binary_downsample_bit_kernels_agree_or_refuse(voter_layers):
    convert = pytest.importorskip("cuda_numba").convert_model
    model = _trained_like("birealnet18", binary_downsample=True)
    if voter_layers is not None:
        set_voter(model, {"name": "mv", "output_scale": "alpha"}, voter_layers)
    try:
        bit = convert(model)
    except (TypeError, ValueError, NotImplementedError) as err:
        assert "shortcut" in str(err) or "1x1" in str(err) or "kernel" in str(err), err
        return
    x = _images(4)
    with torch.no_grad():
        assert torch.equal(bit(x), model(x))
    assert compare_logits(model, bit, _loader(1))["differing_predictions"] == 0


def test_recalibrated_voter_network_runs_with_binary_downsample():
    # the "+recal" row with the voter on 3x3 + 1x1: BN statistics move, parameters do not
    model = _trained_like("reactnet18", binary_downsample=True)
    before = {n: p.clone() for n, p in model.named_parameters()}
    set_voter(model, "mv", "all")
    recalibrate_bn(model, _loader(), batches=2)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.isfinite(model(_images(2))).all()
