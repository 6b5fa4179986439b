"""The airbench distillation teacher (``teacher_model: airbench``): trained by :mod:`mvlib.teacher`'s recipe, recorded
like every run.

Why a loop of its own and not :func:`mvlib.train.fit`: the recipe is more than
fit's settings (whitening filters set from the data and frozen, a lookahead
copy of the weights, BN biases at 64x the step size, alternating flips and
reflected 2-pixel shifts, a linear warm-up/decay), and it is what gives ~94 %
in 10 epochs; :func:`mvlib.teacher.train_teacher` runs it unchanged. What
the study adds around it is what every run has: a run record of its own
(variant ``teacher-airbench``; params, env, history, metrics), a checkpoint
that :func:`~mvlib.study.run_setup.load_run_model` rebuilds from the run's
parameters (``mvlib.models.TEACHERS["airbench"]``), reuse of a finished run
and resume of an interrupted one.

Choices:

* Data: exactly the student's training split: the teacher's configuration
  keeps every data key of the student's, and the images are the uint8
  tensors the student's loader holds (:func:`~mvlib.study.run_setup.split_data`).
  The validation split is only evaluated (after every epoch, as ``fit``
  does); the test split once at the end, for the record.
* Recipe: :class:`mvlib.teacher.Recipe`'s defaults (airbench94's), but
  ``epochs`` = ``teacher_epochs``, the widths 64/256/256 x
  ``teacher_width`` / 64 and the seed of the student. The other
  ``teacher_*`` keys describe a ResNet's SGD recipe in other units and do
  not apply. Batch 1024: fewer training images is an error before any
  folder is made.
* Identity: every other training key is set to its default, so every
  student of one seed (any network, variant or recipe) finds the same
  teacher run; the recipe's fields are part of the identity.
* Forward: the flip TTA (the mean logits of the image and its mirror), in
  eval mode (:func:`mvlib.teacher.study_teacher`). The recorded ``val_top1``,
  checked against ``teacher_min_val_top1``, is measured with that forward on
  the study's own loader, the forward and normalization the students learn
  from; ``val_top1_plain`` (no mirror view) is recorded beside it.
* Resume: the training state (weights, optimizer, lookahead copy, step) is
  checkpointed after every epoch; a killed run continues to the same bits as
  an uninterrupted one (same thread count). The pipeline's deadline stops it
  after a checkpointed epoch, as it stops ``fit``.
* Device: the loop is CPU code (its generators and gathers); the teacher
  trains on the CPU whatever ``device`` is, and is moved to the run's device
  to be evaluated and distilled from.
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any, Callable

from ..checkpoint import load_checkpoint, save_checkpoint
from ..teacher import Recipe, train_teacher
from ..train import DeadlineReached, evaluate
from . import records
from .config import SCHEMA, scope_keys
from .progress import pipeline_deadline, say
from .run_setup import (apply_process_settings, arch_of, data_identity, final_metrics, load_run_model,
                        lookup_finished, loaders, resolve_device, run_config, run_params, split_data)

MODEL, VARIANT = "airbench", "teacher-airbench"
# the training keys that shape this teacher; every other one is set to its default in its configuration
_OWN_KEYS = ("seed", "teacher_epochs", "teacher_width")


def airbench_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The teacher run's configuration: ``cfg``'s data keys, seed, ``teacher_epochs`` and ``teacher_width``; the
    other training keys at their defaults (``epochs`` and ``width`` name the teacher's, for the record)."""
    defaults = {k: SCHEMA[k].default for k in scope_keys("train") if k not in _OWN_KEYS}
    return run_config(cfg, **{**defaults, "epochs": cfg["teacher_epochs"], "width": cfg["teacher_width"]})


def airbench_recipe(t_cfg: dict[str, Any]) -> Recipe:
    """The recipe of the teacher run of configuration ``t_cfg`` (:func:`airbench_config`)."""
    return Recipe(epochs=float(t_cfg["teacher_epochs"]), width_scale=t_cfg["teacher_width"] / 64, seed=t_cfg["seed"])


def _history_rows(history: dict) -> list[dict[str, Any]]:
    """The loop's per-epoch dicts as a study history: percentages, and seconds per epoch (not cumulative)."""
    rows, before, cpu_before = [], 0.0, 0.0
    for rec in history["epochs"]:
        rows.append({"epoch": rec["epoch"], "steps": rec["steps"], "train_loss": rec["train_loss"],
                     "train_top1": 100.0 * rec["train_top1"], "val_top1": 100.0 * rec["val_top1"],
                     "seconds": rec["seconds"] - before, "cpu_seconds": rec["cpu_seconds"] - cpu_before})
        before, cpu_before = rec["seconds"], rec["cpu_seconds"]
    return rows


def _epoch_saver(run: records.Run, t_cfg: dict, arch: dict, log: Callable[[str], None]) -> Callable[[dict], None]:
    """The loop's ``on_epoch``: checkpoint (the training state, or the weights alone after the last epoch), history,
    a progress line, the pipeline's thread budget (as fit follows it) and a stop at its deadline once the epoch is
    safe."""
    deadline, epochs = pipeline_deadline(), t_cfg["teacher_epochs"]

    def save(state: dict) -> None:
        done, rows = state["epoch"], _history_rows(state["history"])
        final = done >= epochs  # a finished run keeps the weights only, as fit's last checkpoint does
        save_checkpoint(run.checkpoint, {"model": state["model"], "arch": arch, "epoch": done, "history": rows,
                                         **({} if final else {"training": state})})
        run.write_history(rows)
        last = state["history"]["epochs"][-1]
        log(f"epoch {done}/{epochs}: train loss {rows[-1]['train_loss']:.3f} top1 {rows[-1]['train_top1']:.1f}% | "
            f"val top1 (flip TTA) {rows[-1]['val_top1']:.2f}% | elapsed {last['seconds']:.0f}s, "
            f"left ~{last['eta_seconds']:.0f}s")
        apply_process_settings(t_cfg)
        if deadline is not None and time.time() >= deadline and not final:
            raise DeadlineReached(f"the time allowed ran out after epoch {done}/{epochs} of the airbench teacher "
                                  f"(checkpointed): run the same command again to resume")
    return save


def train_airbench_teacher(t_cfg: dict[str, Any], step: str, *, test: bool = True, lookup_only: bool = False,
                           log: Callable[[str], None] = say):
    """Train (or reuse, or resume) the airbench teacher run of ``t_cfg`` (:func:`airbench_config`); ``(model, run)``.

    ``model`` is on the run's device, in eval mode, its forward the flip TTA. ``test=False``: the final model is
    evaluated on the validation split only. ``lookup_only``: the finished run alone (FileNotFoundError without one).
    """
    apply_process_settings(t_cfg)
    _, val_loader, test_loader, ncls = loaders(t_cfg)  # data errors before any folder is made
    recipe = airbench_recipe(t_cfg)
    params = run_params(t_cfg, model=MODEL, num_classes=ncls, model_options={}, recipe=asdict(recipe),
                        **({} if test else {"evaluated_on": "val"}))
    data = data_identity(t_cfg)
    if lookup_only:
        return lookup_finished(t_cfg, step, MODEL, VARIANT, params, data)
    train_x, train_y = split_data(t_cfg, "train")
    if len(train_x) < recipe.batch_size:
        raise ValueError(f"the airbench teacher trains in batches of {recipe.batch_size} images; the training split "
                         f"has {len(train_x)} (raise train_per_class, or use another teacher_model)")
    dev = resolve_device(t_cfg)
    with records.claim_run(step, MODEL, VARIANT, params, data, t_cfg["results_dir"], force=t_cfg["force"],
                           device=dev, reusable=lambda r: r.checkpoint.is_file()) as run:
        if run.finished:
            log(f"reusing finished run {run.run_id}: val top1 {run.metrics['val_top1']:.2f}%")
            return load_run_model(run, dev), run
        state = load_checkpoint(run.checkpoint) if run.checkpoint.is_file() else None
        if state is None or "training" in state:  # else killed after its last epoch: nothing left to train
            if state is not None:
                log(f"resumed from {run.checkpoint} after epoch {state['epoch']}")
            train_teacher(train_x, train_y, **{f.name: getattr(recipe, f.name) for f in fields(Recipe)},
                          val=split_data(t_cfg, "val"), num_classes=ncls, dataset=t_cfg["dataset"], tta=True,
                          resume=state["training"] if state is not None else None,
                          on_epoch=_epoch_saver(run, t_cfg, arch_of(params), log))
            state = load_checkpoint(run.checkpoint)
        model = load_run_model(run, dev)  # rebuilt as every later step rebuilds it: what is measured is what serves
        run.write_history(state["history"])
        plain = evaluate(model, val_loader, dev, forward=lambda x: model(x, tta=False))
        run.finish({"model": MODEL, "variant": VARIANT, "profile": t_cfg["profile"], "dataset": t_cfg["dataset"],
                    **final_metrics(model, val_loader, test_loader if test else None, dev),
                    "val_top1_plain": plain["top1"], "forward": "flip TTA",
                    "seconds": round(sum(r["seconds"] for r in state["history"]), 1),
                    "cpu_hours": round(sum(r["cpu_seconds"] for r in state["history"]) / 3600, 3),
                    "epochs": t_cfg["teacher_epochs"], "picked_epoch": state["epoch"], "train_images": len(train_x),
                    "train_file": t_cfg["train_file"], "device": "cpu"},
                   epochs=t_cfg["teacher_epochs"], checkpoint_epoch=state["epoch"])
        log(f"finished {run.run_id}: val top1 (flip TTA) {run.metrics['val_top1']:.2f}%"
            + (f", test top1 {run.metrics['top1']:.2f}%" if test else ""))
        return model, run
