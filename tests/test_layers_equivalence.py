"""The fast training path computes what the plain definition computes.

Three levels:

* each fused kernel (:mod:`mvlib.fused`) against its torch expression: forward
  values and elementwise gradients bitwise equal, per-channel sums close;
* :class:`mvlib.layers.BinaryConv2d` and :class:`RPReLU` through their fused
  autograd functions against the module-by-module definition
  (``BinaryActivation`` -> ``WeightSTESign`` -> ``integer_conv`` -> ``* alpha``);
* whole ReActNet-18 / Bi-RealNet-18 against the unfused reference written as
  the official code is (:mod:`mvlib.bench.reference_unfused`), given the same
  parameters: the same logits and the same gradient for every parameter.

"Close" is float32 reassociation only (sums in another order, channels-last
convolutions): tolerances are a few ulps of the largest value, far below any
real difference, which would show up at O(1) relative error.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvlib import cpu_fast, fused
from mvlib.bench.reference_unfused import reference_from, reference_grads
from mvlib.layers import BinaryConv2d, RPReLU
from mvlib.models import build_model

CL = torch.channels_last
needs_kernels = pytest.mark.skipif(not fused.kernels_enabled(), reason="numba kernels unavailable or MVLIB_FUSED=0")


def rand(*shape, seed=0, scale=1.0, cl=True):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g) * scale
    return t.contiguous(memory_format=CL) if cl and t.dim() == 4 else t


def torch_path(monkeypatch):
    """Make mvlib.fused take its torch expressions (the reference definitions)."""
    monkeypatch.setenv("MVLIB_FUSED", "0")


def assert_sums_close(a, b, floor: float = 0.0):
    """Equal up to float32 reassociation: a few ulps of the largest entry.

    ``floor`` is an absolute tolerance from the whole model's gradient scale:
    a BN bias feeding another BN gets an almost fully cancelling sum (~1e-6
    of the other gradients), which no summation order computes better.
    """
    torch.testing.assert_close(a, b, rtol=1e-5, atol=max(1e-5 * float(b.abs().max()), floor) + 1e-7)


# ------------------------------------------------------------------ kernels vs torch
@needs_kernels
@pytest.mark.parametrize("with_shift", [True, False])
@pytest.mark.parametrize("name", ["approxsign", "ste"])
def test_shifted_sign_kernels_match_torch(monkeypatch, with_shift, name):
    x = rand(4, 12, 6, 5, seed=1, scale=1.5)
    shift = rand(12, seed=2, scale=0.3) if with_shift else None
    x[0, 0, 0, 0] = 1.0 if shift is None else -shift[0]  # exact tie: x + b == 0 -> +1
    x[0, 1, 0, 0] = 1.0 if shift is None else 1.0 - shift[1]  # |z| == 1 edge of the STE
    g = rand(4, 12, 6, 5, seed=3)
    a_k = fused.shifted_sign(x, shift)
    gx_k, gb_k = fused.shifted_sign_backward(g, x, shift, name)
    torch_path(monkeypatch)
    a_t = fused.shifted_sign(x, shift)
    gx_t, gb_t = fused.shifted_sign_backward(g, x, shift, name)
    assert torch.equal(a_k, a_t) and set(a_k.unique().tolist()) == {-1.0, 1.0}
    assert a_k[0, 0, 0, 0] == 1.0
    assert torch.equal(gx_k, gx_t)
    if with_shift:
        assert_sums_close(gb_k, gb_t)
    else:
        assert gb_k is None and gb_t is None


@needs_kernels
def test_round_scale_kernel_rounds_half_to_even(monkeypatch):
    s = torch.tensor([2.5, 3.5, -2.5, -0.5, 0.5, 1.49, 7.0, -3.0]).view(1, 8, 1, 1).repeat(3, 1, 2, 2)
    s = s.contiguous(memory_format=CL)
    alpha = rand(8, seed=4).abs()
    got = fused.round_scale_(s.clone(), alpha)
    torch_path(monkeypatch)
    want = fused.round_scale_(s.clone(), alpha)
    assert torch.equal(got, want)
    assert torch.equal(got, torch.round(s) * alpha.view(1, -1, 1, 1))


@needs_kernels
@pytest.mark.parametrize("with_residual", [True, False])
def test_rprelu_kernels_match_torch(monkeypatch, with_residual):
    x, r = rand(3, 10, 4, 4, seed=5), rand(3, 10, 4, 4, seed=6)
    gamma, slope, zeta = rand(10, seed=7, scale=0.2), rand(10, seed=8, scale=0.3), rand(10, seed=9)
    g = rand(3, 10, 4, 4, seed=10)
    res = r if with_residual else None
    y_k = fused.rprelu(x, res, gamma, slope, zeta)
    grads_k = fused.rprelu_backward(g, x, res, gamma, slope)
    torch_path(monkeypatch)
    y_t = fused.rprelu(x, res, gamma, slope, zeta)
    grads_t = fused.rprelu_backward(g, x, res, gamma, slope)
    assert torch.equal(y_k, y_t)
    assert torch.equal(grads_k[0], grads_t[0])
    for a, b in zip(grads_k[1:], grads_t[1:]):
        assert_sums_close(a, b)


@needs_kernels
def test_weight_kernels_match_torch(monkeypatch):
    w = rand(6, 5, 3, 3, seed=11, scale=0.8, cl=False)
    w[0, 0, 0, 0], w[0, 0, 0, 1] = 0.0, 1.0  # tie -> +1; |w| == 1 passes the STE
    g = rand(6, 5, 3, 3, seed=12)  # channels-last, as oneDNN returns it
    alpha = rand(6, seed=13).abs()
    wb_k, gw_k = fused.weight_sign(w, True), fused.weight_ste_grad(g, w, alpha)
    assert wb_k.is_contiguous(memory_format=CL) and gw_k.is_contiguous()
    torch_path(monkeypatch)
    assert torch.equal(wb_k, fused.weight_sign(w, True))
    assert torch.equal(gw_k, fused.weight_ste_grad(g, w, alpha))
    assert wb_k[0, 0, 0, 0] == 1.0 and gw_k[0, 0, 0, 1] == g[0, 0, 0, 1] * alpha[0]


@needs_kernels
@pytest.mark.parametrize("stride, cin, cout, hw", [(1, 16, 16, 8), (2, 8, 16, 9), (1, 3, 5, 4), (2, 64, 32, 4)])
def test_int8_convolution_is_exact(stride, cin, cout, hw):
    if not cpu_fast.int8_conv_enabled():
        pytest.skip("oneDNN int8 convolution unavailable or failed its probe on this machine")
    x = rand(5, cin, hw, hw, seed=20)
    shift = rand(cin, seed=21, scale=0.2)
    x[0, :, 0, 0] = -shift  # ties at a border pixel
    wb = torch.where(rand(cout, cin, 3, 3, seed=22, cl=False) >= 0, 1.0, -1.0)
    alpha = rand(cout, seed=23).abs()
    got = cpu_fast.int8_binary_conv(x, shift, wb, alpha, stride, 1)
    a = torch.where(x + shift.view(1, -1, 1, 1) >= 0, 1.0, -1.0)
    s = F.conv2d(a, wb, None, stride, 1)
    assert torch.equal(s, s.round())  # the float convolution of +-1 is exact too
    assert torch.equal(got, s * alpha.view(1, -1, 1, 1))


# ------------------------------------------------------------------ layers vs definition
def conv_pair(cin=8, cout=12, stride=1, **kw):
    torch.manual_seed(0)
    conv = BinaryConv2d(cin, cout, 3, stride, 1, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight) * 0.7)  # some |W| > 1: the STE clips them
        if conv.act.shift is not None:
            conv.act.shift.copy_(torch.randn(cin) * 0.3)
    return conv


def run_conv(conv, x, g, plain: bool):
    """Forward and gradients of ``conv`` at ``x``; ``plain`` forces the module-by-module definition."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    handle = conv.act.register_forward_hook(lambda *a: None) if plain else None  # a hook disables fusion
    assert conv.fused_path_ok() is (not plain)
    y = conv(x)
    y.backward(g)
    if handle:
        handle.remove()
    shift = None if conv.act.shift is None else conv.act.shift.grad
    return y.detach(), x.grad, conv.weight.grad, shift


@pytest.mark.parametrize("cl", [True, False])
@pytest.mark.parametrize("binarizer, shift, stride", [("approxsign", True, 1), ("approxsign", False, 2),
                                                      ("ste", False, 1), ("ste", True, 2)])
def test_fused_binary_conv_equals_definition(cl, binarizer, shift, stride):
    conv = conv_pair(stride=stride, act_binarizer=binarizer, learnable_shift=shift)
    x = rand(4, 8, 9, 9, seed=13, cl=cl)
    g = rand(4, 12, 5 if stride == 2 else 9, 5 if stride == 2 else 9, seed=14, cl=cl)
    fast, plain = run_conv(conv, x, g, False), run_conv(conv, x, g, True)
    assert torch.equal(fast[0], plain[0])  # the forward is exact: alpha * integer
    s = fast[0] / conv.weight.abs().mean((1, 2, 3)).view(1, -1, 1, 1)
    assert (s - s.round()).abs().max() < 1e-4  # alpha times an integer
    for a, b in zip(fast[1:], plain[1:]):
        if b is None:
            assert a is None
        else:
            assert_sums_close(a, b)


def test_fused_rprelu_equals_definition():
    torch.manual_seed(1)
    act = RPReLU(6)
    with torch.no_grad():
        for p in act.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x, r, g = rand(2, 6, 5, 5, seed=15), rand(2, 6, 5, 5, seed=16), rand(2, 6, 5, 5, seed=17)
    xa, ra = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    act(xa, ra).backward(g)
    got = [xa.grad, ra.grad] + [p.grad.clone() for p in act.parameters()]
    act.zero_grad()
    xb, rb = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    z = xb + rb - act.shift_in.view(1, -1, 1, 1)  # the plain RPReLU formula
    y = torch.where(z >= 0, z, z * act.slope.view(1, -1, 1, 1)) + act.shift_out.view(1, -1, 1, 1)
    assert torch.equal(act(x, r), y.detach())
    y.backward(g)
    want = [xb.grad, rb.grad] + [p.grad for p in act.parameters()]
    for a, b in zip(got, want):
        assert_sums_close(a, b)


def test_voter_and_hooks_keep_the_plain_path():
    conv = conv_pair()
    assert conv.fused_path_ok()
    conv.voter = torch.nn.Identity()
    assert not conv.fused_path_ok()


# ------------------------------------------------------------------ models vs unfused reference
def perturbed_model(name, width=8, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, num_classes=10, width=width)
    with torch.no_grad():  # move shifts, slopes and BN affine off their initial values
        for n, p in model.named_parameters():
            if any(k in n for k in ("shift", "slope", "norm", "stem.1")):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18"])
def test_model_equals_unfused_reference(name):
    model = perturbed_model(name)
    ref = reference_from(model)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    out_m, out_r = model(x), ref(x)
    torch.testing.assert_close(out_m, out_r, rtol=1e-5, atol=1e-5)
    F.cross_entropy(out_m, y).backward()
    F.cross_entropy(out_r, y).backward()
    pairs = reference_grads(model, ref)
    assert len(pairs) == len(list(model.parameters()))  # every parameter is compared
    floor = 1e-5 * max(float(b.abs().max()) for _, _, b in pairs)
    for pname, a, b in pairs:
        err = float((a - b).abs().max())
        assert err < max(1e-4 * float(b.abs().max()), floor), f"{pname}: gradient difference {err:.2e}"


@pytest.mark.parametrize("name", ["xnornet18", "reactnet18"])
def test_model_fast_path_equals_plain_path(name, monkeypatch):
    """Fused path (kernels, channels-last) vs the module-by-module path in NCHW, same model."""
    model = perturbed_model(name, seed=2)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    fast_out = model(x)
    fast_out.square().sum().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(BinaryConv2d, "fused_path_ok", lambda self: False)
    torch_path(monkeypatch)
    plain_out = model(x)
    plain_out.square().sum().backward()
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-5, atol=1e-5)
    floor = 1e-5 * max(float(p.grad.abs().max()) for p in model.parameters())
    for n, p in model.named_parameters():
        assert_sums_close(fast[n], p.grad, floor)


# ------------------------------------------------------------------ evaluation: the voter fed by the int8 sums
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,cout,hw,shift", [(6, 7, 9, True), (13, 5, 8, False), (2, 3, 5, True)])
@pytest.mark.parametrize("scale", ["none", "alpha"])
def test_eval_voter_on_int8_sums_equals_definition(stride, cin, cout, hw, shift, scale):
    # even fan-ins (6*9, 2*9) make exact ties s == 0 frequent: they must vote +1 on both paths
    from mvlib.voters import build_voter
    torch.manual_seed(cin * 100 + stride)
    conv = BinaryConv2d(cin, cout, 3, stride, 1, learnable_shift=shift)
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight))
        if shift:
            conv.act.shift.copy_(torch.randn(cin) * 0.3)
    conv.voter = build_voter("mv", output_scale=scale)
    x = torch.randn(3, cin, hw, hw).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert conv.int8_vote_ok() and cpu_fast.int8_conv_enabled()
        got = conv(x)
        b = conv.act.shift.view(1, -1, 1, 1) if shift else 0.0
        a = torch.where(x + b >= 0, 1.0, -1.0)
        w = conv.weight
        s = F.conv2d(a, torch.where(w >= 0, 1.0, -1.0), None, stride, 1)
        want = torch.where(s >= 0, 1.0, -1.0)
        if scale == "alpha":
            want = want * w.abs().mean((1, 2, 3)).view(1, -1, 1, 1)
    assert (s == 0).any() or cin == 13  # the tie case is exercised
    assert torch.equal(got, want)
    conv.voter.register_forward_hook(lambda *a: None)  # a hooked voter sees its own inputs: plain path
    assert not conv.int8_vote_ok()
