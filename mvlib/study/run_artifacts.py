"""Training runs as committed artifacts, reused by later code only once it reproduces them.

A network that took ten or more hours of CPU time is worth keeping beyond the
code that trained it. With the configuration key ``artifacts`` (exec scope: it
never enters a run's identity) every training run that finishes is written as
one :mod:`mvlib.artifact` file, and later code may reuse it after proving that
it computes the same predictions.

Where
    ``<results_dir>/artifacts/<profile>/<step>/<run_id>.npz``
    (:attr:`mvlib.study.records.Run.artifact`): beside ``runs/`` in the
    same results folder, so it is committed with the records it belongs to
    (``checkpoints/`` is not); the profile keeps apart the runs of profiles
    that share ``results/``. A file is written once and never replaced.
What
    ``arch`` (:func:`arch_for`: model, width, classes, norm and model
    options, voter), ``record`` (run id, step, identity: parameters, data and
    code hash; ``metrics`` with ``seconds``, the training time on ``device``;
    the environment of ``env.json``) and the argmax predictions of the
    validation split and, for a run evaluated on it, the test split
    (:func:`split_digests`), so that a reused run's test numbers are proven
    too. Digests are computed on the CPU with a fixed batch
    (:data:`DIGEST_BATCH`) whatever device trained the run: the committed
    files are checked on a CPU (``tests/test_committed_artifacts.py``).
Latent weights
    Kept (float32, exact) for the steps a later step retrains from
    (:data:`LATENT_STEPS`: notebook 01's baselines). Elsewhere the binary
    layers keep their sign bits and alphas only (the forward is exact, the
    latent weights are rebuilt). A run that starts from another run's weights
    (``init_from``) takes them from that run's artifact (:func:`start_weights`),
    so that a reused and a freshly trained source give the same start; the
    artifact must then restore every tensor as trained (latent weights kept,
    or no binary weights: step 1 of two-step training, teachers), else the
    start would depend on where the weights came from: refused.
Reuse across code (:func:`reuse_other_code`)
    Where no finished run of the running code exists, the finished runs of
    the same parameters and data under other code that have an artifact are
    re-evaluated under the running code, newest first; the first whose every
    recorded prediction is reproduced is reused: its weights come from the
    artifact (its checkpoint, if any, is not read), the log says "trained
    under code X, verified under code Y", and the run's folder gets
    ``verified-<Y>.json`` (written once; the record itself is never touched,
    no second ``metrics.json`` is written, so the summaries list the run
    once, as a run of code Y: :func:`mvlib.study.records.all_metrics`). A
    later call of code Y finds the marker and reuses the run without
    evaluating again (the artifact's sha256 must be the one verified). Where
    predictions differ, one line names the artifact and how many differ, and
    the run is trained again (``reuse_artifacts: verified``), or the line
    stops the run (``strict``); ``off`` reuses runs of the running code only.
    The predictions prove top-1; a reused run's top-5 is the one recorded.
    Without ``artifacts`` nothing of this happens: the code-hash rule of
    :mod:`mvlib.study.records` alone decides (a run of the running code whose
    checkpoint is missing but whose artifact is there is still reused from it:
    its weights, exactly, :func:`mvlib.study.run_setup.load_run_model`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..artifact import (ArtifactError, ArtifactMismatch, load_artifact, prediction_digest, recorded_predictions,
                        save_artifact, sha256_of_ints)
from ..data import BatchLoader
from ..environment import REPO_ROOT, environment_info
from ..files import write_json
from ..models import TEACHERS
from . import records
from .run_setup import data_identity, loaders

LATENT_STEPS = ("01_baseline",)  # steps whose runs later steps retrain from (mvlib.study.voter_study)
DIGEST_BATCH = 500  # images per forward of a digest: fixed, so that no execution key can change a prediction

Log = Callable[[str], None]


def arch_for(params: dict[str, Any]) -> dict[str, Any]:
    """The :mod:`mvlib.artifact` arch of a run: what :func:`mvlib.study.run_setup.build_from_params` builds."""
    teacher = params["model"] in TEACHERS
    arch = {"model": params["model"], "width": params["width"], "num_classes": params["num_classes"],
            "options": {} if teacher else {"norm": params.get("norm", "bn"), **(params.get("model_options") or {})}}
    if params.get("voter") is not None:
        arch["voter"] = {"spec": params["voter"], "layers": params.get("voter_layers")}
    return arch


def _cpu_loader(loader, dataset: str, images: int | None = None) -> BatchLoader:
    """The same images in the same order, on the CPU in batches of :data:`DIGEST_BATCH` (the first ``images``)."""
    stop = len(loader.labels) if images is None else min(images, len(loader.labels))
    return BatchLoader(loader.images[:stop].cpu(), loader.labels[:stop].cpu(), DIGEST_BATCH, train=False,
                       augment=False, dataset=dataset)


def split_digests(model: nn.Module, split_loaders: dict[str, Any], dataset: str) -> dict[str, dict[str, Any]]:
    """``{split: prediction digest}`` of ``model`` on the CPU for each loader given (None: split not evaluated)."""
    net = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    return {split: {**prediction_digest(net, _cpu_loader(loader, dataset), "cpu"), "batch": DIGEST_BATCH,
                    "device": "cpu"} for split, loader in split_loaders.items() if loader is not None}


def write_run_artifact(run: records.Run, model: nn.Module, split_loaders: dict[str, Any], log: Log) -> Path:
    """Write the artifact of the finished ``run`` (weights of ``model``); one that exists is left as it is."""
    path = run.artifact
    if path.is_file():
        return path
    env = json.loads((run.dir / "env.json").read_text()) if (run.dir / "env.json").is_file() else {}
    digests = split_digests(model, split_loaders, run.params["dataset"])
    record = {"run_id": run.run_id, "step": run.step, "identity": run.identity, "metrics": run.metrics,
              "environment": env}
    keep = run.step in LATENT_STEPS
    with torch.random.fork_rng(devices=[]):  # the scratch networks it builds draw no number the study would draw
        save_artifact(model, path, arch=arch_for(run.params), keep_latent=keep, record=record,
                      val_digest=digests["val"], test_digest=digests.get("test"))
    counts = " and ".join(f"{d['n']} {split}" for split, d in digests.items())
    log(f"artifact {_shown(path)}: {path.stat().st_size / 2**20:.2f} MiB ({'with' if keep else 'without'} latent "
        f"weights; predictions of {counts} images)")
    return path


def compare_predictions(path: Path, model: nn.Module, split_loaders: dict[str, Any], dataset: str,
                        images: int | None = None) -> dict[str, dict[str, Any]]:
    """``{split: {"n", "checked", "differing"}}``: ``model``'s predictions against those ``path`` records.

    Every split the artifact records must be given, as recorded (its labels' hash over the whole
    split is checked: :class:`~mvlib.artifact.ArtifactError` otherwise). ``images``: compare the
    first that many of each split only (a quicker check; None: all).
    """
    out = {}
    for split, (digest, recorded) in recorded_predictions(path).items():
        loader = split_loaders.get(split)
        if loader is None or sha256_of_ints(loader.labels.cpu().numpy()) != digest["labels_sha256"]:
            raise ArtifactError(f"{path}: the {split} split given is not the one it was recorded on "
                                f"({digest['n']} images recorded)")
        now = prediction_digest(model, _cpu_loader(loader, dataset, images), "cpu")["predictions"]
        differing = int((now.astype(np.int64) != recorded[:len(now)].astype(np.int64)).sum())
        out[split] = {"n": digest["n"], "checked": len(now), "differing": differing}
    return out


def check_artifact(path: Path, data_dir: str | Path, images: int | None = None) -> dict[str, dict[str, Any]]:
    """Reload an artifact and compare its recorded predictions with the running code's, on its own splits.

    The splits are those of the record's parameters, read from ``data_dir``; data that is not the
    recorded data (another file, other membership) is an :class:`~mvlib.artifact.ArtifactError`.
    """
    model, meta = load_artifact(path)
    identity = meta["record"]["identity"]
    cfg = {**identity["params"], "data_dir": str(data_dir), "device": "cpu", "eval_batch_size": DIGEST_BATCH}
    now = json.loads(json.dumps(data_identity(cfg), default=str))
    for split in ("val", "test"):
        if now[split] != identity["data"][split]:
            raise ArtifactError(f"{path}: the {split} split under {data_dir} is not the one it was recorded on")
    _, val, test, _ = loaders(cfg)
    return compare_predictions(Path(path), model, {"val": val, "test": test}, identity["params"]["dataset"], images)


def start_weights(run: records.Run) -> nn.Module:
    """The weights a run started from ``run`` begins with: ``run``'s artifact, which must restore them exactly."""
    if not run.artifact.is_file():
        raise ArtifactError(f"run {run.run_id} has no artifact ({_shown(run.artifact)}): with artifacts on, a run "
                            f"starts from its source's artifact; run step {run.step} again with artifacts on (a "
                            f"finished run gets its artifact written when it is reused)")
    model, meta = load_artifact(run.artifact)
    if not meta["keep_latent"] and meta["layers"]:
        raise ArtifactError(f"{_shown(run.artifact)} keeps no latent weights, but run {run.run_id} is started from: "
                            f"its step {run.step} must be in LATENT_STEPS of mvlib.study.run_artifacts")
    return model


def _shown(path: Path) -> str:
    """A path as lines and markers show it: relative to the repository when inside it (as committed)."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _other_code_runs(step: str, model_name: str, variant: str, params: dict[str, Any], data: dict[str, Any],
                     results_dir) -> list[records.Run]:
    """Finished runs of these parameters and data under other code, newest first."""
    want = json.loads(json.dumps(records.identity_of(step, model_name, variant, params, data), default=str))
    step_dir = records.resolve_results_dir(results_dir) / "runs" / step
    name = re.compile(rf"^\d{{8}}-\d{{6}}-{re.escape(model_name)}-{re.escape(variant)}-[0-9a-f]{{10}}(-\d+)?$")
    found = []
    for path in sorted(step_dir.iterdir() if step_dir.is_dir() else [], key=lambda p: p.name, reverse=True):
        if name.match(path.name) and (path / "metrics.json").is_file() and (path / "params.json").is_file():
            run = records.run_from_dir(path)
            if (run.identity["params"], run.identity["data"]) == (want["params"], want["data"]) \
                    and run.identity["code_hash"] != want["code_hash"]:
                found.append(run)
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _verify(run: records.Run, code: str, split_loaders: dict[str, Any], dataset: str) -> tuple[str | None, Any]:
    """``(None, model)`` when the running code reproduces ``run``'s artifact (marked once), else ``(line, None)``."""
    path, sha = run.artifact, _sha256(run.artifact)
    what = f"artifact {_shown(path)} of run {run.run_id} (trained under code {run.identity['code_hash']})"
    marker = run.dir / records.VERIFIED.format(code=code)
    if marker.is_file():  # verified before by this code: the same bytes need no second evaluation
        if records.read_record_json(marker).get("artifact_sha256") == sha:
            return None, load_artifact(path)[0]
        return f"{what} changed after it was verified under code {code} ({_shown(marker)})", None
    model, meta = load_artifact(path)
    if meta["record"].get("run_id") != run.run_id:
        return f"{what} is the artifact of run {meta['record'].get('run_id')}, not of this one", None
    found = compare_predictions(path, model, split_loaders, dataset)
    if any(r["differing"] for r in found.values()):
        counts = ", ".join(f"{r['differing']} of {r['n']} {s}" for s, r in found.items())
        return f"{what} is not reproduced under code {code}: {counts} predictions differ", None
    write_json(marker, {"run_id": run.run_id, "trained_under": run.identity["code_hash"], "verified_under": code,
                        "artifact": _shown(path), "artifact_sha256": sha, "splits": found,
                        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "environment": environment_info("cpu")})
    records.update_summary(run.dir.parents[2])  # the run is now a row of this code (records.all_metrics)
    return None, model


def reuse_other_code(cfg: dict[str, Any], step: str, model_name: str, variant: str, params: dict[str, Any],
                     data: dict[str, Any], split_loaders: dict[str, Any], log: Log):
    """``(model, run)`` of a run of other code that the running code reproduces (module docstring), or None.

    None also where a finished run of the running code exists (the caller reuses it) or
    ``reuse_artifacts`` is ``off``. Holds the identity's lock while it verifies, and only then: a
    lookup of a run that has no candidate takes no lock, as before artifacts.
    """
    key = (step, model_name, variant, params, data, cfg["results_dir"])
    if cfg["reuse_artifacts"] == "off" or records.find_finished(*key) is not None:
        return None
    candidates = [run for run in _other_code_runs(*key) if run.artifact.is_file()]
    if not candidates:
        return None
    code = records.code_hash()  # looked up where records looks it up, so that both see the same code
    with records.hold_identity(*key):
        if records.find_finished(*key) is not None:  # trained meanwhile by another process
            return None
        for run in candidates:
            line, model = _verify(run, code, split_loaders, cfg["dataset"])
            if line is None:
                log(f"reusing run {run.run_id}: trained under code {run.identity['code_hash']}, verified under code "
                    f"{code} (val top1 {run.metrics['val_top1']:.2f}%, artifact {_shown(run.artifact)})")
                return model, run
            if cfg["reuse_artifacts"] == "strict":
                raise ArtifactMismatch(f"{line} (reuse_artifacts: strict)")
            log(f"{line}: not reused")
    return None
