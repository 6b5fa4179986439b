"""The deck's appendix, library part: BN / no BN / BN-Free models, AGC, ReActNet-A.

Fast CPU checks at small widths:

* ``none`` and ``bnfree`` models hold no normalization layer; ``none`` differs
  from ``bn`` only by the BN layers (and the real convolutions' biases);
* scaled weight standardization: per output channel i with fan-in N, the
  standardized weight ``W_hat_i = (W_i - mean) / ((std + eps) sqrt(N))``
  has mean 0 (|mean| < 1e-6 / sqrt(N)) and variance exactly
  ``(std / (std + eps))^2 / N`` (rtol 1e-4), which is ``1 / N`` within 1e-4
  for weights whose std is >> eps, and within 10 % for the binary
  convolutions' ``U(0, 1e-3)`` init; binary weights are ``sign(W_hat)`` with
  ``alpha = mean|W_hat|``, output ``gain * alpha * s``;
* NF-ResNets' beta schedule;
* AGC bounds every unit's gradient norm by ``clip * max(||W_i||, 1e-3)``,
  leaves units under the bound and the classifier bit-identical;
* every model x norm builds, trains one Adam step and evaluates on CIFAR-10
  and CIFAR-100 shaped input; ReActNet-A's parameter counts.

The w/o-BN networks' binary branches must carry signal:

* at init, on a random batch, every ``none`` and ``bnfree`` network of the four
  (and XNORNet-18 with BN, whose BN sits before the sign) has binary branches
  of the shortcut's order: the rms ratio branch / shortcut
  (:func:`mvlib.models.diagnostics.branch_ratios`; for ``bnfree`` the ratio
  before NF-ResNets' ``alpha_res = 0.2``) has a geometric mean over the blocks
  within **1/4 .. 4** and lies within **1/10 .. 10** in every block. ReActNet's
  ``U(0, 1e-3)`` init without BN fails this (ratio ~1e-2 in stage 1), which the
  test checks too, so the bound does discriminate;
* the ``fanin`` init is ``nn.Conv2d``'s ``U(-1/sqrt(N), 1/sqrt(N))`` and the
  default per norm; the ``bn`` models are unchanged (same random stream);
* AGC against the closed form of "BNN - BN = ?"'s ``agc.py``, unit by unit:
  ``g <- g * clip * max(||w||, 1e-3) / ||g||`` where ``||g|| / max(||w||, 1e-3) > clip``,
  units = output channels (whole tensor for <= 1-D parameters), classifier
  excluded (their ``train.py`` skips every parameter named ``fc``);
* the shortcut-only network and the diagnostics leave the model's buffers alone.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mvlib.agc import adaptive_grad_clip_, unitwise_norm
from mvlib.study.config import SCHEMA
from mvlib.layers import BinaryConv2d, binary_convs
from mvlib.models import MODELS, PAPER_WIDTHS, build_model, count_parameters, relative_width
from mvlib.models.norms import (NORMS, ScaledStdBinaryConv2d, ScaledStdConv2d, SignalPropagation,
                                normalization_layers, standardize_weight, variant_name)

ARCHS = ("reactnet18", "birealnet18", "xnornet18", "reactneta")
SMALL = {"reactnet18": 4, "birealnet18": 4, "xnornet18": 4, "reactneta": 2}
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is faster and does not fight other jobs for the 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(arch, norm, num_classes=10, **kw):
    torch.manual_seed(0)
    return build_model(arch, num_classes=num_classes, width=SMALL[arch], norm=norm, **kw)


# --------------------------------------------------------------------------
# no normalization layers
# --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_none_and_bnfree_hold_no_normalization_layer(arch):
    assert normalization_layers(small(arch, "bn"))  # the check does see BN
    for norm in ("none", "bnfree"):
        m = small(arch, norm)
        assert not [n for n, mod in m.named_modules() if isinstance(mod, NORM_TYPES)], (arch, norm)
        assert normalization_layers(m) == []


@pytest.mark.parametrize("arch", ARCHS)
def test_none_removes_bn_and_changes_nothing_else(arch):
    def layout(m):
        return [(n, nn.Identity if isinstance(mod, nn.BatchNorm2d) else type(mod)) for n, mod in m.named_modules()]

    bn, none = small(arch, "bn"), small(arch, "none")
    assert layout(bn) == layout(none)
    assert all(type(c) is BinaryConv2d for _, c in binary_convs(none))
    # parameters: BN's go, the real convolutions gain a bias, nothing else
    pb = {n: p.shape for n, p in bn.named_parameters()}
    pn = {n: p.shape for n, p in none.named_parameters()}
    assert all(pn[n] == s for n, s in pb.items() if n in pn)
    assert all(n.endswith(".bias") for n in set(pn) - set(pb))
    bn_names = {n for n, mod in bn.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    assert all(n.rsplit(".", 1)[0] in bn_names for n in set(pb) - set(pn))


def test_variant_names():
    assert NORMS == ("bn", "none", "bnfree")
    assert [variant_name(n) for n in NORMS] == ["bn", "nobn", "bnfree"]
    with pytest.raises(ValueError):
        small("reactnet18", "layernorm")


# --------------------------------------------------------------------------
# scaled weight standardization
# --------------------------------------------------------------------------
def _check_standardized(w_hat, w, eps, init_tol):
    n = w[0].numel()
    dims = tuple(range(1, w.dim()))
    std = w.std(dims, unbiased=False)
    mean_hat = w_hat.mean(dims)
    var_hat = w_hat.var(dims, unbiased=False)
    assert mean_hat.abs().max() < 1e-6 / math.sqrt(n)
    torch.testing.assert_close(var_hat * n, (std / (std + eps)) ** 2, rtol=1e-4, atol=0)
    assert (var_hat * n - 1).abs().max() < init_tol


def test_standardized_weights_zero_mean_unit_variance_times_fanin():
    torch.manual_seed(0)
    w = 5 * torch.randn(16, 8, 3, 3, dtype=torch.float64) + 3  # any scale and offset
    _check_standardized(standardize_weight(w), w, 1e-5, 1e-4)
    torch.testing.assert_close(standardize_weight(w, gamma=2.0), 2 * standardize_weight(w))

    m = small("reactnet18", "bnfree")
    real = [mod for mod in m.modules() if isinstance(mod, ScaledStdConv2d)]
    binary = [mod for mod in m.modules() if isinstance(mod, ScaledStdBinaryConv2d)]
    assert len(real) == 4 and len(binary) == 16  # stem + 3 shortcuts; 16 blocks
    with torch.no_grad():
        for conv in real:  # Kaiming-uniform init: std >> eps
            _check_standardized(conv.standardized_weight(), conv.weight, conv.eps, 1e-3)
        for conv in binary:  # U(0, 1e-3) init: std ~2.9e-4, eps = 1e-5 takes ~7 % of the variance
            _check_standardized(conv.latent_weight(), conv.weight, conv.eps, 0.1)


def test_binary_conv_binarizes_standardized_weight_and_scales_by_gain():
    torch.manual_seed(0)
    conv = ScaledStdBinaryConv2d(6, 5, 3, 1, 1, "approxsign", True, None)
    with torch.no_grad():
        conv.weight.normal_(0.3, 0.01)  # all-positive raw weights: sign(W) would be all +1
        conv.gain.uniform_(0.5, 2.0)
    w_hat = conv.latent_weight()
    w, alpha = conv.binary_weight()
    torch.testing.assert_close(w, torch.where(w_hat >= 0, 1.0, -1.0))
    assert (w < 0).any()
    torch.testing.assert_close(alpha, w_hat.detach().abs().mean((1, 2, 3)))
    x = torch.randn(2, 6, 8, 8)
    s = conv.integer_sums(x)
    assert torch.equal(s, s.round())
    y = conv(x)
    torch.testing.assert_close(y, s * alpha.view(1, -1, 1, 1) * conv.gain.view(1, -1, 1, 1))
    y.sum().backward()  # gradients reach the raw weight (through the standardization) and the gain
    assert conv.weight.grad.abs().sum() > 0 and conv.gain.grad.abs().sum() > 0


# --------------------------------------------------------------------------
# signal propagation
# --------------------------------------------------------------------------
def test_signal_propagation_schedule():
    a = 0.2
    m = small("reactnet18", "bnfree")
    betas = [b.beta for b in m.blocks]
    expected, var = [], 1.0
    for i in range(16):
        expected.append(math.sqrt(var))
        if i in (4, 8, 12):  # first block of stages 2-4: transition, variance reset
            var = 1.0
        var += a * a
    assert betas == pytest.approx(expected)
    assert betas[:2] == pytest.approx([1.0, math.sqrt(1 + a * a)])
    assert betas[5] == pytest.approx(math.sqrt(1 + a * a))
    assert all(b.alpha_res == a for b in m.blocks)
    assert all(b.beta == 1.0 and b.alpha_res == 1.0 for b in small("reactnet18", "bn").blocks)
    assert SignalPropagation("none").step(True) == (1.0, 1.0)
    # ReActNet-A: two sub-blocks per block, the stride-2 3x3 sub-block is the transition
    ra = small("reactneta", "bnfree")
    assert (ra.blocks[0].beta1, ra.blocks[0].beta2) == pytest.approx((1.0, math.sqrt(1 + a * a)))
    assert ra.blocks[1].stride == 2
    assert ra.blocks[1].beta2 == pytest.approx(math.sqrt(1 + a * a))


def test_bnfree_transition_block_forward():
    """A transition block computes act(alpha * f(x / beta) + shortcut(x / beta))."""
    m = small("reactnet18", "bnfree").eval()
    blk = m.blocks[8]
    assert blk.shortcut.body is not None and blk.beta > 1
    x = torch.randn(2, blk.conv.in_channels, 8, 8)
    xin = x / blk.beta
    ref = blk.act(blk.alpha_res * blk.conv(xin) + blk.shortcut(xin))
    torch.testing.assert_close(blk(x), ref)
    idb, x = m.blocks[9], blk(x)
    ref = idb.act(idb.alpha_res * idb.conv(x / idb.beta) + x)
    torch.testing.assert_close(idb(x), ref)


# --------------------------------------------------------------------------
# adaptive gradient clipping
# --------------------------------------------------------------------------
def test_agc_bounds_unit_norms_and_leaves_classifier():
    clip, eps = 0.01, 1e-3
    m = small("reactnet18", "bnfree")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    (1e3 * F.cross_entropy(m(x), y)).backward()  # large gradients: many units get clipped
    before = {n: p.grad.clone() for n, p in m.named_parameters()}
    n_clipped = adaptive_grad_clip_(m, clip, eps=eps)
    assert int(n_clipped) > 0
    for n, p in m.named_parameters():
        g0, g = before[n], p.grad
        if n.startswith("classifier."):
            assert torch.equal(g, g0), n
            continue
        bound = clip * unitwise_norm(p.detach()).clamp(min=eps)
        g0n, gn = unitwise_norm(g0), unitwise_norm(g)
        assert (gn <= bound * (1 + 1e-5)).all(), n
        under = g0n <= bound  # per unit, broadcast over the unit's entries
        assert torch.equal(torch.where(under, g, g0), g0), n  # within-bound units untouched
        # clipped units keep their direction: g = c * g0 with 0 < c <= 1
        c = gn / g0n.clamp(min=1e-30)
        torch.testing.assert_close(g, g0 * c, rtol=1e-5, atol=1e-12)
    assert (unitwise_norm(m.classifier.weight.grad) > clip * unitwise_norm(m.classifier.weight)).any()


def test_agc_by_hand_and_selection():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]))  # row norms 5 and 0
    lin.weight.grad = torch.tensor([[0.0, 0.0, 1.0], [1e-6, 0.0, 0.0]])
    adaptive_grad_clip_([lin.weight], 0.1)  # bounds 0.5 and 0.1 * eps
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[0.0, 0.0, 0.5], [1e-6, 0.0, 0.0]]))
    lin.weight.grad = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    adaptive_grad_clip_([("classifier.weight", lin.weight)], 0.1)  # excluded by name
    assert lin.weight.grad[0, 2] == 1.0
    adaptive_grad_clip_([("features.weight", lin.weight)], 0.1)
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[0.0, 0.0, 0.5], [1e-4, 0.0, 0.0]]))
    with pytest.raises(ValueError):
        adaptive_grad_clip_([lin.weight], 0.1, exclude=("fc",))
    with pytest.raises(ValueError):
        adaptive_grad_clip_([lin.weight], 0.0)


# --------------------------------------------------------------------------
# every model x norm: build, one train step, evaluate, both datasets
# --------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", ARCHS)
def test_model_norm_trains_and_evaluates(arch, norm):
    for num_classes in (10, 100):  # CIFAR-10 and CIFAR-100 shaped
        m = small(arch, norm, num_classes)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, num_classes, (4,))
        m.train()
        loss = F.cross_entropy(m(x), y)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        if norm == "bnfree":
            adaptive_grad_clip_(m, 0.02)
        w0 = m.classifier.weight.detach().clone()
        opt.step()
        assert not torch.equal(w0, m.classifier.weight)
        assert all(c.weight.grad is not None for _, c in binary_convs(m))
        m.eval()
        with torch.no_grad():
            out = m(torch.randn(3, 3, 32, 32))
        assert out.shape == (3, num_classes) and torch.isfinite(out).all()


# --------------------------------------------------------------------------
# ReActNet-A
# --------------------------------------------------------------------------
def test_reactneta_layout():
    m = small("reactneta", "bn")
    w = SMALL["reactneta"]
    assert len(m.blocks) == 13
    assert [b.stride for b in m.blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert m.classifier.in_features == 32 * w
    x = m.stem(torch.randn(1, 3, 32, 32))
    for b in m.blocks:
        x = b(x)
    assert x.shape[-2:] == (2, 2)  # 32 -> 16 -> 8 -> 4 -> 2
    convs = binary_convs(m)
    assert len(convs) == 26 and {c.kernel_size for _, c in convs} == {1, 3}
    assert all(c.padding == 0 for _, c in convs if c.kernel_size == 1)


def test_reactneta_parameter_counts_and_widths():
    assert MODELS["reactneta"] and PAPER_WIDTHS["reactneta"] == 32
    assert relative_width("reactneta", 64) == 32 and relative_width("reactnet18", 16) == 16
    counts = {}
    for norm in NORMS:
        for c in (10, 100):
            m = build_model("reactneta", num_classes=c, norm=norm)  # default width = the paper's 32
            assert m.width == 32 and m.classifier.in_features == 1024
            counts[norm, c] = count_parameters(m)
    print("ReActNet-A (width 32) parameters:", counts)
    assert counts["bn", 10] == 28_328_842
    assert counts["bn", 100] - counts["bn", 10] == 90 * 1025


def test_config_keys():
    for key, default in [("norm", "bn"), ("agc_clip", 0.0), ("appendix_epochs", 1),
                         ("cifar100_train_file", "train_subset.npz")]:
        assert SCHEMA[key][1] == default
    for key in ("appendix_models", "appendix_norms", "appendix_datasets", "appendix_width",
                "appendix_train_per_class"):
        assert key in SCHEMA
    assert set(SCHEMA["appendix_models"][1]) <= set(MODELS)
    assert set(SCHEMA["appendix_norms"][1]) <= set(NORMS)


# --------------------------------------------------------------------------
# binary branches carry signal at init; AGC in closed form; diagnostics
# --------------------------------------------------------------------------
from mvlib.models.diagnostics import branch_ratios, ratio_summary, set_shortcut_only  # noqa: E402
from mvlib.models.norms import BINARY_INITS, BNFREE_ALPHA, default_binary_init, init_binary_weight_  # noqa: E402

# widths of the init check: the ResNet-18s at 8, ReActNet-A at 4 (the appendix's 1/8 of the paper's)
INIT_WIDTH = {"reactnet18": 8, "birealnet18": 8, "xnornet18": 8, "reactneta": 4}
GMEAN_FACTOR, BLOCK_FACTOR = 4.0, 10.0


def _init_ratios(arch, norm, seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model(arch, width=INIT_WIDTH[arch], norm=norm, **kw).train()
    x = torch.randn(16, 3, 32, 32)
    return branch_ratios(m, x)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", ("none", "bnfree"))
def test_binary_branch_magnitude_at_init_within_factor_of_shortcut(arch, norm):
    for seed in (0, 1):
        rows = _init_ratios(arch, norm, seed)
        key = "ratio_unscaled" if norm == "bnfree" else "ratio"  # bnfree: before alpha_res = 0.2
        s = ratio_summary(rows)
        assert 1 / GMEAN_FACTOR <= s[f"{key}_gmean"] <= GMEAN_FACTOR, (arch, norm, seed, s)
        bad = [(r["block"], round(r[key], 4)) for r in rows if not 1 / BLOCK_FACTOR <= r[key] <= BLOCK_FACTOR]
        assert not bad, (arch, norm, seed, bad)
        if norm == "bnfree":  # the scaled branch is alpha_res times the unscaled one
            assert all(r["ratio"] == pytest.approx(BNFREE_ALPHA * r["ratio_unscaled"]) for r in rows)


def test_xnornet_bn_branch_carries_signal_and_reactnet_init_without_bn_does_not():
    s = ratio_summary(_init_ratios("xnornet18", "bn"))  # BN before the sign, none after the conv
    assert 1 / GMEAN_FACTOR <= s["ratio_gmean"] <= GMEAN_FACTOR and s["ratio_min"] >= 1 / BLOCK_FACTOR, s
    for arch in ARCHS:  # the failure the fanin init removes: branches ~1e-2 of the shortcut
        s = ratio_summary(_init_ratios(arch, "none", binary_init="reactnet"))
        assert s["ratio_min"] < 0.05, (arch, s)


def test_binary_init_rules_and_values():
    assert BINARY_INITS == ("reactnet", "fanin")
    assert [default_binary_init(n) for n in NORMS] == ["reactnet", "fanin", "reactnet"]
    assert default_binary_init("bn", "xnornet") == "fanin"
    assert default_binary_init("bnfree", "xnornet") == "reactnet"
    w = torch.empty(64, 16, 3, 3)
    init_binary_weight_(w, "fanin")
    bound = 1 / math.sqrt(16 * 9)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound and (w < 0).any()
    # alpha = mean|W| = bound / 2 for a uniform init, so alpha * s has rms ~0.5 on +-1 inputs
    assert w.abs().mean((1, 2, 3)).mean() == pytest.approx(bound / 2, rel=0.05)
    init_binary_weight_(w, "reactnet")
    assert (w >= 0).all() and w.max() <= 1e-3
    with pytest.raises(ValueError):
        init_binary_weight_(w, "xavier")
    with pytest.raises(ValueError):
        build_model("reactnet18", width=4, binary_init="xavier")
    for arch in ARCHS:  # the model records its init; none takes fanin, an explicit choice wins
        assert build_model(arch, width=SMALL[arch], norm="none").binary_init == "fanin"
        m = build_model(arch, width=SMALL[arch], norm="none", binary_init="reactnet")
        assert m.binary_init == "reactnet" and all((c.weight >= 0).all() for _, c in binary_convs(m))


@pytest.mark.parametrize("arch", ARCHS)
def test_bn_models_unchanged_by_the_init_option(arch):
    """``bn`` keeps ReActNet's init and the same random stream: notebook 01's models are the same."""
    if arch == "xnornet18":
        pytest.skip("XNORNet-18 with BN takes the fanin init (no BN after its convolution)")
    a, b = small(arch, "bn"), small(arch, "bn", binary_init="reactnet")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all((c.weight >= 0).all() and c.weight.max() <= 1e-3 for _, c in binary_convs(a))


def _official_agc(grad, weight, clip, eps=1e-3):
    """The closed form of BNN_NoBN's ``agc.py``, written out unit by unit (output channel / whole tensor)."""
    g, out = grad.clone(), grad.clone()
    units = [slice(None)] if weight.dim() <= 1 else range(weight.shape[0])
    for i in units:
        w_n = max(float(weight[i].norm()), eps)
        g_n = float(g[i].norm())
        if g_n / w_n > clip:
            out[i] = g[i] * (clip * w_n / max(g_n, 1e-6))
    return out


def test_agc_matches_closed_form_unit_by_unit():
    torch.manual_seed(0)
    clip = 0.02
    m = small("reactnet18", "bnfree")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    (100 * F.cross_entropy(m(x), y)).backward()
    with torch.no_grad():  # make some units fall under the bound and some over it, in one tensor
        conv = m.blocks[3].conv
        conv.weight.grad[::2] *= 1e-6
    expected = {n: (p.grad.clone() if n.startswith("classifier.") else _official_agc(p.grad, p.detach(), clip))
                for n, p in m.named_parameters() if p.grad is not None}
    adaptive_grad_clip_(m, clip)
    n_under = n_over = 0
    for n, p in m.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-12, msg=n)
        if n == "blocks.3.conv.weight":
            ratio = unitwise_norm(p.grad).flatten() / unitwise_norm(p.detach()).clamp(min=1e-3).flatten()
            n_under, n_over = int((ratio < clip * 0.999).sum()), int((ratio > clip * 0.999).sum())
    assert n_under > 0 and n_over > 0  # both branches of the closed form were exercised
    # the classifier is excluded by name, as the official code excludes every 'fc' parameter
    assert torch.equal(m.classifier.weight.grad, expected["classifier.weight"])


@pytest.mark.parametrize("arch", ARCHS)
def test_shortcut_only_network(arch):
    m = small(arch, "none").eval()
    x = torch.randn(2, 3, 32, 32)
    full = m(x)
    set_shortcut_only(m)
    calls = []
    hooks = [c.register_forward_hook(lambda *a: calls.append(1)) for _, c in binary_convs(m)]
    out = m(x)
    assert not calls and out.shape == full.shape and not torch.allclose(out, full)
    if arch != "reactneta":  # by hand: every block is act(shortcut(x))
        h = m.stem(x.contiguous(memory_format=torch.channels_last))
        for blk in m.blocks:
            h = blk.act(blk.shortcut(h))
        torch.testing.assert_close(out, m.classifier(m.pool(h).flatten(1)))
    set_shortcut_only(m, False)
    torch.testing.assert_close(m(x), full)
    for h in hooks:
        h.remove()
    with pytest.raises(ValueError):
        set_shortcut_only(nn.Linear(2, 2))


def test_branch_ratios_rows_and_buffers_untouched():
    m = small("reactnet18", "bn").train()
    before = {n: b.clone() for n, b in m.named_buffers()}
    rows = branch_ratios(m, torch.randn(8, 3, 32, 32))
    assert len(rows) == 16 and rows[0]["block"] == "blocks.0"
    assert all(torch.equal(before[n], b) for n, b in m.named_buffers())
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())
    r = rows[0]
    assert r["ratio"] == pytest.approx(r["branch_rms"] / r["shortcut_rms"])
    ra = branch_ratios(small("reactneta", "none"), torch.randn(2, 3, 32, 32))
    assert len(ra) == 26 and [r["block"] for r in ra[:2]] == ["blocks.0.1", "blocks.0.2"]


@pytest.mark.parametrize("downsample", ("weights", "binary"))
def test_binary_downsample_without_bn_keeps_the_shortcut(downsample):
    """A binary 1x1 shortcut without BN takes the fanin init too: its alpha would otherwise shrink it ~1e-3."""
    rows = _init_ratios("reactnet18", "none", binary_downsample=downsample)
    s = ratio_summary(rows)
    assert 1 / GMEAN_FACTOR <= s["ratio_gmean"] <= GMEAN_FACTOR and s["ratio_min"] >= 1 / BLOCK_FACTOR, s
    assert s["ratio_max"] <= BLOCK_FACTOR, s
