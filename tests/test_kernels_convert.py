"""``convert_model``: mvlib models on the bit kernels give the float simulation's outputs.

Randomly initialized models (trained checkpoints are checked in notebook 05);
BN statistics and RSign shifts are randomized so that signs are not trivial.
"""
from __future__ import annotations

import pytest
import torch

from cuda_numba import BitConv2d, bit_convs, convert_model
from mvlib.layers import BinaryConv2d, binary_convs
from mvlib.models import build_model
from mvlib.voters import HierarchicalVoter, MajorityVoter


def _random_model(name, voter, width=8, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, width=width, voter=voter)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
        for n, p in model.named_parameters():
            if n.endswith("shift"):
                p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
@pytest.mark.parametrize("voter", [None, "mv", "hmv"])
def test_converted_model_matches_float_simulation(name, voter):
    if voter == "hmv":
        voter = HierarchicalVoter(fanins=4, tie="first")
    elif voter == "mv":
        voter = MajorityVoter(output_scale="alpha")
    model = _random_model(name, voter)
    bit_model = convert_model(model)
    assert len(bit_convs(bit_model)) == len(binary_convs(model)) == 16
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x), bit_model(x)
    assert torch.equal(ref, got)  # bit-identical logits, so 0 differing predictions


def test_converted_model_width64_stage_layers():
    # width 64: every binary conv takes the direct (in-place taps) path of the CPU kernels
    model = _random_model("reactnet18", None, width=64)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, got = model(x), convert_model(model)(x)
    assert torch.equal(ref, got)


def test_channels_last_option_same_predictions():
    model = _random_model("birealnet18", MajorityVoter(), width=64)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, got = model(x), convert_model(model, channels_last=True)(x)
    assert torch.equal(ref.argmax(1), got.argmax(1)) and torch.allclose(ref, got, atol=1e-4)


# ------------------------------------------------------------- BN-Free models: the learned gain
def _random_bnfree_model(name, voter, width, seed=0):
    """A bnfree model with non-trivial gains (init 1 would hide a dropped gain), shifts and biases."""
    torch.manual_seed(seed)
    model = build_model(name, width=width, norm="bnfree", voter=voter)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("gain"):
                p.uniform_(0.25, 2.0).mul_(torch.where(torch.rand_like(p) < 0.2, -1.0, 1.0))  # a few negative
            elif n.endswith("shift") or n.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name,width", [("reactnet18", 6), ("birealnet18", 10), ("xnornet18", 6)])
@pytest.mark.parametrize("voter", [None, "mv", "hmv"])
def test_converted_bnfree_model_applies_the_gain(name, width, voter):
    """``y = g * (alpha * s)`` or ``g * voter(...)``: the bit model applies the gain as the float model does."""
    if voter == "mv":
        voter = MajorityVoter(output_scale="alpha")
    elif voter == "hmv":  # nested, G1*G2 = width divides every stage's channels
        voter = HierarchicalVoter(fanins=(3, 2) if width == 6 else (5, 2), tie="first")
    model = _random_bnfree_model(name, voter, width)
    gains = [m.gain for _, m in binary_convs(model)]
    assert len(gains) == 16 and all((g - 1).abs().max() > 0.1 for g in gains)
    bit_model = convert_model(model)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, got = model(x), bit_model(x)
        # every binary layer's own output, not only the logits (a gain lost in one layer could hide)
        first_ref = model.blocks[0].conv(model.stem(x))
        first_got = bit_model.blocks[0].conv(bit_model.stem(x))
    assert torch.equal(first_ref, first_got)
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-5), (ref - got).abs().max()
    assert torch.equal(ref.argmax(1), got.argmax(1))
    assert torch.equal(ref, got)  # the same float32 operations in the same order: bit-identical


# ------------------------------------------------------------- binary 1x1 convolutions
@pytest.mark.parametrize("cin,cout", [(64, 128), (10, 7)])  # direct path (C % 64 == 0) and bit streams
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("voter", [None, "mv", "hmv"])
def test_binary_1x1_conv_converts_exactly(cin, cout, stride, voter):
    """A binary 1x1 convolution (a downsample shortcut's shape, padding 0) on the bit kernels."""
    if voter == "mv":
        voter = MajorityVoter(output_scale="alpha")
    elif voter == "hmv":
        voter = HierarchicalVoter(fanins=2, tie="neg")
    torch.manual_seed(3)
    conv = BinaryConv2d(cin, cout, kernel_size=1, stride=stride, padding=0, voter=voter)
    with torch.no_grad():
        conv.weight.normal_()
        conv.act.shift.normal_(0, 0.1)
    model = torch.nn.Sequential(conv, torch.nn.Identity()).eval()
    bit_model = convert_model(model)
    assert isinstance(bit_model[0], BitConv2d)
    # odd sizes: stride 2 drops the last row / column; cin even so ties (s == 0) occur in the voters
    x = torch.randn(3, cin, 7, 9, generator=torch.Generator().manual_seed(4))
    bare = convert_model(conv)  # the layer itself, not wrapped
    assert isinstance(bare, BitConv2d) and isinstance(conv, BinaryConv2d)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            ref, got = model(inp), bit_model(inp)
            assert torch.equal(bare(inp), got)
        assert ref.shape == got.shape == (3, cout, 4 if stride == 2 else 7, 5 if stride == 2 else 9)
        assert torch.equal(ref, got)


def test_convert_refuses_layers_without_a_bit_twin():
    """Real weights / activations, or a forward the converter does not know: an error naming the layer."""
    model = build_model("reactnet18", width=8, binary_weights=False)  # step 1 of two-step training
    with pytest.raises(ValueError, match=r"'blocks\.0\.conv'.*real weights or activations"):
        convert_model(model)

    class Doubled(BinaryConv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    net = torch.nn.Sequential(torch.nn.Identity(), Doubled(4, 4))
    with pytest.raises(TypeError, match=r"'1'.*Doubled"):
        convert_model(net)
