"""A binary convolution's weight rebuilt from its sign bits and alphas, bit for bit in the forward.

:mod:`mvlib.artifact` stores a binary layer without its latent weights as
sign bits, alphas and a small *recipe* per output channel; this module finds
that recipe when an artifact is written (:func:`solve`) and turns it back into
a weight when it is read (:func:`rebuild`). Kept apart from the file format,
which only decides what is stored where.

Exactness
---------
A binary convolution reads its weight ``W`` only through ``w = latent_weight()``
(``W`` itself, or ``W_hat`` standardized for ``norm="bnfree"``): its forward
uses ``sign(w)`` (ties +1, docs/SEMANTICS.md) and ``alpha = mean|w|`` per output
channel, in every path of :class:`mvlib.layers.BinaryConv2d`. Any weight that
gives the same sign bits and bit-identical alphas gives the same forward, so
without ``keep_latent`` a channel's weight is rebuilt from its signs ``s`` as:

``uniform`` (plain convolutions: ``latent_weight()`` is ``W``)
    ``W = s * e`` with ``e = alpha``, except one entry ``s_j * x``. ``e`` alone
    rarely gives the alpha back (a sum of N equal floats skips values), but
    with one free entry it does, provably: every partial sum of the
    magnitudes is ``>= x``, so one step of ``x`` moves each rounded partial sum
    by at most one step of its own grid, whatever the summation order, and
    ``alpha(x)`` is monotone and takes every value of its range, which holds
    the target (``x -> 0`` gives about ``(N - 1) / N`` of it). A bisection on
    the bits of ``x`` finds it.
``centred`` (any other ``latent_weight()``, i.e. weight standardization)
    ``W = x * m * (1 + e * d)`` with ``m = +#neg`` where ``s = +1`` and
    ``-#pos`` where ``s = -1`` (mean about zero, so centring keeps the signs),
    ``d`` a fixed pattern in [0, 1). The standardization divides the scale out,
    so ``x`` moves alpha only through the ``eps`` of ``std + eps``; ``e`` shapes the
    ratio of mean |W - mean| to std. No monotone argument holds here: ``x`` is
    bisected and a window of neighbours searched for each ``e`` of a short
    list. A channel that none hits keeps its weight row in full (``fallback``).

What one layer leaves in the file (:func:`encode_layer`, read back by
:func:`decode_layer`): ``signs/<conv>`` (packed bits), ``alpha/<conv>``, and
either ``latent/<conv>`` (the float32 weights) or ``recipe/<conv>`` with the
``fallback/<conv>`` rows and their ``fallback_rows/<conv>`` indices.

Every reconstruction is checked when it is made (signs, alphas, then the
logits of a probe batch against the saved model, before the file is written)
and the signs and alphas again on every load (:func:`differing_channels`).
The arithmetic is the CPU's of the installed torch: a build that sums alpha in
another order fails the load check with a message, it never changes a result
silently.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .layers import BinaryConv2d

SPREADS = (0.0, 1 / 64, 1 / 16, 1 / 4, 1 / 2, 1.0)  # the e tried by the centred search, in order
WINDOW = 16  # neighbours of the bisection's x tried on each side
X_MAX = 1e6  # upper end of the bisection; far above any latent scale, far below float32 overflow of W**2


@torch.no_grad()
def forward_view(conv: BinaryConv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign bits, alpha): all that the forward reads of the weight, from the layer's own method."""
    w, alpha = conv.binary_weight()
    return w > 0, alpha


def construction(conv: BinaryConv2d) -> str:
    """``uniform`` where the layer binarizes its weight as it is, ``centred`` where it standardizes it first."""
    return "uniform" if type(conv).latent_weight is BinaryConv2d.latent_weight else "centred"


def _family(signs: torch.Tensor, e: torch.Tensor, kind: str):
    """``x -> weight`` of the module docstring's construction; channel ``o`` takes ``(x[o], e[o])``."""
    c, n = signs.shape[0], signs[0].numel()
    s = torch.where(signs.reshape(c, n), 1.0, -1.0)
    if kind == "uniform":
        base, last = s * e.view(-1, 1), s[:, -1]

        def weight(x):
            w = base.clone()
            w[:, -1] = last * x
            return w.view(signs.shape)
        return weight
    pos = signs.reshape(c, n).sum(1, keepdim=True).float()
    base = s * torch.where(s > 0, n - pos, pos) * (1.0 + e.view(-1, 1) * ((torch.arange(n) % 8).float() / 8))
    # a one-signed channel has no centred form: a constant, which standardizes to 0 (sign +1, alpha 0)
    base = torch.where((pos == 0) | (pos == n), s, base)
    return lambda x: (base * x.view(-1, 1)).view(signs.shape)


def rebuild(signs: torch.Tensor, recipe: torch.Tensor, kind: str) -> torch.Tensor:
    """The weight of a stored recipe ``[C, 2]`` (per channel ``(x, e)``) over the sign bits ``signs``."""
    return _family(signs, recipe[:, 1].contiguous(), kind)(recipe[:, 0].contiguous())


def _float_of(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def _bisect(alpha_of, target: torch.Tensor) -> torch.Tensor:
    """Per channel the bits of the smallest float x in (0, X_MAX] with ``alpha_of(x) >= target``."""
    lo = torch.zeros_like(target, dtype=torch.int64)  # x = +0.0, taken as below every target
    hi = torch.full_like(lo, int(torch.tensor(X_MAX).view(torch.int32)))
    while bool((open_ := hi - lo > 1).any()):
        mid = (lo + hi) // 2
        ge = alpha_of(_float_of(mid)) >= target
        hi, lo = torch.where(open_ & ge, mid, hi), torch.where(open_ & ~ge, mid, lo)
    return hi


@torch.no_grad()
def solve(conv: BinaryConv2d, signs: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(recipe [C, 2], solved [C])``: per channel an (x, e) whose weight gives ``signs`` and ``alpha`` exactly.

    Writes candidate weights into ``conv`` (a scratch copy). Channel results
    do not depend on one another: the reductions run per output channel in an
    order fixed by the shape.
    """
    kind = construction(conv)
    recipe = torch.zeros(len(alpha), 2)
    solved = torch.zeros(len(alpha), dtype=torch.bool)
    for spread in ((None,) if kind == "uniform" else SPREADS):
        e = alpha if spread is None else torch.full_like(alpha, spread)
        weight = _family(signs, e, kind)

        def view(x):
            conv.weight.copy_(weight(x))
            return forward_view(conv)

        start = _bisect(lambda x: view(x)[1], alpha)
        for k in range(2 * WINDOW + 1):  # offsets 0, +1, -1, +2, ...
            x = _float_of((start + (k + 1) // 2 * (1 if k % 2 else -1)).clamp(min=1))
            got_signs, got_alpha = view(x)
            hit = ~solved & (got_alpha == alpha) & (got_signs == signs).flatten(1).all(1)
            recipe[hit] = torch.stack([x, e], 1)[hit]
            solved |= hit
            if bool(solved.all()):
                return recipe, solved
    return recipe, solved


def differing_channels(conv: BinaryConv2d, signs: torch.Tensor, alpha: torch.Tensor) -> int:
    """How many output channels of ``conv`` binarize to other sign bits or another alpha than those stored."""
    got_signs, got_alpha = forward_view(conv)
    return int(((got_signs != signs).flatten(1).any(1) | (got_alpha != alpha)).sum())


@torch.no_grad()
def encode_layer(conv: BinaryConv2d, name: str, keep_latent: bool, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put layer ``name``'s entries into ``arrays`` (module docstring); returns what the meta keeps of it.

    ``conv`` is a scratch copy: the search writes candidate weights into it.
    """
    latent = conv.weight.detach().clone()
    signs, alpha = forward_view(conv)
    arrays[f"signs/{name}"], arrays[f"alpha/{name}"] = np.packbits(signs.numpy()), alpha.numpy()
    info: dict[str, Any] = {"shape": list(latent.shape), "construction": construction(conv)}
    if keep_latent:
        arrays[f"latent/{name}"] = latent.numpy()
        return info
    recipe, solved = solve(conv, signs, alpha)
    arrays[f"recipe/{name}"] = recipe.numpy()
    rows = (~solved).nonzero().flatten()
    if len(rows):
        arrays[f"fallback_rows/{name}"], arrays[f"fallback/{name}"] = rows.numpy(), latent[rows].numpy()
    info["fallback_rows"] = len(rows)
    return info


def decode_layer(arrays: dict[str, np.ndarray], name: str,
                 info: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, sign bits, alpha)`` of layer ``name`` from the entries :func:`encode_layer` wrote."""
    shape = info["shape"]
    bits = np.unpackbits(arrays[f"signs/{name}"], count=int(np.prod(shape)))
    signs = torch.from_numpy(bits.astype(bool)).view(shape)
    alpha = torch.from_numpy(arrays[f"alpha/{name}"])
    if f"latent/{name}" in arrays:
        return torch.from_numpy(arrays[f"latent/{name}"]), signs, alpha
    weight = rebuild(signs, torch.from_numpy(arrays[f"recipe/{name}"]), info["construction"])
    if f"fallback_rows/{name}" in arrays:  # the rows the search missed, as they were
        weight[torch.from_numpy(arrays[f"fallback_rows/{name}"])] = torch.from_numpy(arrays[f"fallback/{name}"])
    return weight, signs, alpha
