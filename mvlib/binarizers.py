"""Binarizers: sign in the forward pass, a surrogate gradient in the backward pass.

Every estimator here is one ``torch.autograd.Function`` whose forward is the
project's sign (docs/SEMANTICS.md, Sign): ``sign(x) = +1 if x >= 0 else -1``. It never
returns 0 (``torch.sign(0) == 0`` is not used anywhere for binarization).

Estimators are chosen by name from :data:`BINARIZERS` (``get_binarizer``), so
a layer takes ``act_binarizer="approxsign"`` rather than a function object.
"""
from __future__ import annotations

from typing import Callable

import torch


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0`` else -1, in the dtype of ``x`` (no gradient)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


class _SignWithSurrogate(torch.autograd.Function):
    """``sign(x)`` forward; backward ``grad * surrogate_grad(surrogate, x)``, the one definition of each derivative.

    A subclass names its estimator in ``surrogate`` (a key of :func:`surrogate_grad`).
    """
    surrogate = ""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @classmethod
    def backward(cls, ctx, grad):
        (x,) = ctx.saved_tensors
        # x has grad's dtype (autograd casts the incoming gradient to the output's, which is x's)
        return grad * surrogate_grad(cls.surrogate, x)


class ClippedSTESign(_SignWithSurrogate):
    """Sign with the clipped straight-through estimator.

    Forward:  ``y = sign(x)`` (+1 for x >= 0, else -1).
    Backward: ``dy/dx = 1 if |x| <= 1 else 0`` (the derivative of
    ``clip(x, -1, 1)``, deck Fig. 5b).
    Paper: Hubara et al., "Binarized Neural Networks", NeurIPS 2016;
    Bengio et al., "Estimating or propagating gradients through stochastic
    neurons", 2013.
    """
    surrogate = "ste"


class ApproxSign(_SignWithSurrogate):
    """Sign with the ApproxSign (piecewise-polynomial) surrogate gradient.

    Forward:  ``y = sign(x)``.
    Backward: derivative of the deck's F(x) (``2x + x^2`` on [-1, 0),
    ``2x - x^2`` on [0, 1), ±1 outside):
    ``dF/dx = 2 - 2|x| if |x| < 1 else 0`` (a triangle of area 2, deck Fig. 5c).
    Paper: Liu et al., "Bi-Real Net", ECCV 2018 (also used by ReActNet,
    Liu et al., ECCV 2020).
    """
    surrogate = "approxsign"


class WeightSTESign(ClippedSTESign):
    """Weight binarizer: ``sign(W)`` forward, clipped STE ``1{|W| <= 1}`` backward.

    Same estimator as :class:`ClippedSTESign`; a separate name so that a model
    summary says which tensor is binarized by what (ReActNet, Liu et al. 2020).
    """


def approxsign_forward_value(x: torch.Tensor) -> torch.Tensor:
    """The deck's differentiable F(x) itself (for plots and gradient tests)."""
    xc = x.clamp(-1.0, 1.0)
    return 2 * xc - xc * xc.abs()


BINARIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ste": ClippedSTESign.apply,
    "approxsign": ApproxSign.apply,
}


def get_binarizer(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look an activation binarizer up by name (``ste`` or ``approxsign``)."""
    try:
        return BINARIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown binarizer {name!r}; choose one of {sorted(BINARIZERS)}"
        ) from None


def surrogate_grad(name: str, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Closed-form surrogate derivative of a named binarizer at ``x``, in ``x``'s dtype (``inplace``: overwrite ``x``).

    The one definition of each derivative: the binarizers' backward, the fused RSign
    (:mod:`mvlib.layers`, :mod:`mvlib.fused`) and the voters' estimators all call it.
    """
    if name == "ste":
        if inplace:
            return x.abs_().le_(1.0)  # le_ keeps x's float dtype: 1.0 / 0.0
        return (x.abs() <= 1).to(x.dtype)
    if name == "approxsign":
        if inplace:
            return x.abs_().mul_(-2.0).add_(2.0).clamp_(min=0.0)
        return torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)
    raise ValueError(f"unknown binarizer {name!r}; choose one of {sorted(BINARIZERS)}")
