"""Trained networks as committed artifacts: one compact, exact, pickle-free file per network.

A network that took hours of CPU time to train is stored once, in the
repository, and used by later code only after :func:`verify_artifact` has
shown that the current code reproduces its predictions on a fixed split.

Format
------
An ``.npz`` file (a zip of ``.npy`` arrays; ``numpy.load(path,
allow_pickle=False)`` reads every entry, nothing in it is a pickle)::

    meta                 uint8   UTF-8 JSON: format, version, arch, record, val_digest and test_digest
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
    test_predictions     the same on a second split (``test_digest`` given: a run's test split)

``<conv>`` is every :class:`mvlib.layers.BinaryConv2d` whose ``binary_weights``
is on. Everything else (stem, real shortcuts, BN, RSign shifts, RPReLU, gains,
classifier, a ``"weights"`` shortcut's :class:`BinaryWeightConv2d`) is stored as is.
The model comes back from ``arch`` through :func:`mvlib.models.build_model`
(:func:`mvlib.models.build_teacher` for a teacher), with ``arch["voter"]``
(``{"spec", "layers"}``, optional) put on by :func:`mvlib.voter_ops.set_voter`.

Exactness
---------
A binary convolution's forward reads its weight only through the sign bits and
the per-channel ``alpha = mean|w|`` of ``w = latent_weight()``; without
``keep_latent`` each channel's weight is rebuilt from its signs by a recipe that
gives those bits and bit-identical alphas (:mod:`mvlib.artifact_signs`, where
the construction and its proof are). Every reconstruction is checked when it is
made (signs, alphas, then the logits of a probe batch against the saved model,
before the file is written) and the signs and alphas again on every load.

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

from .artifact_signs import decode_layer, differing_channels, encode_layer
from .files import write_atomic
from .layers import BinaryConv2d, binary_convs
from .models import TEACHERS, build_model, build_teacher
from .voter_ops import set_voter

FORMAT, VERSION = "mvlib-artifact", 1
ARCH_KEYS = ("model", "width", "num_classes", "options", "voter")
SPLITS = ("val", "test")  # the splits whose predictions an artifact can record
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal networks give equal files
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
def sha256_of_ints(a) -> str:
    """The sha256 of integers (predictions, labels) as little-endian int64: the hash a digest records."""
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
    return {"n": len(p), "top1": 100.0 * float((p == y).sum()) / len(p), "sha256": sha256_of_ints(p),
            "labels_sha256": sha256_of_ints(y), "predictions": p.astype(np.uint8 if p.max() < 256 else np.uint16)}


# ------------------------------------------------------------------ binary layers and their reconstruction
def _binary_layers(model: nn.Module) -> dict[str, BinaryConv2d]:
    return {name: conv for name, conv in binary_convs(model) if conv.binary_weights}


# ------------------------------------------------------------------ file
def _check_arch(arch: dict[str, Any]) -> dict[str, Any]:
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown or not {"model", "width", "num_classes"} <= set(arch):
        raise ArtifactError(f"arch needs the keys model, width, num_classes (options optional); got {sorted(arch)}")
    voter = arch.get("voter")
    arch = {"model": arch["model"], "width": arch["width"], "num_classes": arch["num_classes"],
            "options": dict(arch.get("options") or {}),
            # no key without a voter, so that the arch of a plain network is what it was before voters
            **({"voter": {"spec": voter["spec"], "layers": voter.get("layers")}} if voter else {})}
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
    model = build_model(arch["model"], num_classes=arch["num_classes"], width=arch["width"], **arch["options"])
    if arch.get("voter"):
        set_voter(model, arch["voter"]["spec"], arch["voter"]["layers"])
    return model


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
        weight, signs, alpha = decode_layer(arrays, conv_name, info)
        state[f"{conv_name}.weight"], views[conv_name] = weight, (signs, alpha)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{name} does not fit the model built from {meta['arch']}: {e}") from None
    for conv_name, (signs, alpha) in views.items():
        bad = differing_channels(layers[conv_name], signs, alpha)
        if bad:
            raise ArtifactError(f"{name}: layer {conv_name} binarizes differently now in {bad} output channels "
                                f"(signs or alpha; written with torch {meta.get('torch')}, read with "
                                f"{torch.__version__})")
    return model.eval()


# ------------------------------------------------------------------ public
def save_artifact(model: nn.Module, path: str | Path, *, arch: dict[str, Any], keep_latent: bool,
                  record: dict[str, Any], val_digest: dict[str, Any] | None = None,
                  test_digest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` to ``path`` as one artifact (module docstring); returns its meta.

    ``arch``: ``{"model", "width", "num_classes", "options"}`` such that
    ``build_model(model, num_classes=, width=, **options)`` (or
    ``build_teacher``) builds this network, flags such as ``binary_weights``
    included; ``"voter": {"spec", "layers"}`` for a network with voters.
    ``keep_latent``: store the binary layers' latent weights (float32) too,
    for a later step that trains on from them. ``record``: JSON, stored as
    given. ``val_digest``: :func:`prediction_digest` of ``model`` on the split
    that :func:`verify_artifact` will be given; ``test_digest``: the same on a
    second split (``verify_artifact(..., split="test")``). The file is written
    only after the model rebuilt from its bytes has given this model's logits
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
    layers = {name: encode_layer(conv, name, keep_latent, arrays) for name, conv in binary.items()}
    meta = {"format": FORMAT, "version": VERSION, "arch": arch, "record": record, "keep_latent": bool(keep_latent),
            "layers": layers, "torch": torch.__version__}
    for split, digest in zip(SPLITS, (val_digest, test_digest)):
        if digest is not None:
            meta[f"{split}_digest"] = {k: v for k, v in digest.items() if k != "predictions"}
            arrays[f"{split}_predictions"] = np.asarray(digest["predictions"])
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


def verify_artifact(path: str | Path, loader, *, split: str = "val", device: str | torch.device = "cpu",
                    strict: bool = True) -> VerifyResult:
    """Reload ``path``, predict ``loader`` again and compare with the predictions recorded for ``split``.

    ``loader`` must give the recorded split in the recorded order (checked by
    the labels' hash). A difference raises :class:`ArtifactMismatch` naming the
    artifact, both accuracies and the number of differing predictions; with
    ``strict=False`` the result says so in ``ok`` and ``message`` instead.
    """
    meta, arrays = _read(path, str(path))
    recorded = meta.get(f"{split}_digest")
    if recorded is None:
        raise ArtifactError(f"{path} records no {split}_digest: there is nothing to verify it against")
    model = _restore(meta, arrays, str(path)).to(device)
    now = prediction_digest(model, loader, device)
    if now["n"] != recorded["n"] or now["labels_sha256"] != recorded["labels_sha256"]:
        raise ArtifactError(f"{path}: the loader is not the split the artifact was recorded on "
                            f"({now['n']} images now, {recorded['n']} recorded, or other labels or order)")
    differing = int((now["predictions"].astype(np.int64) != arrays[f"{split}_predictions"].astype(np.int64)).sum())
    ok = differing == 0 and now["sha256"] == recorded["sha256"]
    message = (f"{path}: reproduced, top-1 {now['top1']:.2f}% on {now['n']} images" if ok else
               f"{path}: the current code does not reproduce this artifact: top-1 {recorded['top1']:.2f}% recorded, "
               f"{now['top1']:.2f}% now, {differing} of {now['n']} predictions differ")
    result = VerifyResult(str(path), ok, now["n"], recorded["top1"], now["top1"], differing, message, model, meta)
    if strict and not ok:
        raise ArtifactMismatch(message)
    return result


def recorded_predictions(path: str | Path) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """``{split: (digest without its predictions, predictions)}`` for each split the artifact records."""
    meta, arrays = _read(path, str(path))
    return {split: (meta[f"{split}_digest"], arrays[f"{split}_predictions"]) for split in SPLITS
            if f"{split}_digest" in meta}
