"""Operations on trained models with voters: switch voters in and out.

``set_voter(model, spec, layers=...)`` replaces the output of the chosen binary
3x3 convolutions by a voter (or back to the integer popcount output with
``None``), touching no parameter and no statistic of the model.

The operations a substitution study needs around it live here too:
``calibrate_matched_scale`` (the ``output_scale="matched"`` magnitudes),
``recalibrate_bn`` (BN statistics re-estimated under the voter, the "+recal"
rows) and ``voter_disagreement`` (hierarchical vs exact voter per layer on
real activations, with outer tie rates).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

from .binarizers import sign_pm1
from .layers import binary_convs
from .voter_spec import VoterSpec
from .voters import (block_partial_sums, build_voter, hierarchical_vote, majority_vote, normalize_fanins,
                     outer_tie_mask)

# What a voter may be given as: a VoterSpec, its parameters (the dict a run record keeps), a bare name (the
# threshold voter has no VoterSpec), or None for no voter.
VoterArg = VoterSpec | dict[str, Any] | str | None


def voter_from_spec(spec: VoterArg) -> nn.Module | None:
    """A VoterSpec, its parameters (``{"name": "hmv", "fanins": [4], "tie": "pos", ...}``), a name or None -> a
    fresh voter module (None for None)."""
    if isinstance(spec, VoterSpec):
        spec = spec.to_dict()
    if spec is None or isinstance(spec, str):
        return build_voter(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"a voter spec is None, a name or a dict with 'name', got {spec!r}")
    opts = {k: v for k, v in spec.items() if k != "name"}
    if "fanins" in opts and isinstance(opts["fanins"], list):
        opts["fanins"] = tuple(opts["fanins"])
    return build_voter(spec["name"], **opts)


LAYER_SETS = ("3x3", "1x1", "all")
# docs/SEMANTICS.md (Where the voter sits): the MV replaces each binary 3x3 convolution of the
# residual stages (the stem, the shortcut 1x1 convolutions and the classifier stay as they are).
DEFAULT_LAYERS = "3x3"

LayerSpec = Iterable[int | str] | str | None


def select_layers(model: nn.Module, layers: LayerSpec = None):
    """Binary convolutions chosen by a named set, by forward-order index or by module name.

    ``layers``:

    * ``None``: the default set, :data:`DEFAULT_LAYERS` = ``"3x3"``;
    * ``"3x3"`` / ``"1x1"``: every binary convolution with that kernel size
      (``"3x3"`` is the residual stages' convolutions of the ResNet-18s; a
      binary 1x1 shortcut convolution, ``build_model(..., binary_downsample=True)``,
      or ReActNet-A's pointwise convolutions are ``"1x1"``);
    * ``"all"``: every binary convolution (:func:`mvlib.layers.binary_convs`);
    * any other string: one module name;
    * an iterable of ints (indices into ``binary_convs(model)``, all binary
      convolutions in forward order) and/or module names.

    The result is in forward order for the named sets, in the given order otherwise.
    """
    convs = binary_convs(model)
    if layers is None:
        layers = DEFAULT_LAYERS
    if isinstance(layers, str):
        if layers == "all":
            return convs
        if layers in LAYER_SETS:
            k = int(layers[0])
            return [(n, m) for n, m in convs if m.kernel_size == k]
        layers = [layers]
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
            raise KeyError(f"no binary convolution named {key!r}; names: {list(names)}; sets: {LAYER_SETS}")
    return out


def set_voter(model: nn.Module, spec: VoterArg, layers: LayerSpec = None) -> nn.Module:
    """Put a voter (a fresh module per layer) on the chosen binary convolutions; ``None`` removes it.

    ``layers`` as in :func:`select_layers`: by default the binary 3x3
    convolutions, ``"all"`` adds binary 1x1 ones. ``set_voter(model, None)``
    (no layers given) removes the voters of *every* binary convolution, so that
    no voter put on a 1x1 layer survives a reset.

    Parameters, buffers and BN statistics of the model are not touched; the
    new voters are placed on the device of the layer's weight.

    A selection that matches no layer is an error (``ValueError``): a voter put
    on nothing would leave the network as it was without a word, e.g. the
    default ``"3x3"`` set on a lone 1x1 convolution. Only the bare reset
    ``set_voter(model, None)`` accepts a model without binary convolutions.
    """
    reset_all = spec is None and layers is None
    chosen = select_layers(model, "all" if reset_all else layers)
    if not chosen and not reset_all:
        kinds = sorted({f"{m.kernel_size}x{m.kernel_size}" for _, m in binary_convs(model)})
        raise ValueError(f"set_voter: layers={layers!r} selects no binary convolution of this "
                         f"{type(model).__name__} (its binary convolutions: {kinds or 'none'}; sets: {LAYER_SETS})")
    for _, conv in chosen:
        voter = voter_from_spec(spec)
        conv.voter = voter.to(conv.weight.device) if voter is not None else None
    return model


@contextlib.contextmanager
def voters_kept(model: nn.Module) -> Iterator[dict[str, nn.Module | None]]:
    """Yield the binary convolutions' voters by name; put them all back on exit, whatever the block changed."""
    saved = {n: m.voter for n, m in binary_convs(model)}
    try:
        yield saved
    finally:
        for n, m in binary_convs(model):
            m.voter = saved[n]


@contextlib.contextmanager
def popcount_network(model: nn.Module) -> Iterator[dict[str, nn.Module | None]]:
    """The model with every voter switched off (the trained popcount network); the voters come back on exit.

    Calibrations measure the float convolutions on the activations the
    network was trained on, which a voter upstream would change.
    """
    with voters_kept(model) as saved:
        for _, m in binary_convs(model):
            m.voter = None
        yield saved


def voter_summary(model: nn.Module) -> list[str]:
    """One line per binary convolution: its name and its voter (or 'popcount')."""
    return [f"{n}: {m.voter!r}" if m.voter is not None else f"{n}: popcount" for n, m in binary_convs(model)]


# --------------------------------------------------------------------------
# Calibration on images: matched output scale, BN statistics
# --------------------------------------------------------------------------
def _batches(loader, batches: int):
    """The first ``batches`` batches of ``loader`` (all when 0), images only."""
    for i, (x, _) in enumerate(loader):
        if batches and i >= batches:
            return
        yield x


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _hooked_eval_passes(model: nn.Module, hooks, loader, batches: int) -> None:
    """Forward ``batches`` batches in eval mode with ``hooks`` ((module, fn) pairs) attached.

    The hooks are removed and the model's train/eval mode restored afterwards,
    also when a pass raises.
    """
    was_training = model.training
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        model.eval()
        dev = _model_device(model)
        for x in _batches(loader, batches):
            model(x.to(dev))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def calibrate_matched_scale(model: nn.Module, loader, batches: int = 4) -> dict[str, torch.Tensor]:
    """Set ``matched_scale`` of every voter with ``output_scale="matched"``; return the scales by layer name.

    The matched magnitude of output channel c is the mean of ``|alpha_c * s|``
    of the *float* (popcount) convolution, over images, positions and the
    first ``batches`` batches of ``loader``. It is measured with every voter
    of the model switched off, so each layer sees the activations the trained
    network was trained on (a voter upstream would change them); the voters
    are put back afterwards. The voter's ±1 output times this magnitude then
    has the same mean |output| per channel as the convolution it replaces, so
    the following BN (statistics unchanged) sees the scale it was fitted to.
    """
    convs = [(n, m) for n, m in binary_convs(model)
             if m.voter is not None and getattr(m.voter, "output_scale", None) == "matched"]
    if not convs:
        return {}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def fn(_mod, _inp, out):
            sums[name] = sums.get(name, 0) + out.abs().sum((0, 2, 3)).double()
            counts[name] = counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
        return fn

    with popcount_network(model):
        _hooked_eval_passes(model, [(m, hook(n)) for n, m in convs], loader, batches)
    scales = {}
    for n, m in convs:
        scale = (sums[n] / counts[n]).float().to(m.weight.device)
        m.voter.matched_scale = scale
        scales[n] = scale
    return scales


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int = 20) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches`` training batches; no gradient step.

    Running mean/var are reset and replaced by the cumulative (equal-weight)
    average over the batches (``momentum=None``), with the model in training
    mode so each BN normalizes by batch statistics exactly as during training,
    under whatever voters the model holds. No parameter changes; the model is
    returned in eval mode. This is the only thing "+recal" rows change.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    dev = _model_device(model)
    try:
        for x in _batches(loader, batches):
            model(x.to(dev))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return model


# --------------------------------------------------------------------------
# Hierarchical vs exact voter on real activations
# --------------------------------------------------------------------------
@torch.no_grad()
def voter_disagreement(model: nn.Module, loader, fanins: int | Sequence[int], tie: str | Sequence[str] = "pos",
                       batches: int = 2, layers: Iterable[int | str] | None = None) -> list[dict[str, Any]]:
    """Per binary convolution: how often a hierarchical voter's output differs from the exact voter's.

    Forward hooks take each layer's real input as the model computes it (the
    model is run as it is: pass the popcount baseline to measure on the
    trained network's own activations), binarize it with the layer's own
    activation function and weights, and compute the contiguous-block partial
    sums once (:func:`mvlib.voters.block_partial_sums`). From them: the exact
    vote ``sign(sum s_m)``, and per tie rule the hierarchical vote and the
    outer tie mask (for nested fan-ins the outer level's children are resolved
    with that rule, so a row's ``outer_tie_rate`` is its own rule's).
    Layers whose input channels ``G1*G2*...`` does not divide are reported
    with ``None`` rates. Rates are fractions of all outputs (images x channels x positions).
    ``tie`` may be a list of rules: one pass, one row per layer and rule.
    """
    fs = normalize_fanins(fanins)
    m_blocks = math.prod(fs)
    ties = [tie] if isinstance(tie, str) else list(tie)
    chosen = select_layers(model, layers)
    stats = {(n, t): {"layer": n, "in_channels": c.in_channels, "fanin": c.in_channels * c.kernel_size ** 2,
                      "fanins": "x".join(map(str, fs)), "tie": t, "n": 0, "disagree": 0, "outer_tie": 0,
                      "exact_tie": 0} for n, c in chosen for t in ties}

    def hook(name):
        def fn(conv, inp, _out):
            if conv.in_channels % m_blocks:
                return
            a = conv.act(inp[0])
            w = sign_pm1(conv.latent_weight())
            bs = block_partial_sums(a, w, m_blocks, conv.stride, conv.padding)
            total = bs.sum(-1)
            exact = majority_vote(total)
            exact_ties = (total == 0).sum().item()
            for t in ties:
                st = stats[(name, t)]
                st["n"] += exact.numel()
                st["disagree"] += (exact != hierarchical_vote(bs, fs, t)).sum().item()
                st["outer_tie"] += outer_tie_mask(bs, fs, t).sum().item()
                st["exact_tie"] += exact_ties
        return fn

    _hooked_eval_passes(model, [(c, hook(n)) for n, c in chosen], loader, batches)
    rows = []
    for st in stats.values():
        n = st.pop("n")
        for k in ("disagree", "outer_tie", "exact_tie"):
            st[k + "_rate"] = st.pop(k) / n if n else None
        st["block_fanin"] = st["fanin"] // m_blocks if st["in_channels"] % m_blocks == 0 else None
        rows.append(st)
    return rows
