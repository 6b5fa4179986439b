"""Training and evaluation loops: optimizer, schedule, checkpoint/resume, KD, DDP.

``fit`` trains a model for a number of epochs and checkpoints after every
epoch (atomically); called again with the same checkpoint path it resumes from
the last finished epoch and reaches exactly the parameters an uninterrupted run
reaches (the data order and augmentation are functions of (seed, epoch)).
After each epoch it evaluates on the *validation* loader it is given (never
the test split: nothing is chosen on test). A loss that is not finite stops
training with :class:`NonFiniteLoss` before the optimizer step, so a diverged
run is never checkpointed past its last good epoch. A time limit is ``fit``'s
``deadline`` argument (:class:`DeadlineReached` after a checkpointed epoch);
``fit`` reads no setting from the environment but torchrun's ``WORLD_SIZE``
(:func:`mvlib.sync_bn.init_distributed`).

Multi-GPU / multi-node: launch with ``torchrun`` (never a home-made launcher);
``fit`` sees ``WORLD_SIZE > 1``, joins the process group (nccl on GPU, gloo on
CPU), wraps the model in DistributedDataParallel and gives each rank its slice
of every global batch; BatchNorm normalizes by the statistics of the global
batch (:mod:`mvlib.sync_bn`), so N ranks train what one process would, up to
the order of floating-point additions. Only rank 0 writes checkpoints and records.

The study's recorded runs (run folders, reuse, the command line) are built on
``fit`` in :mod:`mvlib.study.experiment` and :mod:`mvlib.study.train`.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # text bars: tqdm.auto needs ipywidgets in a kernel and warns without them

from .agc import adaptive_grad_clip_
from .checkpoint import CheckpointError, check_arch, load_checkpoint, save_checkpoint
from .layers import BinaryConv2d
from .sync_bn import init_distributed, use_global_batchnorm
from .sync_bn import close_distributed  # noqa: F401  (worker scripts that call fit import it from here)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged."""


class Diverged(FloatingPointError):
    """An epoch's mean training loss exceeded :data:`DIVERGED_LOSS_FACTOR` x ln(classes): the run diverged."""


# A network that predicts every class alike has a cross-entropy of ln(C) (2.3 for CIFAR-10); ten times that
# means the logits have exploded (lr 1e2 gave 1.8e11 with a finite loss): stop, as for a non-finite loss.
DIVERGED_LOSS_FACTOR = 10.0
# Training precisions: the autocast dtype of the forward (None: float32 throughout).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class DeadlineReached(RuntimeError):
    """``fit``'s ``deadline`` passed after a checkpointed epoch: the same call, run again, resumes."""


# ----------------------------------------------------------------- optimizer
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights only (binary and real); none on BN, biases, shifts, slopes, classifier."""
    decay, rest = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            is_conv_w = name == "weight" and isinstance(mod, (nn.Conv2d, BinaryConv2d))
            (decay if is_conv_w else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(model, name="adam", lr=1e-3, weight_decay=0.0, momentum=0.9) -> torch.optim.Optimizer:
    """``adam``: AdamW (decoupled decay); ``adam-l2``: torch's Adam, the decay added to the gradient as the
    official ReActNet / Bi-Real / "BNN - BN = ?" code does (``train.py``: ``torch.optim.Adam`` with per-group
    ``weight_decay``); ``sgd``: Nesterov SGD with L2 decay."""
    groups = param_groups(model, weight_decay)
    if name == "adam":  # decoupled decay (AdamW) so the decay does not pass through Adam's scaling
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam-l2":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adam-l2 or sgd")


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup`` steps, then cosine or linear decay to 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine or linear")


# ----------------------------------------------------------------- losses
def distillation_loss(student_logits, teacher_logits):
    """ReActNet's distributional loss: cross-entropy of the student against the teacher's softmax."""
    return -(F.softmax(teacher_logits, 1) * F.log_softmax(student_logits, 1)).sum(1).mean()


def kd_mixture(student_logits, teacher_logits, labels, kd_weight: float, ce_loss) -> torch.Tensor:
    """kd_weight x :func:`distillation_loss` + (1 - kd_weight) x ``ce_loss``; at 1 the distillation loss alone."""
    kd = distillation_loss(student_logits, teacher_logits)
    return kd if kd_weight == 1.0 else kd_weight * kd + (1.0 - kd_weight) * ce_loss(student_logits, labels)


# ----------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader, device="cpu", max_batches: int = 0, forward=None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean loss over the loader.

    ``forward``: what computes the logits of a batch instead of ``model`` itself (an inference
    engine compiled from it, say); ``model`` is still put in eval mode for the duration.
    """
    was_training = model.training
    model.eval()
    n = c1 = c5 = 0
    loss = 0.0
    for i, (x, y) in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = (forward or model)(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        top = out.topk(min(5, out.shape[1]), 1).indices
        c1 += (top[:, 0] == y).sum().item()
        c5 += (top == y[:, None]).any(1).sum().item()
        n += y.numel()
    model.train(was_training)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "n": n}


# ----------------------------------------------------------------- one epoch of training
@dataclass
class _EpochTotals:
    """What one epoch's training steps add up: summed loss (per image), correct top-1, images, classes."""
    loss: float = 0.0
    correct: int = 0
    images: int = 0
    classes: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.item() * labels.numel()
        self.correct += (logits.argmax(1) == labels).sum().item()
        self.images += labels.numel()
        self.classes = logits.shape[1]

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.images, 1)

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / max(self.images, 1)


@dataclass
class _Trainer:
    """The parts of a training step that stay fixed for a run; :meth:`run_epoch` trains one epoch.

    ``net`` is what the forward runs (``model`` itself, or its DistributedDataParallel wrapper);
    ``model`` is what the optimizer and the gradient clipping see.
    """
    net: nn.Module
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    loss_fn: nn.Module
    teacher: nn.Module | None
    kd_weight: float
    autocast: Any
    agc_clip: float
    device: Any
    rank: int
    world: int

    def run_epoch(self, loader, epoch: int, label: str, show: bool) -> _EpochTotals:
        self.net.train()
        loader.set_epoch(epoch)
        totals = _EpochTotals()
        bar = tqdm(loader, desc=label, disable=not show, leave=False)
        for step_i, (x, y) in enumerate(bar, 1):
            if self.world > 1:  # this rank's slice of the global batch
                x, y = x.chunk(self.world)[self.rank], y.chunk(self.world)[self.rank]
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            out, loss = self._forward(x, y)
            if not torch.isfinite(loss):  # before the step: no checkpoint holds a diverged state
                raise NonFiniteLoss(f"training loss is {loss.item()} at epoch {epoch + 1}, step {step_i} "
                                    f"(lr {self.opt.param_groups[0]['lr']:.3g}): the run diverged; its last good "
                                    f"checkpoint is of epoch {epoch}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.agc_clip > 0:
                adaptive_grad_clip_(self.model, self.agc_clip)
            self.opt.step()
            self.sched.step()
            totals.add(loss, out, y)
            bar.set_postfix(loss=f"{totals.mean_loss:.3f}", acc=f"{totals.top1:.1f}")
        return totals

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 logits, loss) of one batch; with a teacher the loss is :func:`kd_mixture`'s."""
        with self.autocast:
            out = self.net(x).float()
            if self.teacher is not None:
                with torch.no_grad():
                    t_out = self.teacher(x).float()
        return out, (kd_mixture(out, t_out, y, self.kd_weight, self.loss_fn) if self.teacher is not None
                     else self.loss_fn(out, y))


def _stop_if_diverged(totals: _EpochTotals, epoch: int, lr: float) -> None:
    """Raise :class:`Diverged` when the epoch's mean loss is above ``DIVERGED_LOSS_FACTOR * ln(classes)``."""
    limit = DIVERGED_LOSS_FACTOR * math.log(max(totals.classes, 2)) if totals.images else math.inf
    if totals.mean_loss > limit:
        raise Diverged(f"mean training loss {totals.mean_loss:.3g} at epoch {epoch + 1} is above "
                       f"{DIVERGED_LOSS_FACTOR:g} x ln({totals.classes}) = {limit:.3g} (lr {lr:.3g}): the run "
                       f"diverged and is not recorded as finished; its last good checkpoint is of epoch {epoch}")


# ----------------------------------------------------------------- checkpoint, pick, deadline, log
def _resume(path, arch: dict | None, model: nn.Module, opt, sched, epochs: int) -> tuple[int, list[dict], dict | None]:
    """Load a training checkpoint into the model, optimizer and schedule; (epochs done, history, pick)."""
    state = load_checkpoint(path)
    if arch is not None:
        check_arch(path, state["arch"], arch)
    model.load_state_dict(state["model"])
    done, history = state["epoch"], list(state["history"])
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    elif done < epochs:
        raise CheckpointError(f"{path} is the final checkpoint of a {done}-epoch run (no optimizer state); it "
                              f"cannot be trained on to {epochs} epochs")
    return done, history, state.get("pick")


def _save_checkpoint(path, epochs_done: int, model: nn.Module, opt, sched, history: list[dict],
                     arch: dict | None, best: dict | None, final: bool) -> None:
    """The checkpoint after an epoch: everything a resume needs, or, once ``final``, the kept weights only."""
    if not final:
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epochs_done, "history": history,
                               "arch": arch or {}, **({"pick": best} if best is not None else {})})
        return
    kept = best["model"] if best is not None else model.state_dict()
    slim_pick = {} if best is None else {"pick": {k: v for k, v in best.items() if k != "model"}}
    save_checkpoint(path, {"model": kept, "epoch": epochs_done, "history": history, "arch": arch or {},
                           **slim_pick})


def _better_pick(best: dict | None, row: dict, model: nn.Module) -> dict | None:
    """``best`` replaced by this epoch's weights when its validation top-1 is higher (the first epoch wins a tie)."""
    if best is not None and not row["val_top1"] > best["val_top1"]:
        return best
    return {"rule": "best_val", "epoch": row["epoch"], "val_top1": row["val_top1"],
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def _deadline_passed(deadline: float | None, world: int) -> bool:
    """Whether ``deadline`` (a Unix time) has passed by rank 0's clock; every rank gets rank 0's answer."""
    stop = deadline is not None and time.time() >= deadline
    if world > 1:
        flag = torch.tensor([int(stop)])
        dist.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _log_epoch(log: Callable[[str], None], history: list[dict], epochs: int) -> None:
    """The epoch's line: its numbers, the time so far and an estimate of the time left."""
    row = history[-1]
    done_s = sum(r["seconds"] for r in history)
    left_s = done_s / len(history) * (epochs - row["epoch"])
    log(f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.3f} top1 {row['train_top1']:.1f}% | "
        f"val top1 {row['val_top1']:.2f}% | {row['seconds']:.0f}s, elapsed {_clock(done_s)}, left ~{_clock(left_s)}")


def _check_fit_arguments(epochs, lr, pick: str, precision: str, kd_weight: float) -> None:
    if pick not in ("last", "best_val"):
        raise ValueError(f"pick must be last or best_val, got {pick!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0 or not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"lr must be > 0 and kd_weight in [0, 1], got lr {lr!r}, kd_weight {kd_weight!r}")


# ----------------------------------------------------------------- fit
def fit(model: nn.Module, train_loader, val_loader, *, epochs: int, optimizer: str = "adam", lr: float = 1e-3,
        schedule: str = "cosine", warmup_steps: int = 0, weight_decay: float = 0.0, momentum: float = 0.9,
        label_smoothing: float = 0.0, teacher: nn.Module | None = None, kd_weight: float = 1.0, agc_clip: float = 0.0,
        checkpoint_path=None, arch: dict[str, Any] | None = None, device="cpu", progress: bool = True,
        pick: str = "last", on_epoch: Callable[[list[dict]], None] | None = None,
        log: Callable[[str], None] = print, evaluator: Callable[..., dict] | None = None,
        precision: str = "fp32", deadline: float | None = None, compile_model: bool = False) -> list[dict]:
    """Train for ``epochs``; checkpoint each epoch; resume from ``checkpoint_path`` if present.

    Returns the per-epoch history (epoch, lr, train_loss, train_top1, val_loss, val_top1, val_top5,
    seconds). ``log`` gets one line per epoch with the elapsed time and an estimate of the time left.
    Raises :class:`NonFiniteLoss` when the loss is not finite and :class:`Diverged` when an epoch's
    mean loss is above ``DIVERGED_LOSS_FACTOR * ln(classes)``.

    ``deadline`` (a Unix time, None: no limit): after the checkpoint of an epoch that ends past it,
    and before the last epoch, :class:`DeadlineReached` is raised; the same call resumes. Rank 0's
    clock decides for every rank. An argument rather than something ``fit`` looks up, so that the
    training loop knows nothing of who sets the limit (the study's pipeline: :mod:`mvlib.study.progress`).

    ``on_epoch(history)``: called on rank 0 after each epoch, once its checkpoint is written (the
    study writes the run's history there; the resume tests kill the process on either side of it).

    ``pick="best_val"`` keeps, beside the last state, the weights of the epoch with the best
    validation top-1 (the first such epoch on a tie) in the checkpoint's ``pick`` entry; the model
    holds those weights when ``fit`` returns, and :func:`mvlib.checkpoint.load_model_weights` loads
    them. ``"last"``: the last epoch's weights.

    The last epoch's checkpoint keeps only what a finished run is used for: the weights the run
    keeps (the picked ones) under ``model``, the history and the pick's epoch, no optimizer state and
    no second copy of the weights (a quarter of the size with Adam and ``best_val``). Resuming from it
    trains nothing; asking it for more epochs is a :class:`~mvlib.checkpoint.CheckpointError`.

    ``teacher`` (run in eval mode): the loss is :func:`kd_mixture` with ``kd_weight``; without one, the cross-entropy.

    ``evaluator(model, loader, device)``: how the validation split is evaluated after each epoch
    (default :func:`evaluate`; it must return the same keys).

    ``compile_model``: the training forward and backward run under ``torch.compile`` (inductor), where
    the binary layers take their torch path and the compiler fuses it (:func:`mvlib.fused.kernels_enabled`).
    The compiled code rounds in its own order, so a compiled run is another run; evaluation and the
    checkpoint use ``model`` itself, eager.

    ``precision="bf16"``: the training forward (student and teacher) runs under
    ``torch.autocast(device, torch.bfloat16)``: real-valued convolutions and matrix products take bf16
    operands; the binary convolutions stay exact (:class:`mvlib.layers.BinaryConv2d`), their backward
    convolutions take bf16 operands. The loss is computed in float32. Evaluation is float32.
    """
    _check_fit_arguments(epochs, lr, pick, precision, kd_weight)
    rank, world = init_distributed(device)
    model.to(device)
    net = model
    if world > 1:
        use_global_batchnorm(model)  # the statistics of the global batch, as one process would compute them
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None)
    if compile_model:
        net = torch.compile(net)  # shares model's parameters: the optimizer and checkpoints see one set
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    total = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup_steps, schedule))
    start_epoch, history, best = 0, [], None  # best: {"rule", "epoch", "val_top1", "model"} with best_val
    if checkpoint_path is not None and os.path.isfile(checkpoint_path):
        start_epoch, history, best = _resume(checkpoint_path, arch, model, opt, sched, epochs)
        if rank == 0:
            log(f"resumed from {checkpoint_path} after epoch {start_epoch}")
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if teacher is not None:
        teacher.to(device).eval()
    trainer = _Trainer(net, model, opt, sched, nn.CrossEntropyLoss(label_smoothing=label_smoothing), teacher,
                       kd_weight, autocast, agc_clip, device, rank, world)
    for epoch in range(start_epoch, epochs):
        t0, c0 = time.time(), time.process_time()  # wall time, and the process's CPU time over all its threads
        totals = trainer.run_epoch(train_loader, epoch, f"epoch {epoch + 1}/{epochs}", progress and rank == 0)
        _stop_if_diverged(totals, epoch, opt.param_groups[0]["lr"])
        ev = (evaluator or evaluate)(model, val_loader, device)
        history.append({"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": totals.mean_loss,
                        "train_top1": totals.top1, "val_loss": ev["loss"], "val_top1": ev["top1"],
                        "val_top5": ev["top5"], "seconds": time.time() - t0,
                        "cpu_seconds": time.process_time() - c0})
        if pick == "best_val":
            best = _better_pick(best, history[-1], model)
        if rank == 0:
            _log_epoch(log, history, epochs)
            if checkpoint_path is not None:
                _save_checkpoint(checkpoint_path, epoch + 1, model, opt, sched, history, arch, best,
                                 final=epoch + 1 == epochs)
            if on_epoch is not None:
                on_epoch(history)
        if _deadline_passed(deadline, world) and epoch + 1 < epochs:
            raise DeadlineReached(f"the time allowed ran out after epoch {epoch + 1}/{epochs} (checkpointed): "
                                  f"run the same command again to resume")
    if best is not None:
        if "model" in best:  # else the model was loaded from a final checkpoint, which holds the picked weights
            model.load_state_dict(best["model"])
        if rank == 0:
            log(f"picked epoch {best['epoch']} (best validation top-1 {best['val_top1']:.2f}%)")
    return history
