"""Trained networks as committed artifacts: one compact, exact, pickle-free file per network.

A network that took hours of CPU time to train is stored once, in the
repository, and used by later code only after :func:`verify_artifact` has
shown that the current code reproduces its predictions on a fixed split.

Format
------
An ``.npz`` file (a zip of ``.npy`` arrays; ``numpy.load(path,
allow_pickle=False)`` reads every entry, nothing in it is a pickle)::

    meta                 uint8   UTF-8 JSON: format, version, arch, record, val_digest
                                 (without the predictions), the binary layers and how each is stored
    state/<key>          every state_dict entry except the binary layers' weights, in its own
                         dtype (float32 for parameters and statistics, int64 for BN's counter)
    signs/<conv>         uint8   np.packbits of sign(latent_weight()) >= 0 over [C_out, C_in, k, k]
    alpha/<conv>         float32 [C_out]: alpha = mean|latent_weight()|, as the forward computes it
    recipe/<conv>        float32 [C_out, 2]: the reconstruction's (x, e) per output channel
    fallback/<conv>      float32 weight rows the reconstruction does not reproduce (rare, bnfree only),
    fallback_rows/<conv> int64   and their output channels
    latent/<conv>        float32 [C_out, C_in, k, k]: the latent weights (``keep_latent=True`` only)
    val_predictions      uint8 (uint16 beyond 256 classes): argmax per image of the recorded split

``<conv>`` is every :class:`mvlib.layers.BinaryConv2d` whose ``binary_weights``
is on. Everything else (stem, real shortcuts, BN, RSign shifts, RPReLU, gains,
classifier, a ``"weights"`` shortcut's :class:`BinaryWeightConv2d`) is stored as is.
The model comes back from ``arch`` through :func:`mvlib.models.build_model`.

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

Every reconstruction is checked when it is made (signs, alphas, then the
logits of a probe batch against the saved model, before the file is written)
and the signs and alphas again on every load. The arithmetic is the CPU's of
the installed torch: a build that sums alpha in another order fails the load
check with a message, it never changes a result silently.

Choices: npz rather than ``torch.save`` (no pickle, readable without torch);
entries uncompressed (neither packed bits nor float32 weights compress much)
and with a fixed zip timestamp, so the same network always gives the same bytes.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .files import write_atomic
from .layers import BinaryConv2d, binary_convs
from .models import TEACHERS, build_model, build_teacher

FORMAT, VERSION = "mvlib-artifact", 1
ARCH_KEYS = ("model", "width", "num_classes", "options")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal networks give equal files
_SPREADS = (0.0, 1 / 64, 1 / 16, 1 / 4, 1 / 2, 1.0)  # the e tried by the centred search, in order
_WINDOW = 16  # neighbours of the bisection's x tried on each side
_X_MAX = 1e6  # upper end of the bisection; far above any latent scale, far below float32 overflow of W**2
_PROBE_SIZE = 32  # side of the save-time check's random images (CIFAR)


class ArtifactError(ValueError):
    """An artifact that cannot be written or read as asked (wrong arch, foreign file, other split)."""


class ArtifactMismatch(ArtifactError):
    """The current code does not reproduce an artifact's recorded predictions."""


@dataclass
class VerifyResult:
    """What :func:`verify_artifact` found; ``model`` is the reloaded network, usable when ``ok``."""

    path: str
    ok: bool
    n: int
    recorded_top1: float
    top1: float
    differing: int
    message: str
    model: nn.Module | None = field(default=None, repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


# ------------------------------------------------------------------ digest
def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()


@torch.no_grad()
def prediction_digest(model: nn.Module, loader, device: str | torch.device | None = None) -> dict[str, Any]:
    """Argmax predictions of ``model`` (eval mode) over ``loader``'s ``(x, y)`` batches, in loader order.

    Returns ``n``, ``top1`` (percent), ``sha256`` and ``labels_sha256`` (of the
    predictions / labels as little-endian int64) and ``predictions`` (uint8 or
    uint16). Pass it to :func:`save_artifact` as ``val_digest``; keys added by
    the caller (a split's identity, say) are recorded with it.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for x, y in loader:
            preds.append(model(x.to(device)).argmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not preds:
        raise ArtifactError("the loader gave no batch: a digest needs at least one image")
    p, y = torch.cat(preds).numpy().astype(np.int64), torch.cat(labels).numpy().astype(np.int64)
    return {"n": len(p), "top1": 100.0 * float((p == y).sum()) / len(p), "sha256": _sha256(p),
            "labels_sha256": _sha256(y), "predictions": p.astype(np.uint8 if p.max() < 256 else np.uint16)}


# ------------------------------------------------------------------ binary layers and their reconstruction
def _binary_layers(model: nn.Module) -> dict[str, BinaryConv2d]:
    return {name: conv for name, conv in binary_convs(model) if conv.binary_weights}


@torch.no_grad()
def _forward_view(conv: BinaryConv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign bits, alpha): all that the forward reads of the weight, from the layer's own method."""
    w, alpha = conv.binary_weight()
    return w > 0, alpha


def _construction(conv: BinaryConv2d) -> str:
    return "uniform" if type(conv).latent_weight is BinaryConv2d.latent_weight else "centred"


def _family(signs: torch.Tensor, e: torch.Tensor, construction: str):
    """``x -> weight`` of the module docstring's construction; channel ``o`` takes ``(x[o], e[o])``."""
    c, n = signs.shape[0], signs[0].numel()
    s = torch.where(signs.reshape(c, n), 1.0, -1.0)
    if construction == "uniform":
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


def _float_of(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def _bisect(alpha_of, target: torch.Tensor) -> torch.Tensor:
    """Per channel the bits of the smallest float x in (0, _X_MAX] with ``alpha_of(x) >= target``."""
    lo = torch.zeros_like(target, dtype=torch.int64)  # x = +0.0, taken as below every target
    hi = torch.full_like(lo, int(torch.tensor(_X_MAX).view(torch.int32)))
    while bool((open_ := hi - lo > 1).any()):
        mid = (lo + hi) // 2
        ge = alpha_of(_float_of(mid)) >= target
        hi, lo = torch.where(open_ & ge, mid, hi), torch.where(open_ & ~ge, mid, lo)
    return hi


@torch.no_grad()
def _solve(conv: BinaryConv2d, signs: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(recipe [C, 2], solved [C])``: per channel an (x, e) whose weight gives ``signs`` and ``alpha`` exactly.

    Writes candidate weights into ``conv`` (a scratch copy). Channel results
    do not depend on one another: the reductions run per output channel in an
    order fixed by the shape.
    """
    kind = _construction(conv)
    recipe = torch.zeros(len(alpha), 2)
    solved = torch.zeros(len(alpha), dtype=torch.bool)
    for spread in ((None,) if kind == "uniform" else _SPREADS):
        e = alpha if spread is None else torch.full_like(alpha, spread)
        weight = _family(signs, e, kind)

        def view(x):
            conv.weight.copy_(weight(x))
            return _forward_view(conv)

        start = _bisect(lambda x: view(x)[1], alpha)
        for k in range(2 * _WINDOW + 1):  # offsets 0, +1, -1, +2, ...
            x = _float_of((start + (k + 1) // 2 * (1 if k % 2 else -1)).clamp(min=1))
            got_signs, got_alpha = view(x)
            hit = ~solved & (got_alpha == alpha) & (got_signs == signs).flatten(1).all(1)
            recipe[hit] = torch.stack([x, e], 1)[hit]
            solved |= hit
            if bool(solved.all()):
                return recipe, solved
    return recipe, solved


# ------------------------------------------------------------------ file
def _check_arch(arch: dict[str, Any]) -> dict[str, Any]:
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown or not {"model", "width", "num_classes"} <= set(arch):
        raise ArtifactError(f"arch needs the keys model, width, num_classes (options optional); got {sorted(arch)}")
    arch = {"model": arch["model"], "width": arch["width"], "num_classes": arch["num_classes"],
            "options": dict(arch.get("options") or {})}
    _json(arch, "arch")
    return arch


def _json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{what} must be plain JSON (numbers, strings, lists, dicts): {e}") from None


def _build(arch: dict[str, Any]) -> nn.Module:
    if arch["model"] in TEACHERS:
        return build_teacher(arch["model"], arch["num_classes"], arch["width"], **arch["options"])
    return build_model(arch["model"], num_classes=arch["num_classes"], width=arch["width"], **arch["options"])


def _to_bytes(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        meta_bytes = np.frombuffer(_json(meta, "val_digest").encode(), dtype=np.uint8)  # arch, record checked before
        for name, a in {"meta": meta_bytes, **arrays}.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, entry.getvalue())
    return buf.getvalue()


def _read(source, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(source, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as e:  # a missing file, a truncated zip, a pickled entry, an npz of something else
        raise ArtifactError(f"{name} is not a readable artifact ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ArtifactError(f"{name} is {meta.get('format')!r} version {meta.get('version')!r}, "
                            f"not {FORMAT!r} version {VERSION}")
    return meta, arrays


def _restore(meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> nn.Module:
    """The model of ``meta["arch"]`` with every tensor of the file, its signs and alphas checked."""
    model = _build(meta["arch"])
    layers = _binary_layers(model)
    if set(layers) != set(meta["layers"]):
        raise ArtifactError(f"{name}: the binary layers of {meta['arch']} built now are not those stored "
                            f"({sorted(set(layers) ^ set(meta['layers']))[:4]} differ)")
    state = {k[len("state/"):]: torch.from_numpy(a) for k, a in arrays.items() if k.startswith("state/")}
    views = {}
    for conv_name, info in meta["layers"].items():
        shape = info["shape"]
        bits = np.unpackbits(arrays[f"signs/{conv_name}"], count=int(np.prod(shape)))
        signs = torch.from_numpy(bits.astype(bool)).view(shape)
        views[conv_name] = signs, torch.from_numpy(arrays[f"alpha/{conv_name}"])
        if f"latent/{conv_name}" in arrays:
            w = torch.from_numpy(arrays[f"latent/{conv_name}"])
        else:
            recipe = torch.from_numpy(arrays[f"recipe/{conv_name}"])
            w = _family(signs, recipe[:, 1].contiguous(), info["construction"])(recipe[:, 0].contiguous())
            if f"fallback_rows/{conv_name}" in arrays:  # the rows the search missed, as they were
                rows = torch.from_numpy(arrays[f"fallback_rows/{conv_name}"])
                w[rows] = torch.from_numpy(arrays[f"fallback/{conv_name}"])
        state[f"{conv_name}.weight"] = w
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{name} does not fit the model built from {meta['arch']}: {e}") from None
    for conv_name, (signs, alpha) in views.items():
        got_signs, got_alpha = _forward_view(layers[conv_name])
        bad = int(((got_signs != signs).flatten(1).any(1) | (got_alpha != alpha)).sum())
        if bad:
            raise ArtifactError(f"{name}: layer {conv_name} binarizes differently now in {bad} output channels "
                                f"(signs or alpha; written with torch {meta.get('torch')}, read with "
                                f"{torch.__version__})")
    return model.eval()


# ------------------------------------------------------------------ public
def save_artifact(model: nn.Module, path: str | Path, *, arch: dict[str, Any], keep_latent: bool,
                  record: dict[str, Any], val_digest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` to ``path`` as one artifact (module docstring); returns its meta.

    ``arch``: ``{"model", "width", "num_classes", "options"}`` such that
    ``build_model(model, num_classes=, width=, **options)`` (or
    ``build_teacher``) builds this network, flags such as ``binary_weights``
    included. ``keep_latent``: store the binary layers' latent weights (float32)
    too, for a later step that trains on from them. ``record``: JSON, stored
    as given. ``val_digest``: :func:`prediction_digest` of ``model`` on the
    split that :func:`verify_artifact` will be given. The file is written only
    after the model rebuilt from its bytes has given this model's logits
    exactly on a probe batch; otherwise :class:`ArtifactError`.
    """
    arch = _check_arch(arch)
    _json(record, "record")
    source = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    state = source.state_dict()
    scratch = _build(arch)  # the search writes candidate weights here, never into the caller's model
    try:
        scratch.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"the model is not the network that arch {arch} builds: {e}") from None
    binary = _binary_layers(scratch)
    arrays: dict[str, np.ndarray] = {f"state/{k}": v.detach().numpy() for k, v in state.items()
                                     if k.removesuffix(".weight") not in binary}
    layers: dict[str, dict[str, Any]] = {}
    for name, conv in binary.items():
        latent = conv.weight.detach().clone()
        signs, alpha = _forward_view(conv)
        arrays[f"signs/{name}"], arrays[f"alpha/{name}"] = np.packbits(signs.numpy()), alpha.numpy()
        layers[name] = {"shape": list(latent.shape), "construction": _construction(conv)}
        if keep_latent:
            arrays[f"latent/{name}"] = latent.numpy()
            continue
        recipe, solved = _solve(conv, signs, alpha)
        arrays[f"recipe/{name}"] = recipe.numpy()
        rows = (~solved).nonzero().flatten()
        if len(rows):
            arrays[f"fallback_rows/{name}"], arrays[f"fallback/{name}"] = rows.numpy(), latent[rows].numpy()
        layers[name]["fallback_rows"] = len(rows)
    meta = {"format": FORMAT, "version": VERSION, "arch": arch, "record": record, "keep_latent": bool(keep_latent),
            "layers": layers, "torch": torch.__version__}
    if val_digest is not None:
        meta["val_digest"] = {k: v for k, v in val_digest.items() if k != "predictions"}
        arrays["val_predictions"] = np.asarray(val_digest["predictions"])
    data = _to_bytes(meta, arrays)
    _probe(source, _restore(*_read(io.BytesIO(data), str(path)), str(path)), arch, path)
    write_atomic(Path(path), data)
    return meta


@torch.no_grad()
def _probe(model: nn.Module, restored: nn.Module, arch: dict[str, Any], path) -> None:
    x = torch.randn((8, arch["options"].get("in_channels", 3), _PROBE_SIZE, _PROBE_SIZE),
                    generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        same = torch.equal(model(x), restored(x))
    finally:
        model.train(was_training)
    if not same:
        raise ArtifactError(f"{path} not written: the network rebuilt from arch {arch} gives other logits than the "
                            f"model (options such as binary_weights, voter or shortcut_only missing from arch?)")


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, meta)`` from an artifact; :class:`ArtifactError` if it does not restore exactly."""
    meta, arrays = _read(path, str(path))
    return _restore(meta, arrays, str(path)).to(device), meta


def verify_artifact(path: str | Path, loader, *, device: str | torch.device = "cpu",
                    strict: bool = True) -> VerifyResult:
    """Reload ``path``, predict ``loader`` again and compare with the recorded predictions.

    ``loader`` must give the recorded split in the recorded order (checked by
    the labels' hash). A difference raises :class:`ArtifactMismatch` naming the
    artifact, both accuracies and the number of differing predictions; with
    ``strict=False`` the result says so in ``ok`` and ``message`` instead.
    """
    meta, arrays = _read(path, str(path))
    recorded = meta.get("val_digest")
    if recorded is None:
        raise ArtifactError(f"{path} records no val_digest: there is nothing to verify it against")
    model = _restore(meta, arrays, str(path)).to(device)
    now = prediction_digest(model, loader, device)
    if now["n"] != recorded["n"] or now["labels_sha256"] != recorded["labels_sha256"]:
        raise ArtifactError(f"{path}: the loader is not the split the artifact was recorded on "
                            f"({now['n']} images now, {recorded['n']} recorded, or other labels or order)")
    differing = int((now["predictions"].astype(np.int64) != arrays["val_predictions"].astype(np.int64)).sum())
    ok = differing == 0 and now["sha256"] == recorded["sha256"]
    message = (f"{path}: reproduced, top-1 {now['top1']:.2f}% on {now['n']} images" if ok else
               f"{path}: the current code does not reproduce this artifact: top-1 {recorded['top1']:.2f}% recorded, "
               f"{now['top1']:.2f}% now, {differing} of {now['n']} predictions differ")
    result = VerifyResult(str(path), ok, now["n"], recorded["top1"], now["top1"], differing, message, model, meta)
    if strict and not ok:
        raise ArtifactMismatch(message)
    return result
