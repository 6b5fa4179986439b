"""Operations on trained models with voters: switch voters in and out.

``set_voter(model, spec, layers=...)`` replaces the output of the chosen binary
3x3 convolutions by a voter (or back to the integer popcount output with
``None``), touching no parameter and no statistic of the model.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch.nn as nn

from .layers import binary_convs
from .voters import build_voter

VoterSpec = dict[str, Any] | str | None


def voter_from_spec(spec: VoterSpec) -> nn.Module | None:
    """``None`` | ``"mv"`` | ``{"name": "hmv", "fanins": [4], "tie": "pos", ...}`` -> a fresh voter module."""
    if spec is None or isinstance(spec, str):
        return build_voter(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"a voter spec is None, a name or a dict with 'name', got {spec!r}")
    opts = {k: v for k, v in spec.items() if k != "name"}
    if "fanins" in opts and isinstance(opts["fanins"], list):
        opts["fanins"] = tuple(opts["fanins"])
    return build_voter(spec["name"], **opts)


def select_layers(model: nn.Module, layers: Iterable[int | str] | None = None):
    """Binary convolutions chosen by forward-order index or module name (all when None)."""
    convs = binary_convs(model)
    if layers is None:
        return convs
    names = {n: (n, m) for n, m in convs}
    out = []
    for key in layers:
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(convs) <= key < len(convs):
                raise IndexError(f"binary conv index {key} out of range (model has {len(convs)})")
            out.append(convs[key])
        elif key in names:
            out.append(names[key])
        else:
            raise KeyError(f"no binary convolution named {key!r}; names: {list(names)}")
    return out


def set_voter(model: nn.Module, spec: VoterSpec, layers: Iterable[int | str] | None = None) -> nn.Module:
    """Put a voter (a fresh module per layer) on the chosen binary convolutions; ``None`` removes it.

    Parameters, buffers and BN statistics of the model are not touched; the
    new voters are placed on the device of the layer's weight.
    """
    for _, conv in select_layers(model, layers):
        voter = voter_from_spec(spec)
        conv.voter = voter.to(conv.weight.device) if voter is not None else None
    return model


def voter_summary(model: nn.Module) -> list[str]:
    """One line per binary convolution: its name and its voter (or 'popcount')."""
    return [f"{n}: {m.voter!r}" if m.voter is not None else f"{n}: popcount" for n, m in binary_convs(model)]
