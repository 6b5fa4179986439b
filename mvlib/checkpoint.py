"""Checkpoints: atomic writes, safe loading (no pickled code), clear errors.

A checkpoint is a dict of tensors and plain literals saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)``, so loading never executes
code from the file. It carries ``arch`` (model name, width, classes, norm and
the constructor options) so that loading it into another architecture is an
:class:`IncompatibleCheckpoint` error that says what differs, not a wall of
missing keys.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .files import write_atomic


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not a checkpoint of this project."""


class IncompatibleCheckpoint(CheckpointError):
    """A checkpoint of another architecture (or other options) than the model at hand."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialize to memory, then write atomically (a kill mid-write leaves the old file)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(Path(path), buf.getvalue())


def load_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling refusals, zip errors, truncation
        found = re.search(r"(?:unsupported GLOBAL|Unsupported global:)\s*(\S+)", str(e))
        if isinstance(e, pickle.UnpicklingError) and found:
            # torch's message advises weights_only=False: wrong for a file that may have been tampered with
            raise CheckpointError(f"checkpoint {path} holds more than tensors and literals (it asks for "
                                  f"{found.group(1)}); it is refused, as loading it could run code. Delete it: "
                                  f"its run trains again from the start") from None
        first = str(e).strip().split("\n")[0].split(". ")[0][:160]
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(e).__name__}: {first}); delete it: "
                              f"its run trains again from the start") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise CheckpointError(f"{path} is not an mvlib checkpoint (no 'model'/'arch' entries)")
    return state


def check_arch(path: Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, model has {expected.get(k)!r}"
             for k in sorted(set(saved) | set(expected)) if saved.get(k) != expected.get(k)]
    if diffs:
        raise IncompatibleCheckpoint(f"checkpoint {path} is for another architecture: " + "; ".join(diffs))


def load_model_weights(model: torch.nn.Module, path: Path, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` after checking its architecture.

    A run that picks its epoch on validation (see :func:`mvlib.train.fit`) gives
    the picked weights, not the last ones: a checkpoint in training holds them
    in its ``pick`` entry, a finished run's holds only them.
    """
    state = load_checkpoint(path)
    if arch is not None:
        check_arch(path, state["arch"], arch)
    try:
        model.load_state_dict(state["pick"]["model"] if "model" in (state.get("pick") or {}) else state["model"])
    except RuntimeError as e:
        raise IncompatibleCheckpoint(f"checkpoint {path} does not fit the model: {e}") from None
    return state


def remove_if_exists(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
