"""The study's recorded runs: data from a configuration, training and evaluation runs with records.

Everything a notebook trains or evaluates goes through here, so a notebook
holds narrative, parameters and calls. A run's parameters are
:func:`~mvlib.study.run_setup.run_params`: *every* data and training key of
the configuration (:func:`mvlib.study.config.scope_keys`), plus the run's own
arguments (model, voter, the run it starts from, ...). With the identity of
the data read (:func:`~mvlib.study.run_setup.data_identity`) and the code
hash they make the run's identity (:mod:`mvlib.study.records`): a finished
run of the same identity is reused, an interrupted one resumed, a different
one never overwritten.

A run's settings that differ from the configuration's (the epochs of a
retraining, the dataset of an appendix cell) are given as configuration
overrides (:func:`~mvlib.study.run_setup.run_config`), checked like any key,
so they enter the identity the same way. The validation split
(``val_per_class``) is evaluated after every epoch; the test split once, for
the record. A training run stops at the pipeline's deadline, if one is set
(:func:`mvlib.study.progress.pipeline_deadline`, passed to ``fit``).

The pieces a run is set up from (device, data, model, recipe, evaluator) are
in :mod:`mvlib.study.run_setup`; the names notebooks use are imported here.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint, load_model_weights
from ..models import MODELS, TEACHERS, TRAINED_BY_OWN_RECIPE, build_model, build_teacher
from ..train import fit
from ..voter_ops import set_voter
from . import records
from .config import recipe_for
from .airbench_run import airbench_config, train_airbench_teacher
from .ddp_worker import fit_distributed
from .progress import pipeline_deadline, say
from .run_artifacts import reuse_other_code, start_weights, write_run_artifact
from .run_setup import (apply_process_settings, arch_of, data_identity, evaluator, final_metrics, fit_recipe,
                        load_run_model, lookup_finished, loaders, resolve_device, run_config, run_params, with_seed)

Log = Callable[[str], None]


def cpu_hours(history: list[dict[str, Any]]) -> float:
    """CPU hours of a training history: the process's CPU time over all its threads, summed over the epochs of
    every chunk (a data-parallel run counts its first process only)."""
    return sum(r.get("cpu_seconds", 0.0) for r in history) / 3600


def train_run(cfg: dict[str, Any], step: str, model_name: str, variant: str, *, model_options: dict | None = None,
              voter: Any = None, voter_layers=None, init_from: records.Run | None = None,
              teacher: tuple[nn.Module, records.Run] | None = None, prepare=None, extra: dict | None = None,
              test: bool = True, lookup_only: bool = False, log: Log = say):
    """Train (or reuse, or resume) one run of ``cfg`` and write its record; ``(model, run)``.

    ``init_from``: start from that run's weights (retraining); ``voter``: a
    voter spec put on ``voter_layers`` after loading them; ``teacher``:
    ``(model, run)`` of a distillation teacher; ``prepare``: a callable
    ``prepare(model)`` run before training (its effect must be named in
    ``extra`` so that it enters the identity). ``test=False``: evaluate the
    final model on the validation split only (runs that choose settings).
    ``lookup_only``: train nothing, return the newest finished run of this
    identity (FileNotFoundError when there is none).

    With ``cfg["artifacts"]`` (:mod:`mvlib.study.run_artifacts`): a run of
    other code that the running code reproduces is reused (also by
    ``lookup_only``); a finished run gets its artifact, now or when it is
    next reused; ``init_from``'s weights come from its artifact.
    """
    if model_name not in MODELS and model_name not in TEACHERS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)} (teachers: {sorted(TEACHERS)})")
    if model_name in TRAINED_BY_OWN_RECIPE:  # fit would train it by the wrong recipe under the right name
        raise ValueError(f"{model_name} trains by its own recipe, not fit's: train_recipe with teacher_model: "
                         f"{model_name} trains it (mvlib.study.airbench_run)")
    apply_process_settings(cfg)
    train_loader, val_loader, test_loader, ncls = loaders(cfg)  # data errors before any folder is made
    params = run_params(cfg, model=model_name, num_classes=ncls, model_options=model_options or {}, voter=voter,
                        voter_layers=voter_layers if voter_layers is None or isinstance(voter_layers, str)
                        else list(voter_layers),
                        init_run=init_from.run_id if init_from else None,
                        teacher_run=teacher[1].run_id if teacher else None, **(extra or {}),
                        **({} if test else {"evaluated_on": "val"}))
    data = data_identity(cfg)
    splits = {"val": val_loader, "test": test_loader if test else None}
    # a run of other code, reproduced from its artifact, stands for this one (never with force: that retrains)
    reused = (reuse_other_code(cfg, step, model_name, variant, params, data, splits, log)
              if cfg["artifacts"] and not cfg["force"] else None)
    if lookup_only:
        return reused[1] if reused is not None else lookup_finished(cfg, step, model_name, variant, params, data)
    if reused is not None:
        return reused[0].to(resolve_device(cfg)), reused[1]
    dev = resolve_device(cfg)
    # the model and its voter are built before any folder is made: a bad option fails here
    torch.manual_seed(cfg["seed"])
    if model_name in TEACHERS:
        model = build_teacher(model_name, num_classes=ncls, width=cfg["width"])
    else:
        model = build_model(model_name, num_classes=ncls, width=cfg["width"], norm=cfg["norm"],
                            **(model_options or {}))
    if voter is not None:
        set_voter(model, voter, voter_layers)
    with records.claim_run(step, model_name, variant, params, data, cfg["results_dir"], force=cfg["force"],
                           device=dev, reusable=lambda r: r.checkpoint.is_file() or r.artifact.is_file()) as run:
        if run.finished:
            log(f"reusing finished run {run.run_id}: val top1 {run.metrics['val_top1']:.2f}%")
            model = load_run_model(run, dev)
            if cfg["artifacts"]:  # finished before artifacts were asked for: written now, from its checkpoint
                write_run_artifact(run, model, splits, log)
            return model, run
        if not run.checkpoint.is_file():
            if init_from is not None:  # weights of the run it starts from; the voter stays as set above
                # from the artifact with artifacts on, so that a reused and a fresh source start alike; from it
                # also where the checkpoint is missing (start_weights refuses an artifact without latent weights)
                artifact = cfg["artifacts"] or (not init_from.checkpoint.is_file() and init_from.artifact.is_file())
                source = start_weights(init_from) if artifact else load_run_model(init_from)
                model.load_state_dict(source.state_dict(), strict=False)
            if prepare is not None:
                prepare(model)
        t0 = time.time()
        if cfg["ddp_procs"] > 1:  # N worker processes train; this process keeps the record
            fit_distributed(cfg, params, model, run.checkpoint, teacher[1] if teacher else None, log=log)
            load_model_weights(model, run.checkpoint)  # the picked epoch's weights, as fit leaves them
            hist = load_checkpoint(run.checkpoint)["history"]
        else:
            hist = fit(model, train_loader, val_loader, **fit_recipe(cfg), teacher=teacher[0] if teacher else None,
                       checkpoint_path=run.checkpoint, arch=arch_of(params), device=dev, progress=cfg["progress"],
                       on_epoch=lambda h: (run.write_history(h), apply_process_settings(cfg)), log=log,
                       evaluator=evaluator(cfg), deadline=pipeline_deadline())
        # the checkpoint is the truth: its history is what the record keeps (a kill may have cut history.csv)
        state = load_checkpoint(run.checkpoint)
        run.write_history(state["history"])
        seconds = sum(r["seconds"] for r in hist) if hist else time.time() - t0
        run.finish({"model": model_name, "variant": variant, "profile": cfg["profile"], "dataset": cfg["dataset"],
                    **final_metrics(model, val_loader, test_loader if test else None, dev, evaluator(cfg)),
                    "seconds": round(seconds, 1), "cpu_hours": round(cpu_hours(hist), 3),
                    "epochs": cfg["epochs"], "picked_epoch": (state.get("pick") or {}).get("epoch", state["epoch"]),
                    "train_images": len(train_loader.labels),
                    "train_file": cfg["train_file"], "device": dev},
                   epochs=cfg["epochs"], checkpoint_epoch=state["epoch"])
        log(f"finished {run.run_id}: val top1 {run.metrics['val_top1']:.2f}%"
            + (f", test top1 {run.metrics['top1']:.2f}%" if test else ""))
        if cfg["artifacts"]:
            write_run_artifact(run, model, splits, log)
        return model.eval(), run


def evaluate_record(cfg: dict[str, Any], step: str, model: nn.Module | Callable[[], nn.Module], model_name: str,
                    variant: str, params: dict[str, Any], test: bool = True, log: Log = say) -> records.Run:
    """Evaluate a model (no training) on the validation split (and the test split) and write its run record.

    For substitution experiments (naive voter, recalibrated BN): ``params``
    must describe what was done (source run, voter, options) so that the
    identity is unique. ``model`` may be a callable that builds it, so a
    reused record costs no model preparation. ``test=False`` for sweeps that
    only explore (they are read on validation; the test split is for the rows
    the report shows). A finished record of the same identity is reused.
    """
    apply_process_settings(cfg)
    full = run_params(cfg, **params, evaluated_on="val+test" if test else "val")
    data = data_identity(cfg)
    dev = resolve_device(cfg)
    with records.claim_run(step, model_name, variant, full, data, cfg["results_dir"], force=cfg["force"],
                           device=dev) as run:
        if run.finished:
            log(f"reusing record {run.run_id}: val top1 {run.metrics['val_top1']:.2f}%")
            return run
        t0 = time.time()
        net = model() if callable(model) and not isinstance(model, nn.Module) else model
        _, val_loader, test_loader, _ = loaders(cfg)
        run.finish({"model": model_name, "variant": variant, "profile": cfg["profile"], "dataset": cfg["dataset"],
                    **final_metrics(net, val_loader, test_loader if test else None, dev, evaluator(cfg)),
                    "seconds": round(time.time() - t0, 1),
                    "evaluation_only": True})
        return run


class TeacherTooWeak(RuntimeError):
    """A distillation teacher's validation top-1 is below ``teacher_min_val_top1``."""


def teacher_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model name, configuration, model options) of the distillation teacher of ``cfg``.

    ``teacher_model="same"``: the student's network with real weights and
    activations, trained with the student's recipe for ``teacher_epochs``.
    A ResNet teacher (ReActNet's ResNet-34): its own width and the
    ``teacher_*`` recipe, one step, cross-entropy; the same for every
    student, so the students of one seed share one teacher run.
    ``airbench``: :func:`mvlib.study.airbench_run.airbench_config` (its own
    recipe, shared the same way). ``kd_weight`` shapes the students only:
    every teacher's is 1, so students of several weights share a teacher.
    """
    if cfg["teacher_model"] == "same":
        return None, run_config(cfg, epochs=cfg["teacher_epochs"], two_step=False, distill=False, kd_weight=1.0), {
            "binary_activations": False, "binary_weights": False}
    if cfg["teacher_model"] in TRAINED_BY_OWN_RECIPE:
        return cfg["teacher_model"], airbench_config(cfg), {}
    # every student key that a ResNet teacher does not use is set to one value, so its identity is the same
    # for every student
    t = run_config(cfg, epochs=cfg["teacher_epochs"], width=cfg["teacher_width"], optimizer=cfg["teacher_optimizer"],
                   lr=cfg["teacher_lr"], weight_decay=cfg["teacher_weight_decay"], batch_size=cfg["teacher_batch_size"],
                   schedule="cosine", warmup_steps=0, label_smoothing=0.0, agc_clip=0.0, two_step=False,
                   distill=False, norm="bn", step2_weight_decay=-1.0, kd_weight=1.0)
    return cfg["teacher_model"], t, {}


def train_recipe(cfg: dict[str, Any], step: str, model_name: str, variant: str = "baseline",
                 model_options: dict | None = None, test: bool = True, lookup_only: bool = False,
                 log: Log | None = None, teacher_step: str | None = None):
    """One network trained by the recipe ``cfg`` describes: plain, two-step and/or distilled; ``(model, run)``.

    Two-step (ReActNet): the first half of the epochs trains binary
    activations with real weights (variant ``step1-binact``, or
    ``<variant>-step1-binact``), the second half starts from it with both
    binary and ``step2_weight_decay``. Distillation: the teacher of
    :func:`teacher_config` is trained first (variant ``teacher-real`` or
    ``teacher-resnet34``, in ``step``) by the same code (``teacher-airbench``:
    by :mod:`mvlib.teacher`'s own loop, :func:`train_airbench_teacher`), checked against
    ``teacher_min_val_top1``, and the binary network learns from its softmax
    (ReActNet's distributional loss). ``test=False``: every run of the
    recipe is evaluated on the validation split only. With ``lookup_only``
    nothing is trained: the finished run is returned (FileNotFoundError when
    its step has not run for this configuration). ``teacher_step``: the step
    whose teacher run serves (default ``step``): a later notebook training a
    variant reuses notebook 01's teacher instead of training its own.
    """
    log = log or (lambda line: say(f"{model_name} seed {cfg['seed']}: {line}"))
    kw = dict(lookup_only=lookup_only, log=log, test=test)
    opts = dict(model_options or {})
    teacher = None
    if cfg["distill"]:
        t_name, t_cfg, t_opts = teacher_config(cfg)
        # the student's own options (a binary 1x1, a BN-free init) do not shape a real-valued teacher: one
        # teacher run serves every variant of a network and seed
        if t_name in TRAINED_BY_OWN_RECIPE:
            res = train_airbench_teacher(t_cfg, teacher_step or step, **kw)
        else:
            res = train_run(t_cfg, teacher_step or step, t_name or model_name, f"teacher-{t_name or 'real'}",
                            model_options=t_opts, **kw)
        t_run = res if lookup_only else res[1]
        if t_run.metrics["val_top1"] < cfg["teacher_min_val_top1"]:
            raise TeacherTooWeak(f"teacher run {t_run.run_id} reaches {t_run.metrics['val_top1']:.2f} % validation "
                                 f"top-1, below teacher_min_val_top1 = {cfg['teacher_min_val_top1']}: no student "
                                 f"learns from it (raise teacher_epochs or check its recipe)")
        teacher = (None, res) if lookup_only else res
    init = None
    epochs = cfg["epochs"]
    if cfg["two_step"]:
        first = cfg["epochs"] // 2
        step1 = "step1-binact" if variant == "baseline" else f"{variant}-step1-binact"
        res = train_run(run_config(cfg, epochs=first), step, model_name, step1,
                        model_options={**opts, "binary_weights": False}, teacher=teacher, **kw)
        init = res if lookup_only else res[1]
        epochs = cfg["epochs"] - first
        if cfg["step2_weight_decay"] >= 0:
            cfg = run_config(cfg, weight_decay=cfg["step2_weight_decay"])
    return train_run(run_config(cfg, epochs=epochs), step, model_name, variant, model_options=opts or None,
                     init_from=init, teacher=teacher, **kw)


def train_baseline(cfg: dict[str, Any], model_name: str, lookup_only: bool = False, log: Log | None = None):
    """Notebook 01's run for one model and ``cfg["seed"]``: :func:`train_recipe` with the model's entry of
    ``model_recipes`` applied (:func:`mvlib.study.config.recipe_for`)."""
    return train_recipe(recipe_for(cfg, model_name), "01_baseline", model_name, "baseline", lookup_only=lookup_only,
                        log=log)


def find_baseline(cfg: dict[str, Any], model_name: str) -> records.Run:
    """The finished baseline run of ``cfg`` (its seed) for ``model_name`` (notebook 01 must have run)."""
    return train_baseline(cfg, model_name, lookup_only=True)


def baselines_by_seed(cfg: dict[str, Any], model_name: str, seeds=None) -> dict[int, records.Run]:
    """``{seed: baseline run}`` for ``seeds`` (default: the configuration's ``seeds``)."""
    return {s: find_baseline(with_seed(cfg, s), model_name) for s in (cfg["seeds"] if seeds is None else seeds)}


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
