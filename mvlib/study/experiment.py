"""The study's building blocks for notebooks: data from a config, training runs with records.

Everything a notebook does goes through here, so a notebook holds narrative,
parameters and calls. A training run is described by its *resolved*
parameters (:func:`run_params`); their hash names the run folder, so the
same configuration is found again (reused when finished, resumed when
interrupted) and a different one never overwrites it.
"""
from __future__ import annotations

import copy
import time
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

from . import records
from ..checkpoint import CheckpointError, load_model_weights
from ..data import BatchLoader, dataset_num_classes, load_split
from ..models import build_model
from ..train import evaluate, fit
from ..voter_ops import set_voter

# configuration keys that change what a training run computes
TRAIN_KEYS = ("dataset", "train_per_class", "test_per_class", "train_file", "augment", "width", "batch_size",
              "optimizer", "lr", "momentum", "schedule", "warmup_steps", "weight_decay", "label_smoothing",
              "seed", "profile")


def resolve_device(cfg: dict[str, Any]) -> str:
    dev = cfg.get("device", "auto")
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def apply_threads(cfg: dict[str, Any]) -> None:
    if cfg.get("threads", 0) > 0:
        torch.set_num_threads(cfg["threads"])


@lru_cache(maxsize=8)
def _split(dataset, split, data_dir, train_file, per_class):
    return load_split(dataset, split, data_dir or None, train_file=train_file, per_class=per_class)


def loaders(cfg: dict[str, Any], dataset: str | None = None, train_file: str | None = None,
            train_per_class: int | None = None) -> tuple[BatchLoader, BatchLoader, int]:
    """(train loader, test loader, number of classes) for the configuration.

    The uint8 splits are read once per process and kept (a few hundred MB at
    most); the loaders hold them on the run's device and augment there.
    """
    dataset = dataset or cfg["dataset"]
    tf = train_file or cfg["train_file"]
    tpc = cfg["train_per_class"] if train_per_class is None else train_per_class
    dev = resolve_device(cfg)
    xtr, ytr = _split(dataset, "train", cfg["data_dir"], tf, tpc)
    xte, yte = _split(dataset, "test", cfg["data_dir"], "test.npz", cfg["test_per_class"])
    # dataset= picks the normalization constants (CIFAR-100's differ from CIFAR-10's)
    train = BatchLoader(xtr, ytr, cfg["batch_size"], train=True, augment=cfg["augment"], device=dev, seed=cfg["seed"],
                        dataset=dataset)
    test = BatchLoader(xte, yte, cfg["eval_batch_size"], train=False, augment=False, device=dev, seed=cfg["seed"],
                       dataset=dataset)
    return train, test, dataset_num_classes(dataset)


def run_params(cfg: dict[str, Any], **extra) -> dict[str, Any]:
    """The resolved parameters of a run: the training keys of ``cfg`` plus ``extra``."""
    return {**{k: cfg[k] for k in TRAIN_KEYS}, **extra}


def arch_of(params: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to load into a model built from ``params``."""
    return {k: params.get(k) for k in ("model", "width", "num_classes", "norm", "model_options")}


def build_from_params(params: dict[str, Any]) -> nn.Module:
    model = build_model(params["model"], num_classes=params["num_classes"], width=params["width"],
                        norm=params.get("norm", "bn"), **(params.get("model_options") or {}))
    if params.get("voter") is not None:
        set_voter(model, params["voter"], params.get("voter_layers"))
    return model


def load_run_model(run: records.Run, device: str = "cpu") -> nn.Module:
    """Rebuild a finished run's model from its parameters and checkpoint."""
    if not run.checkpoint.is_file():
        raise CheckpointError(f"run {run.run_id} has no checkpoint at {run.checkpoint}; rerun its step")
    params = run.params
    model = build_from_params(params)
    load_model_weights(model, run.checkpoint, arch_of(params))
    return model.to(device).eval()


def train_run(cfg: dict[str, Any], step: str, model_name: str, variant: str, *, epochs: int, lr: float | None = None,
              norm: str = "bn", model_options: dict | None = None, voter: Any = None, voter_layers=None,
              init_from: records.Run | None = None, teacher: nn.Module | None = None, agc_clip: float = 0.0,
              dataset: str | None = None, train_file: str | None = None, train_per_class: int | None = None,
              width: int | None = None, extra: dict | None = None, prepare=None, force: bool = False,
              lookup_only: bool = False, log=print) -> tuple[nn.Module, records.Run]:
    """Train (or reuse, or resume) one run and write its record.

    ``init_from``: start from that run's weights (retraining); ``voter``:
    a voter spec put on ``voter_layers`` after loading them; ``prepare``:
    a callable ``prepare(model)`` run before training (its effect must be
    named in ``extra`` so that it enters the run's hash). ``lookup_only``:
    train nothing, return the newest finished run of these parameters.
    ``width``: the model's base width instead of ``cfg["width"]`` (notebook
    06 sizes ReActNet-A relative to the ResNet-18s); the width actually built
    is the one recorded in the run's parameters and hash.
    """
    apply_threads(cfg)
    dataset = dataset or cfg["dataset"]
    sub = {**cfg, "dataset": dataset, "train_file": train_file or cfg["train_file"],
           "train_per_class": cfg["train_per_class"] if train_per_class is None else train_per_class,
           "width": cfg["width"] if width is None else width}
    train_loader, test_loader, ncls = loaders(cfg, dataset, sub["train_file"], sub["train_per_class"])
    params = run_params(sub, model=model_name, epochs=epochs, lr=cfg["lr"] if lr is None else lr, norm=norm,
                        num_classes=ncls, model_options=model_options or {}, voter=voter,
                        voter_layers=list(voter_layers) if voter_layers is not None else None,
                        init_run=init_from.run_id if init_from else None, agc_clip=agc_clip, **(extra or {}))
    if lookup_only:
        found = records.latest_finished(step, model_name, variant, params, cfg["results_dir"])
        if found is None:
            raise FileNotFoundError(f"no finished {step} run of {model_name} ({variant}) for profile "
                                    f"{cfg['profile']!r} with this configuration: run that step first")
        return found
    dev = resolve_device(cfg)
    run = records.open_run(step, model_name, variant, params, cfg["results_dir"], force=force, device=dev)
    torch.manual_seed(cfg["seed"])
    model = build_model(model_name, num_classes=ncls, width=sub["width"], norm=norm, **(model_options or {}))
    if run.finished and run.checkpoint.is_file():
        log(f"reusing finished run {run.run_id}: top1 {run.metrics['top1']:.2f}%")
        return load_run_model(run, dev), run
    if init_from is not None and not run.checkpoint.is_file():
        init = load_run_model(init_from)
        model.load_state_dict(init.state_dict(), strict=False)
    if voter is not None:
        set_voter(model, voter, voter_layers)
    if prepare is not None:
        prepare(model)
    t0 = time.time()
    hist = fit(model, train_loader, test_loader, epochs=epochs, optimizer=cfg["optimizer"], lr=params["lr"],
               schedule=cfg["schedule"], warmup_steps=cfg["warmup_steps"], weight_decay=cfg["weight_decay"],
               momentum=cfg["momentum"], label_smoothing=cfg["label_smoothing"], teacher=teacher, agc_clip=agc_clip,
               checkpoint_path=run.checkpoint, arch=arch_of(params), device=dev, progress=cfg["progress"],
               on_epoch=run.write_history, log=log)
    if hist and len(hist) == epochs and "test_top1" in hist[-1]:
        # fit evaluated this very model (after its last epoch) on this test loader: no second pass
        ev = {"top1": hist[-1]["test_top1"], "top5": hist[-1]["test_top5"], "n": len(test_loader.labels)}
    else:
        ev = evaluate(model, test_loader, dev)
    seconds = sum(r["seconds"] for r in hist) if hist else time.time() - t0
    run.finish({"model": model_name, "variant": variant, "profile": cfg["profile"], "dataset": dataset,
                "top1": ev["top1"], "top5": ev["top5"], "seconds": round(seconds, 1), "epochs": epochs,
                "test_images": ev["n"], "train_images": len(train_loader.labels),
                "train_file": sub["train_file"], "device": dev})
    return model.eval(), run


def evaluate_record(cfg: dict[str, Any], step: str, model: nn.Module, model_name: str, variant: str,
                    params: dict[str, Any], dataset: str | None = None, force: bool = False,
                    log=print) -> records.Run:
    """Evaluate a model (no training) on the test split and write a run record for it.

    For substitution experiments (naive MV, recalibrated BN): ``params`` must
    describe what was done (source run, voter, options) so that the hash is
    unique. A finished record of the same parameters is reused.
    """
    dataset = dataset or cfg["dataset"]
    _, test_loader, _ = loaders(cfg, dataset)
    full = run_params({**cfg, "dataset": dataset}, **params)
    run = records.open_run(step, model_name, variant, full, cfg["results_dir"], force=force, device=resolve_device(cfg))
    if run.finished and not force:
        log(f"reusing record {run.run_id}: top1 {run.metrics['top1']:.2f}%")
        return run
    t0 = time.time()
    ev = evaluate(model, test_loader, resolve_device(cfg))
    run.finish({"model": model_name, "variant": variant, "profile": cfg["profile"], "dataset": dataset,
                "top1": ev["top1"], "top5": ev["top5"], "seconds": round(time.time() - t0, 1),
                "test_images": ev["n"], "evaluation_only": True})
    return run


def train_baseline(cfg: dict[str, Any], model_name: str, force: bool = False, lookup_only: bool = False, log=print):
    """Notebook 01's run for one model: plain, two-step and/or distilled per ``cfg``.

    Two-step (ReActNet): the first half of the epochs trains binary
    activations with real weights (``step1-binact``), the second half starts
    from it with both binary. Distillation: a real-valued network of the same
    shape (``teacher-real``) is trained first by the same code and the
    binary network learns from its softmax (ReActNet's distributional loss).
    With ``lookup_only`` nothing is trained: the finished run is returned
    (FileNotFoundError when notebook 01 has not run for this configuration).
    """
    kw = dict(force=force, lookup_only=lookup_only, log=log,
              extra={"two_step": cfg["two_step"], "distill": cfg["distill"],
                     "teacher_epochs": cfg["teacher_epochs"] if cfg["distill"] else 0})
    teacher = None
    if cfg["distill"]:
        teacher_run = train_run(cfg, "01_baseline", model_name, "teacher-real", epochs=cfg["teacher_epochs"],
                                model_options={"binary_activations": False, "binary_weights": False}, **kw)
        teacher = None if lookup_only else teacher_run[0]
    init = None
    epochs = cfg["epochs"]
    if cfg["two_step"]:
        first = cfg["epochs"] // 2 or 1
        res = train_run(cfg, "01_baseline", model_name, "step1-binact", epochs=first,
                        model_options={"binary_weights": False}, teacher=teacher, **kw)
        init = res if lookup_only else res[1]
        epochs = max(1, cfg["epochs"] - first)
    return train_run(cfg, "01_baseline", model_name, "baseline", epochs=epochs, init_from=init, teacher=teacher, **kw)


def find_baseline(cfg: dict[str, Any], model_name: str) -> records.Run:
    """The newest finished baseline run for ``cfg`` (notebook 01 must have run)."""
    return train_baseline(cfg, model_name, lookup_only=True)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
