"""bf16 training (``precision="bf16"``): the binary convolution stays exact under autocast.

Its ±1 operands are exact in bf16, but its integer sums (up to 9 * C_in) are not: a bf16 result holds
integers only up to 256. So the forward of :class:`mvlib.layers.BinaryConv2d` runs in float32 (the int8
path on CPU) under autocast, and must equal the float32 forward bit for bit; only its backward
convolutions take bf16 operands.
"""
import math

import pytest
import torch

from mvlib.data import BatchLoader
from mvlib.layers import BinaryConv2d
from mvlib.models import build_model
from mvlib.train import fit
from mvlib.voter_ops import set_voter


def _conv(cin, cout, stride, voter=None):
    torch.manual_seed(3)
    conv = BinaryConv2d(cin, cout, 3, stride, 1)
    with torch.no_grad():
        conv.weight.normal_()
        conv.act.shift.normal_(0, 0.1)
    if voter is not None:
        set_voter(conv, voter)
    return conv


def _input(cin, h, w, channels_last=True):
    x = torch.randn(3, cin, h, w)
    x[:, :, ::3] = 0.0  # exact zeros: sign(0) = +1 in both precisions
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("voter", [None, "mv", {"name": "hmv", "fanins": [4], "tie": "neg"}])
@pytest.mark.parametrize("cin,cout,stride,h,w", [(12, 17, 1, 7, 9), (32, 40, 2, 11, 8), (40, 24, 1, 5, 5)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_binary_conv_forward_under_bf16_autocast_equals_float32(voter, cin, cout, stride, h, w, channels_last):
    conv = _conv(cin, cout, stride, voter)
    x = _input(cin, h, w, channels_last)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            want = conv(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = conv(x)
                got_low_input = conv(x.to(torch.bfloat16))
            want_low_input = conv(x.to(torch.bfloat16).float())
        assert got.dtype == torch.float32
        assert torch.equal(got, want)
        assert torch.equal(got_low_input, want_low_input)


def test_sums_above_256_are_exact_under_autocast():
    # 9 * 64 = 576 terms, all +1: a bf16 convolution would round 576 to 576 but 575 to 576.
    conv = BinaryConv2d(64, 2, 3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(0.5)
        conv.weight[1, 0, 0, 0] = -0.5
        conv.act.shift.zero_()
    x = torch.ones(1, 64, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y[0, 0, 1, 1].item() == 576 * 0.5 and y[0, 1, 1, 1].item() == 574 * 0.5


def test_binary_conv_backward_under_bf16_is_float32_within_bf16_rounding():
    conv = _conv(24, 16, 1)
    x = _input(24, 8, 8).requires_grad_(True)
    g = torch.randn(3, 16, 8, 8)
    conv(x).backward(g)
    want = [x.grad.clone(), conv.weight.grad.clone(), conv.act.shift.grad.clone()]
    x.grad = conv.weight.grad = conv.act.shift.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.backward(g)
    got = [x.grad, conv.weight.grad, conv.act.shift.grad]
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        # bf16 keeps 8 significant bits: the gradients agree to about 2**-8 of their scale
        assert (a - b).abs().max() <= 2 ** -6 * b.abs().max()
        assert not torch.equal(a, b) or b.abs().max() == 0  # the backward did run in bf16


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18"])
def test_fit_in_bf16_trains_with_a_float32_loss(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    tr = BatchLoader(x, y, 16, train=True, augment=True, device="cpu", seed=0)
    te = BatchLoader(x[:16], y[:16], 16, train=False, augment=False, device="cpu")
    model = build_model(name, width=4)
    before = [p.detach().clone() for p in model.parameters()]
    hist = fit(model, tr, te, epochs=1, progress=False, log=lambda s: None, precision="bf16")
    assert math.isfinite(hist[0]["train_loss"]) and hist[0]["train_loss"] < 10 * math.log(10)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_refuses_an_unknown_precision():
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    loader = BatchLoader(x, torch.zeros(4, dtype=torch.long), 4, train=True, augment=False, device="cpu")
    with pytest.raises(ValueError, match="precision"):
        fit(build_model("reactnet18", width=4), loader, loader, epochs=1, progress=False, precision="fp16")
