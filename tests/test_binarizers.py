import pytest
import torch

from mvlib.binarizers import (ApproxSign, ClippedSTESign, approxsign_forward_value, get_binarizer, sign_pm1,
                              surrogate_grad)


def test_sign_never_zero():
    x = torch.tensor([-2.0, -1e-8, 0.0, -0.0, 1e-8, 3.0])
    y = sign_pm1(x)
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    for name in ("ste", "approxsign"):
        assert (get_binarizer(name)(x) != 0).all()
        assert get_binarizer(name)(torch.zeros(5)).eq(1).all()


@pytest.mark.parametrize("name", ["ste", "approxsign"])
def test_gradient_closed_form(name):
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64, requires_grad=True)
    g = torch.randn(301, dtype=torch.float64)
    get_binarizer(name)(x).backward(g)
    if name == "ste":
        expect = g * (x.detach().abs() <= 1)
    else:
        expect = g * torch.clamp(2 - 2 * x.detach().abs(), min=0)
    assert torch.allclose(x.grad, expect)
    assert torch.allclose(surrogate_grad(name, x.detach()) * g, expect)


def test_approxsign_is_derivative_of_deck_F():
    # dF/dx of the deck's F equals the ApproxSign surrogate (checked by autograd on F itself)
    x = torch.linspace(-1.2, 1.2, 241, dtype=torch.float64, requires_grad=True)
    approxsign_forward_value(x).sum().backward()
    inside = x.detach().abs() < 1
    assert torch.allclose(x.grad[inside], (2 - 2 * x.detach().abs())[inside])
    assert approxsign_forward_value(torch.tensor([-3.0, 3.0])).tolist() == [-1, 1]


def test_unknown_binarizer():
    with pytest.raises(ValueError, match="unknown binarizer"):
        get_binarizer("tanh")
