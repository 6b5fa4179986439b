"""What a recorded run is set up from: device and process settings, configuration overrides, data, parameters,
``fit``'s recipe, the model and the evaluator.

The pieces both sides of a run need: :mod:`mvlib.study.experiment`, which
claims, trains and records runs, and :mod:`mvlib.study.ddp_worker`, whose
worker processes rebuild a run's model and data from its parameters. Kept
apart from both so that neither imports the other's side.

The uint8 splits are read once per process and kept (:func:`loaders`),
keyed by the data file's size and modification time as well as the
arguments, so a data file replaced on disk is read again.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

from ..artifact import load_artifact
from ..checkpoint import CheckpointError, load_model_weights
from ..cpu_fast import tune_cpu_allocator
from ..data import BatchLoader, dataset_num_classes, load_split, resolve_data_dir, split_identity
from ..models import TEACHERS, build_model, build_teacher
from ..train import evaluate
from ..voter_ops import set_voter
from ..voter_spec import VoterSpec
from . import records
from .config import check_value, scope_keys
from .progress import pipeline_threads, say


def resolve_device(cfg: dict[str, Any]) -> str:
    dev = cfg.get("device", "auto")
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


_ALLOCATOR_TUNED = False


def apply_process_settings(cfg: dict[str, Any]) -> None:
    """This process's settings for a run (none changes a value computed).

    * torch threads: the configuration's ``threads`` when > 0, else the
      pipeline's current budget, if any. Called at the start of every run
      and after every epoch, so that a notebook follows the budget while the
      pipeline starts and ends the notebooks beside it.
    * glibc's allocator keeps freed large blocks (:func:`mvlib.cpu_fast.tune_cpu_allocator`,
      once per process; ``MVLIB_TUNE_MALLOC=0`` leaves it alone): without it a
      1000-image evaluation batch or a training activation is a fresh mmap
      whose pages fault in on first touch (a third of the CPU time was system
      time with two notebooks running; +13 % training images/s measured).
    """
    global _ALLOCATOR_TUNED
    if not _ALLOCATOR_TUNED:
        _ALLOCATOR_TUNED = True
        tune_cpu_allocator()
    n = cfg.get("threads", 0) or pipeline_threads()
    if n and torch.get_num_threads() != n:
        if not cfg.get("threads", 0):
            say(f"torch threads {torch.get_num_threads()} -> {n} (the pipeline's budget)")
        torch.set_num_threads(n)


def run_config(cfg: dict[str, Any], **overrides) -> dict[str, Any]:
    """``cfg`` with some keys set for one run; each value checked like a configuration key."""
    return {**cfg, **{k: check_value(k, v) for k, v in overrides.items()}}


def with_seed(cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The configuration of one seed's runs."""
    return run_config(cfg, seed=seed)


# ----------------------------------------------------------------- data
def _split_args(cfg: dict[str, Any], split: str) -> tuple:
    per_class = {"train": cfg["train_per_class"], "val": cfg["val_eval_per_class"], "test": cfg["test_per_class"]}[split]
    return (cfg["dataset"], split, cfg["data_dir"] or None, cfg["train_file"], per_class, cfg["val_per_class"])


def _file_stamp(dataset: str, split: str, data_dir, train_file: str):
    """(path, size, mtime) of the file a split is read from (None for torchvision's download)."""
    folder = resolve_data_dir(dataset, data_dir)
    if folder is None:
        return None
    path = folder / ("test.npz" if split == "test" else train_file)
    try:
        st = path.stat()
    except OSError:
        return str(path)  # missing: the read below says so
    return str(path), st.st_size, st.st_mtime_ns


@lru_cache(maxsize=12)
def _split_cached(dataset, split, data_dir, train_file, per_class, val_per_class, stamp):
    x, y = load_split(dataset, split, data_dir, train_file=train_file, per_class=per_class,
                      val_per_class=val_per_class)
    return x, y, split_identity(dataset, split, data_dir, train_file, per_class, val_per_class)


def _split(cfg: dict[str, Any], split: str):
    """``(images, labels, identity)`` of one split, from one read: the identity a record gets is that of the data
    the run reads. Kept per process, keyed by the file's size and modification time as well as the arguments, so
    a data file changed on disk is read again (a notebook's kernel that trains, sees the file replaced and trains
    again records the new data's identity *and* trains on it)."""
    args = _split_args(cfg, split)
    return _split_cached(*args, _file_stamp(args[0], split, args[2], args[3]))


def split_data(cfg: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images, labels)`` of one split of ``cfg``: the tensors its loaders hold (for a loop of its own)."""
    x, y, _ = _split(cfg, split)
    return x, y


def data_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the runs of ``cfg`` read: the identity (contents, membership) of its train, validation and test splits."""
    return {split: _split(cfg, split)[2] for split in ("train", "val", "test")}


def loaders(cfg: dict[str, Any]) -> tuple[BatchLoader, BatchLoader, BatchLoader, int]:
    """(train, validation, test loaders, number of classes) of the configuration.

    The uint8 splits are read once per process and kept (a few hundred MB at
    most); the loaders hold them on the run's device and augment there. Only
    the train loader shuffles and augments, seeded by ``cfg["seed"]``.
    """
    dev, ds = resolve_device(cfg), cfg["dataset"]
    out = []
    for split in ("train", "val", "test"):
        x, y, _ = _split(cfg, split)
        train = split == "train"
        # dataset= picks the normalization constants (CIFAR-100's differ from CIFAR-10's)
        out.append(BatchLoader(x, y, cfg["batch_size"] if train else cfg["eval_batch_size"], train=train,
                               augment=cfg["augment"] and train, device=dev, seed=cfg["seed"], dataset=ds))
    return out[0], out[1], out[2], dataset_num_classes(ds)


# ----------------------------------------------------------------- runs
def final_metrics(model, val_loader, test_loader, dev, evaluate=evaluate) -> dict[str, Any]:
    """Validation numbers always; test numbers (``top1``, ``top5``) only when ``test_loader`` is given."""
    val = evaluate(model, val_loader, dev)
    out = {"val_top1": val["top1"], "val_top5": val["top5"], "val_images": val["n"]}
    if test_loader is not None:
        test = evaluate(model, test_loader, dev)
        out.update(top1=test["top1"], top5=test["top5"], test_images=test["n"])
    return out


def lookup_finished(cfg: dict[str, Any], step: str, model: str, variant: str, params: dict[str, Any],
                    data: dict[str, Any]) -> records.Run:
    """The newest finished run of this identity; FileNotFoundError, saying which step to run, when there is none."""
    found = records.find_finished(step, model, variant, params, data, cfg["results_dir"])
    if found is None:
        raise FileNotFoundError(f"no finished {step} run of {model} ({variant}, seed {cfg['seed']}) for profile "
                                f"{cfg['profile']!r} with this configuration, data and code: run that step first")
    return found


def run_params(cfg: dict[str, Any], **extra) -> dict[str, Any]:
    """A run's parameters: every data and training key of ``cfg``, the profile, and ``extra``.

    A ``voter`` given as a :class:`mvlib.voter_spec.VoterSpec` is recorded as its parameters
    (:meth:`~mvlib.voter_spec.VoterSpec.to_dict`): every record's voter is the dict :func:`set_voter` reads, and a
    VoterSpec written as text by the JSON writer would silently give a new identity.
    """
    if isinstance(extra.get("voter"), VoterSpec):
        extra["voter"] = extra["voter"].to_dict()
    return {**{k: cfg[k] for k in scope_keys("data", "train")}, "profile": cfg["profile"], **extra}


def fit_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`mvlib.train.fit` that the configuration fixes (one process or N ranks)."""
    return {"epochs": cfg["epochs"], "optimizer": cfg["optimizer"], "lr": cfg["lr"], "schedule": cfg["schedule"],
            "warmup_steps": cfg["warmup_steps"], "weight_decay": cfg["weight_decay"], "momentum": cfg["momentum"],
            "label_smoothing": cfg["label_smoothing"], "agc_clip": cfg["agc_clip"], "pick": cfg["checkpoint_pick"],
            "precision": cfg["precision"], "compile_model": cfg["compile"], "kd_weight": cfg["kd_weight"]}


def arch_of(params: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to load into a model built from ``params``."""
    return {k: params.get(k) for k in ("model", "width", "num_classes", "norm", "model_options")}


def build_from_params(params: dict[str, Any]) -> nn.Module:
    if params["model"] in TEACHERS:
        return build_teacher(params["model"], num_classes=params["num_classes"], width=params["width"])
    model = build_model(params["model"], num_classes=params["num_classes"], width=params["width"],
                        norm=params.get("norm", "bn"), **(params.get("model_options") or {}))
    if params.get("voter") is not None:
        set_voter(model, params["voter"], params.get("voter_layers"))
    return model


def load_run_model(run: records.Run, device: str = "cpu") -> nn.Module:
    """Rebuild a finished run's model from its parameters and checkpoint, or from its artifact where the checkpoint
    is missing: checkpoints are not committed, artifacts are (:mod:`mvlib.study.run_artifacts`); the artifact's
    network computes what the checkpoint's does, bit for bit."""
    if not run.checkpoint.is_file() and run.artifact.is_file():
        return load_artifact(run.artifact)[0].to(device).eval()
    if not run.checkpoint.is_file():
        profile = run.params.get("profile", "cpu")
        raise CheckpointError(f"run {run.run_id} has its record but not its weights ({run.checkpoint} is missing: "
                              f"checkpoints are not committed); `python -m mvlib.study.pipeline --profile {profile} "
                              f"--only {run.step.split('_', 1)[0]} --rerun` trains the runs of step {run.step} "
                              f"that lack their weights again (`make study` does it by itself when a later step "
                              f"needs them)")
    params = run.params
    model = build_from_params(params)
    load_model_weights(model, run.checkpoint, arch_of(params))
    return model.to(device).eval()


def engine_evaluate(model: nn.Module, loader, device="cpu", max_batches: int = 0) -> dict[str, float]:
    """:func:`mvlib.train.evaluate` with the logits from cuda_numba's inference engine where it compiles the model.

    The engine's logits equal the float model's bit for bit (its tests; ``results/bench/engine_check_*``
    on the trained baselines), so every metric is the same, at a fraction of the time for the
    hierarchical voters (their float simulation builds a partial sum per block). A network the
    engine refuses (:class:`cuda_numba.engine.EngineUnsupported`: teachers, BN-Free, binary 1x1
    shortcuts, real weights) is evaluated as a float model, and the reason is printed once per
    process; any other error of the engine is raised, not hidden behind the fallback.
    """
    if str(device) != "cpu":
        return evaluate(model, loader, device, max_batches)
    from cuda_numba.engine import EngineUnsupported, compile_engine  # numba loads only when a CPU run asks
    try:
        engine = compile_engine(model)
    except EngineUnsupported as refusal:
        _say_float_fallback(type(model).__name__, str(refusal))
        return evaluate(model, loader, device, max_batches)
    return evaluate(model, loader, device, max_batches, forward=engine)


@lru_cache(maxsize=None)
def _say_float_fallback(model_kind: str, reason: str) -> None:
    """One line per kind of model and reason: a run evaluates after every epoch, and the line would repeat."""
    say(f"engine evaluation: {model_kind} evaluated as a float model ({reason})")


def evaluator(cfg: dict[str, Any]):
    """The evaluation function of ``cfg``: :func:`engine_evaluate` when ``eval_engine``, else the float model's."""
    return engine_evaluate if cfg["eval_engine"] else evaluate
