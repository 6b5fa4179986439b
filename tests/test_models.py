import pytest
import torch

from mvlib.layers import BinaryConv2d, binary_convs
from mvlib.models import build_model, count_parameters


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
def test_parameter_count_width64(name):
    n = count_parameters(build_model(name, width=64))
    assert 11.1e6 < n < 11.3e6, n  # ResNet-18 at CIFAR scale: about 11.2 M


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
def test_shapes_and_structure(name):
    m = build_model(name, num_classes=100, width=8)
    convs = binary_convs(m)
    assert len(convs) == 16
    assert [c.stride for _, c in convs].count(2) == 3
    y = m(torch.randn(3, 3, 32, 32))
    assert y.shape == (3, 100)
    y.sum().backward()
    assert all(c.weight.grad is not None for _, c in convs)


def test_binary_conv_semantics():
    conv = BinaryConv2d(5, 7, 3, 1, 1, learnable_shift=False)
    conv.weight.data.normal_()
    x = torch.randn(2, 5, 6, 6)
    a = torch.where(x >= 0, 1.0, -1.0)
    w = torch.where(conv.weight >= 0, 1.0, -1.0)
    s = torch.nn.functional.conv2d(a, w, padding=1)  # zero-padded binarized input
    alpha = conv.weight.abs().mean((1, 2, 3))
    assert torch.equal(conv(x), s.round() * alpha.view(1, -1, 1, 1))
    assert torch.equal(conv.integer_sums(x), s.round())


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet50")
