import pytest
import torch

from mvlib.binarizers import (ApproxSign, ClippedSTESign, WeightSTESign, approxsign_forward_value, get_binarizer,
                              sign_pm1, surrogate_grad)


def test_sign_never_zero():
    x = torch.tensor([-2.0, -1e-8, 0.0, -0.0, 1e-8, 3.0])
    y = sign_pm1(x)
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    for name in ("ste", "approxsign"):
        assert (get_binarizer(name)(x) != 0).all()
        assert get_binarizer(name)(torch.zeros(5)).eq(1).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["ste", "approxsign"])
def test_gradient_closed_form(name, dtype):
    x = torch.linspace(-1.5, 1.5, 301, dtype=dtype, requires_grad=True)
    g = torch.randn(301, dtype=torch.float64).to(dtype)
    get_binarizer(name)(x).backward(g)
    if name == "ste":
        expect = g * (x.detach().abs() <= 1).to(dtype)
    else:
        expect = g * torch.clamp(2 - 2 * x.detach().abs(), min=0)
    assert x.grad.dtype == dtype and torch.equal(x.grad, expect)  # bit for bit, in the input's dtype
    assert torch.equal(g * surrogate_grad(name, x.detach()), expect)
    inplace = x.detach().clone()
    assert torch.equal(g * surrogate_grad(name, inplace, inplace=True), expect)


def test_weight_binarizer_has_the_clipped_ste_gradient():
    w = torch.linspace(-1.5, 1.5, 31, requires_grad=True)
    g = torch.randn(31)
    WeightSTESign.apply(w).backward(g)
    assert torch.equal(w.grad, g * surrogate_grad("ste", w.detach()))


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
