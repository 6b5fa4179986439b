"""Adaptive gradient clipping (AGC), unit-wise, in place.

"High-Performance Large-Scale Image Recognition Without Normalization"
(Brock, De, Smith & Simonyan, ICML 2021, Sec. 4, the NFNets paper), used for
BN-free binary networks by "BNN - BN = ?" (Chen et al., CVPRW 2021).

For every parameter tensor ``W`` with gradient ``G`` and each of its *units*
``i`` (an output unit: a row of a linear weight, an output channel of a
convolution weight, i.e. a slice along dim 0)::

    G_i <- G_i * min(1, lambda * max(||W_i||, eps) / ||G_i||)

so afterwards ``||G_i|| <= lambda * max(||W_i||, eps)`` (Frobenius norms),
with the direction of ``G_i`` unchanged. ``lambda`` is ``clip_factor``;
``eps = 1e-3`` (NFNets) keeps zero-initialized parameters from being frozen.
Tensors with at most one dimension (biases, gains stored as vectors, RSign
shifts, RPReLU parameters) are one unit each, as in the NFNets code
(``unitwise_norm``) and the BNN_NoBN code.

The final classifier is *not* clipped (NFNets: "we find that it is always
better to not clip the final linear layer"; BNN_NoBN skips every parameter
whose name contains ``fc``).

Defaults and sources: ``clip_factor`` has no default here (0 = off in the
configuration, key ``agc_clip``); the BNN_NoBN scripts use 0.02 for all their
runs (``--clip_value 0.02``; its ``train.py`` default is 0.04, l. 44); NFNets
use 0.01 at batch 4096 and larger values for smaller batches.

Which cells clip, in the official code (VITA-Group/BNN_NoBN at d277784): the
only published scripts (ImageNet ReActNet-A) pass ``--agc --clip_value 0.02``
to *every* variant, BN and w/o BN included, and to both training steps
(``script/imagenet_reactnet_A_{bn,none,bf}.sh`` l. 19-20 and 38-39);
``train.py`` clips between ``backward`` and ``step`` (l. 223-231, 282-290),
every parameter but those whose name contains ``fc`` (the classifier), after
which Adam steps. No CIFAR script is published. The configuration decides
which cells of notebook 06 clip.

Equivalence with their ``agc.py`` (l. 12-24): they replace ``G_i`` by
``G_i * max_norm / max(||G_i||, 1e-6)`` where ``||G_i|| >= max_norm`` and keep it
otherwise; here ``factor = max_norm / max(||G_i||, max_norm)``, the same
numbers since ``max_norm >= clip * eps > 1e-6`` for any clip above 1e-3.

How the caller excludes the classifier:

* pass the **model**: parameters are taken from ``model.named_parameters()``
  and a parameter is skipped when its name is one of ``exclude`` or starts
  with one of them followed by a dot (module prefixes). The default
  ``exclude=("classifier",)`` matches every model of :mod:`mvlib.models`,
  whose final linear layer is the module ``classifier``;
* or pass an **iterable of tensors** (already without the classifier): then
  all of them are clipped and ``exclude`` must be left at its default (names
  are unknown), or an iterable of ``(name, tensor)`` pairs, filtered by
  ``exclude`` as for a model.

The trainer calls it between ``loss.backward()`` and ``optimizer.step()``
when ``agc_clip > 0``.
"""
from __future__ import annotations

from typing import Iterable, Union

import torch
import torch.nn as nn

DEFAULT_EXCLUDE = ("classifier",)
AGC_EPS = 1e-3  # NFNets' eps

Params = Union[nn.Module, Iterable[torch.Tensor], Iterable[tuple[str, torch.Tensor]]]


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm per unit: over all dims but 0 (keepdim) for ndim >= 2, else the whole tensor."""
    if x.dim() <= 1:
        return x.norm()
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


def is_excluded(name: str, exclude: Iterable[str]) -> bool:
    """``name`` equals a prefix of ``exclude`` or lies under it (``prefix.``)."""
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _select(parameters: Params, exclude: Iterable[str]) -> list[torch.Tensor]:
    exclude = tuple(exclude)
    if isinstance(parameters, nn.Module):
        return [p for n, p in parameters.named_parameters() if not is_excluded(n, exclude)]
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    items = list(parameters)
    if items and isinstance(items[0], tuple):
        return [p for n, p in items if not is_excluded(n, exclude)]
    if exclude != DEFAULT_EXCLUDE and exclude:
        raise ValueError("exclude needs names: pass the model or (name, tensor) pairs, "
                         "or leave the classifier out of the tensors yourself")
    return items


@torch.no_grad()
def adaptive_grad_clip_(parameters_or_model: Params, clip_factor: float, eps: float = AGC_EPS,
                        exclude: Iterable[str] = DEFAULT_EXCLUDE) -> torch.Tensor:
    """Clip gradients unit-wise in place: ``||G_i|| <= clip_factor * max(||W_i||, eps)``.

    Args:
        parameters_or_model: a model (named parameters, filtered by
            ``exclude``), tensors, or ``(name, tensor)`` pairs.
        clip_factor: lambda (> 0). The configuration's ``agc_clip``.
        eps: lower bound on the weight norm (NFNets: 1e-3).
        exclude: module-name prefixes left unclipped (default: the classifier).

    Returns:
        the number of units whose gradient was scaled down, as a 0-d tensor
        (for logging; kept on the device so that clipping never waits for it).

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale
    Image Recognition Without Normalization", ICML 2021.
    """
    if not clip_factor > 0:
        raise ValueError(f"clip_factor must be > 0, got {clip_factor!r}")
    clipped = torch.zeros((), dtype=torch.long)
    for p in _select(parameters_or_model, exclude):
        if p.grad is None:
            continue
        g = p.grad
        max_norm = unitwise_norm(p.detach()).clamp(min=eps).mul_(clip_factor)
        g_norm = unitwise_norm(g)
        # max_norm / max(g_norm, max_norm): exactly 1 where the unit is within the
        # bound (gradient untouched), max_norm / g_norm where it is over; max_norm > 0
        factor = max_norm / torch.maximum(g_norm, max_norm)
        clipped = clipped.to(g.device) + (factor < 1.0).sum()
        g.mul_(factor.to(g.dtype))
    return clipped
