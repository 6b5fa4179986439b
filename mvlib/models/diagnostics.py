"""Signal diagnostics of the residual binary networks: binary branch against shortcut, per block.

Every residual (sub-)block of :mod:`mvlib.models` computes

    y = act(alpha_res * f(x / beta) + shortcut(x))

with ``f`` the binary branch (RSign -> binary convolution -> BN where there is
one; XNOR-Net's BN -> sign -> binary convolution) and ``alpha_res = beta = 1``
except for ``norm="bnfree"`` (:mod:`mvlib.models.norms`). Without BN a binary
convolution outputs ``alpha * s`` with ``alpha = mean|W|`` per output channel:
started from ReActNet's ``U(0, 1e-3)`` latent weights that is about
``5e-4 * sqrt(N)`` against a shortcut of order 1, so the network is its
shortcut path until the weights have grown. :func:`branch_ratios` makes that
visible: for every block it reports

    branch_rms   = rms(alpha_res * f(x / beta))      (what the block adds)
    shortcut_rms = rms(shortcut(x))                   (what it adds it to)
    ratio        = branch_rms / shortcut_rms
    ratio_unscaled = ratio / alpha_res               (the branch before NF-ResNets' alpha)

with ``rms(t) = sqrt(mean(t**2))`` over batch, channels and positions (the
mean is kept: a shortcut after RPReLU is not centred, and what matters is how
much of the sum each term is). A BN-Free block is *designed* to have
``ratio ~ alpha_res`` (0.2) at init ("Characterizing signal propagation to
close the performance gap in unnormalized ResNets", Brock, De & Smith 2021,
Sec. 3: ``f`` sees unit-variance input and is variance preserving), so
``ratio_unscaled ~ 1`` there; a block whose ratio is ~1e-2 contributes
nothing.

The numbers come from forward hooks on the modules that produce the two
terms, so the forward computed is exactly the model's own (fused paths
included); nothing in the models changes. ReActNet-A has two sub-blocks per
block (``.1`` the 3x3 one, ``.2`` the 1x1 one); the doubling 1x1 sub-block's
shortcut ``[out1, out1]`` has the rms of ``out1``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .reactneta import ReActABlock
from .resnet18 import BinaryBlock


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


class _Recorder:
    """Collects the rms of hooked outputs under (block name, term) keys."""

    def __init__(self):
        self.values: dict[tuple[str, str], float] = {}
        self.handles: list[Any] = []

    def output(self, module: nn.Module, key: tuple[str, str]) -> None:
        def hook(_mod, _inp, out):
            self.values[key] = _rms(out)
        self.handles.append(module.register_forward_hook(hook))

    def block_input(self, module: nn.Module, key: tuple[str, str]) -> None:
        def hook(_mod, inp):
            self.values[key] = _rms(inp[0])
        self.handles.append(module.register_forward_pre_hook(hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _attach(model: nn.Module, rec: _Recorder) -> list[tuple[str, float]]:
    """Hooks for every residual term; returns ``(sub-block name, alpha_res)`` in forward order."""
    blocks = []
    for name, mod in model.named_modules():
        if isinstance(mod, BinaryBlock):
            # ``norm`` runs on the conv output in every style (an Identity when there is no
            # post-conv BN), so its output is f(x / beta) before alpha_res.
            rec.output(mod.norm, (name, "branch"))
            rec.output(mod.shortcut, (name, "shortcut"))
            blocks.append((name, float(mod.alpha_res)))
        elif isinstance(mod, ReActABlock):
            n1, n2 = f"{name}.1", f"{name}.2"
            rec.output(mod.norm1, (n1, "branch"))
            if mod.stride == 2:  # AvgPool(x / beta); a stride-1 shortcut is the block input itself
                rec.output(mod.pool, (n1, "shortcut"))
            else:
                rec.block_input(mod, (n1, "shortcut"))
            rec.output(mod.act1, (n2, "shortcut"))  # out1; [out1, out1] has the same rms
            rec.output(mod.norm2, (n2, "branch"))
            blocks += [(n1, float(mod.alpha_res)), (n2, float(mod.alpha_res))]
    return blocks


@torch.no_grad()
def branch_ratios(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per residual (sub-)block, the rms of the binary branch and of the shortcut on batch ``x``.

    Runs ``model(x)`` once in the mode the model is in (``train()`` uses BN's
    batch statistics, ``eval()`` its running ones; a ``none`` / ``bnfree``
    model computes the same either way) and restores every buffer afterwards,
    so a diagnostic never moves BN's running statistics.

    Returns one dict per sub-block, in forward order: ``block`` (module name),
    ``branch_rms`` (after ``alpha_res``), ``shortcut_rms``, ``ratio``,
    ``alpha_res`` and ``ratio_unscaled = ratio / alpha_res`` (see the module
    docstring for the definitions).
    """
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rec = _Recorder()
    try:
        blocks = _attach(model, rec)
        if not blocks:
            raise ValueError(f"{type(model).__name__} has no residual binary block to diagnose")
        model(x)
    finally:
        rec.remove()
        named = dict(model.named_buffers())
        for n, b in buffers.items():
            named[n].copy_(b)
    rows = []
    for name, alpha in blocks:
        branch = alpha * rec.values[(name, "branch")]
        short = rec.values[(name, "shortcut")]
        ratio = branch / short if short > 0 else float("inf")
        rows.append({"block": name, "branch_rms": branch, "shortcut_rms": short, "ratio": ratio,
                     "alpha_res": alpha, "ratio_unscaled": ratio / alpha})
    return rows


def ratio_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Geometric mean, minimum and maximum of the blocks' ``ratio`` and ``ratio_unscaled``."""
    out = {}
    for key in ("ratio", "ratio_unscaled"):
        vals = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        out[f"{key}_gmean"] = float(vals.clamp(min=1e-300).log().mean().exp())
        out[f"{key}_min"], out[f"{key}_max"] = float(vals.min()), float(vals.max())
    return out


def set_shortcut_only(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every residual block to its shortcut path alone (``enabled=True``) or back.

    The shortcut-only network, ``y = act(shortcut(x))`` in every block, is the
    floor a network whose binary branches carry nothing falls to: stem,
    AvgPool / real 1x1 shortcut convolutions, RPReLUs and the classifier.
    A w/o-BN cell at or below it has learned nothing through its branches.
    The branches are skipped, not zeroed, so it trains at the shortcut path's
    cost; the binary convolutions' parameters stay (untrained) in the model.
    """
    n = 0
    for mod in model.modules():
        if isinstance(mod, (BinaryBlock, ReActABlock)):
            mod.branch_enabled = not enabled
            n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no residual binary block")
    return model
