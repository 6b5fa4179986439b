"""A plain, unfused ReActNet-18 / Bi-RealNet-18, written the way the official code is.

This is the baseline of :mod:`mvlib.bench.train_throughput`: the same model
as :func:`mvlib.models.build_model` (same layers, same parameters, same
forward values and surrogate gradients), but built from the small separate
modules of the official ReActNet (Liu et al., ECCV 2020) and "BNN - BN = ?"
(Chen et al., CVPRW 2021) CIFAR code, as both papers describe them:

* ``LearnableBias``: ``x + b`` as its own module (ReActNet's RSign shift and
  the two shifts around the PReLU);
* ``BinaryActivation``: the ApproxSign of Bi-Real Net written as its
  piecewise polynomial ``F(x)`` (``-1``; ``x^2 + 2x``; ``-x^2 + 2x``; ``1``)
  built from three comparison masks, with the forward value swapped in by
  ``sign.detach() - F.detach() + F`` so that autograd differentiates ``F``;
* ``HardBinaryConv``: ``alpha`` by nested means of ``|W|`` over the kernel
  width, height and input channels (detached), and the clipped STE by
  ``sign(W).detach() - clamp(W).detach() + clamp(W)``;
* RPReLU as ``LearnableBias -> nn.PReLU -> LearnableBias``.

Departures from the official code are only the ones docs/SEMANTICS.md requires of
*this* model: sign ties give +1 (``torch.sign(0) == 0`` is not used), and
``alpha`` multiplies the rounded integer sum after the convolution instead of
being folded into the weights. ``official_quirks=True`` restores the official
code's ``torch.sign`` and folded ``alpha`` (no rounding) -- a slightly
different model, kept only so that the benchmark can also time the code
exactly as published.

:func:`reference_from` builds the reference for an mvlib model and copies its
parameters and BN buffers, so both compute the same function.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LearnableBias", "BinaryActivation", "HardBinaryConv", "RefBlock", "RefResNet18",
           "reference_from"]


def _sign(x: torch.Tensor, quirks: bool) -> torch.Tensor:
    """+1 for x >= 0 else -1 (the project's sign); ``torch.sign`` under official quirks."""
    if quirks:
        return torch.sign(x)
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class LearnableBias(nn.Module):
    """``x + b`` with a learnable per-channel ``b`` of shape [1, C, 1, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x + self.bias.expand_as(x)


class BinaryActivation(nn.Module):
    """Sign forward; ApproxSign backward through the explicit polynomial F(x)."""

    def __init__(self, quirks: bool = False):
        super().__init__()
        self.quirks = quirks

    def forward(self, x):
        hard = _sign(x, self.quirks)
        below_m1 = (x < -1).float()
        below_0 = (x < 0).float()
        below_p1 = (x < 1).float()
        f1 = -1 * below_m1 + (x * x + 2 * x) * (1 - below_m1)
        f2 = f1 * below_0 + (-x * x + 2 * x) * (1 - below_0)
        f3 = f2 * below_p1 + 1 * (1 - below_p1)
        return hard.detach() - f3.detach() + f3


class HardBinaryConv(nn.Module):
    """Binary convolution with ``alpha = mean|W|`` (nested means) and the clamp-STE trick."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 quirks: bool = False):
        super().__init__()
        self.stride, self.padding, self.quirks = stride, padding, quirks
        self.weight = nn.Parameter(torch.rand(cout, cin, kernel_size, kernel_size) * 1e-3)

    def forward(self, x):
        w = self.weight
        alpha = torch.mean(torch.mean(torch.mean(abs(w), dim=3, keepdim=True), dim=2, keepdim=True),
                           dim=1, keepdim=True).detach()
        clipped = torch.clamp(w, -1.0, 1.0)
        if self.quirks:  # the published code: alpha folded into the weights, no rounding
            bw = (alpha * torch.sign(w)).detach() - clipped.detach() + clipped
            return F.conv2d(x, bw, stride=self.stride, padding=self.padding)
        bw = _sign(w, False).detach() - clipped.detach() + clipped
        s = F.conv2d(x, bw, stride=self.stride, padding=self.padding)
        s = s + (torch.round(s) - s).detach()  # integer rounding, identity gradient
        return s * alpha.view(1, -1, 1, 1)


class RefBlock(nn.Module):
    """One single-conv block of the official CIFAR ReActNet-18 / Bi-RealNet-18."""

    def __init__(self, cin: int, cout: int, stride: int, style: str, quirks: bool):
        super().__init__()
        self.style = style
        self.move0 = LearnableBias(cin) if style == "reactnet" else nn.Identity()
        self.binary_activation = BinaryActivation(quirks)
        self.binary_conv = HardBinaryConv(cin, cout, 3, stride, 1, quirks)
        self.bn1 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.AvgPool2d(2) if stride != 1 else nn.Identity(),
                                            nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout))
        if style == "reactnet":
            self.move1, self.prelu, self.move2 = LearnableBias(cout), nn.PReLU(cout), LearnableBias(cout)

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.binary_conv(self.binary_activation(self.move0(x))))
        out = out + residual
        if self.style == "reactnet":
            out = self.move2(self.prelu(self.move1(out)))
        return out


class RefResNet18(nn.Module):
    """CIFAR stem (3x3, stride 1, no max-pool), 16 single-conv blocks, avg-pool, linear."""

    def __init__(self, style: str = "reactnet", num_classes: int = 10, width: int = 64,
                 official_quirks: bool = False):
        super().__init__()
        if style not in ("reactnet", "birealnet"):
            raise ValueError(f"the unfused reference covers reactnet and birealnet, not {style!r}")
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for i in range(4):
                blocks.append(RefBlock(cin, width * mult, 2 if (stage and not i) else 1, style,
                                       official_quirks))
                cin = width * mult
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    dst.load_state_dict(src.state_dict())


@torch.no_grad()
def reference_from(model: nn.Module, official_quirks: bool = False) -> RefResNet18:
    """The unfused reference of an mvlib ``reactnet18`` / ``birealnet18`` with its parameters.

    ``RPReLU.shift_in`` is subtracted in mvlib and added by ``move1`` here, so
    it is copied negated (``x - g == x + (-g)`` exactly in floating point).
    """
    style = getattr(model, "style", None)
    if style not in ("reactnet", "birealnet") or getattr(model, "norm_kind", "bn") != "bn":
        raise ValueError("reference_from needs a reactnet18 / birealnet18 with norm='bn'")
    ref = RefResNet18(style, model.classifier.out_features, model.width, official_quirks)
    ref.conv1.weight.copy_(model.stem[0].weight)
    _copy_bn(ref.bn1, model.stem[1])
    for rb, mb in zip(ref.layers, model.blocks):
        if style == "reactnet":
            rb.move0.bias.copy_(mb.conv.act.shift.view(1, -1, 1, 1))
            rb.move1.bias.copy_(-mb.act.shift_in.view(1, -1, 1, 1))
            rb.prelu.weight.copy_(mb.act.slope)
            rb.move2.bias.copy_(mb.act.shift_out.view(1, -1, 1, 1))
        rb.binary_conv.weight.copy_(mb.conv.weight)
        _copy_bn(rb.bn1, mb.norm)
        if rb.downsample is not None:
            rb.downsample[1].weight.copy_(mb.shortcut.body[1].weight)
            _copy_bn(rb.downsample[2], mb.shortcut.body[2])
    ref.fc.load_state_dict(model.classifier.state_dict())
    return ref.to(next(model.parameters()).device)


def reference_grads(model: nn.Module, ref: RefResNet18) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, mvlib grad, reference grad)`` for every mvlib parameter, in the mvlib layout."""
    pairs = [("stem.0.weight", model.stem[0].weight, ref.conv1.weight)]
    pairs += [(f"stem.1.{k}", getattr(model.stem[1], k), getattr(ref.bn1, k)) for k in ("weight", "bias")]
    out = [(n, a.grad, b.grad) for n, a, b in pairs]
    for i, (mb, rb) in enumerate(zip(model.blocks, ref.layers)):
        p = f"blocks.{i}."
        out.append((p + "conv.weight", mb.conv.weight.grad, rb.binary_conv.weight.grad))
        for k in ("weight", "bias"):
            out.append((p + f"norm.{k}", getattr(mb.norm, k).grad, getattr(rb.bn1, k).grad))
        if rb.downsample is not None:
            out.append((p + "shortcut.body.1.weight", mb.shortcut.body[1].weight.grad,
                        rb.downsample[1].weight.grad))
            for k in ("weight", "bias"):
                out.append((p + f"shortcut.body.2.{k}", getattr(mb.shortcut.body[2], k).grad,
                            getattr(rb.downsample[2], k).grad))
        if mb.conv.act.shift is not None:
            out.append((p + "conv.act.shift", mb.conv.act.shift.grad, rb.move0.bias.grad.flatten()))
            out.append((p + "act.shift_in", mb.act.shift_in.grad, -rb.move1.bias.grad.flatten()))
            out.append((p + "act.slope", mb.act.slope.grad, rb.prelu.weight.grad))
            out.append((p + "act.shift_out", mb.act.shift_out.grad, rb.move2.bias.grad.flatten()))
    out += [(f"classifier.{k}", getattr(model.classifier, k).grad, getattr(ref.fc, k).grad)
            for k in ("weight", "bias")]
    return out
