"""Training and evaluation loops: optimizer, schedule, checkpoint/resume, KD, DDP.

``fit`` trains a model for a number of epochs and checkpoints after every
epoch (atomically); called again with the same checkpoint path it resumes from
the last finished epoch and reaches exactly the parameters an uninterrupted run
reaches (the data order and augmentation are functions of (seed, epoch)).
After each epoch it evaluates on the *validation* loader it is given (never
the test split: nothing is chosen on test). A loss that is not finite stops
training with :class:`NonFiniteLoss` before the optimizer step, so a diverged
run is never checkpointed past its last good epoch.

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
import signal
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # text bars: tqdm.auto needs ipywidgets in a kernel and warns without them

from .checkpoint import CheckpointError, check_arch, load_checkpoint, save_checkpoint
from .layers import BinaryConv2d
from .sync_bn import use_global_batchnorm


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
    """The time allowed (``MVLIB_DEADLINE``, a Unix time) ran out after a checkpointed epoch: rerun to resume."""


DEADLINE_ENV = "MVLIB_DEADLINE"


def deadline_passed() -> bool:
    """True when ``$MVLIB_DEADLINE`` (seconds since the epoch; set by ``pipeline --max-hours``) lies in the past."""
    v = os.environ.get(DEADLINE_ENV)
    return bool(v) and time.time() >= float(v)


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


def _fault_point(where: str, epoch: int) -> None:
    """kill -9 this process after ``epoch`` when ``MVLIB_KILL_AFTER_<where>`` names it (the resume tests' faults)."""
    if os.environ.get(f"MVLIB_KILL_AFTER_{where}") == str(epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}h{m % 60:02d}m"


# ----------------------------------------------------------------- distributed
def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world) and a process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        # before the group exists: this module's collectives take group.WORLD as a default argument, bound
        # when it is first imported; imported later (DDP and GlobalBatchNorm2d import it lazily), those
        # defaults hold the group for the life of the process, so close_distributed could not end its threads
        import torch.distributed.nn.functional  # noqa: F401
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), world


def close_distributed() -> None:
    """Destroy the process group, if any, which waits for its communication threads to end.

    Why a torchrun worker calls it before it exits: a gloo thread frees a finished collective, and
    the tensors it was given, a moment after the ranks' wait returns. Still running at interpreter
    exit, it can free one while Python finalizes; it cannot take the GIL then, is ended inside a C++
    destructor, and the process aborts ("terminate called without an active exception") after a run
    that trained.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------- fit
def fit(model: nn.Module, train_loader, val_loader, *, epochs: int, optimizer: str = "adam", lr: float = 1e-3,
        schedule: str = "cosine", warmup_steps: int = 0, weight_decay: float = 0.0, momentum: float = 0.9,
        label_smoothing: float = 0.0, teacher: nn.Module | None = None, agc_clip: float = 0.0,
        checkpoint_path=None, arch: dict[str, Any] | None = None, device="cpu", progress: bool = True,
        pick: str = "last", on_epoch: Callable[[list[dict]], None] | None = None,
        log: Callable[[str], None] = print, evaluator: Callable[..., dict] | None = None,
        precision: str = "fp32") -> list[dict]:
    """Train for ``epochs``; checkpoint each epoch; resume from ``checkpoint_path`` if present.

    Returns the per-epoch history (epoch, lr, train_loss, train_top1, val_loss, val_top1, val_top5,
    seconds, elapsed). ``log`` gets one line per epoch with the elapsed time and an estimate of the
    time left. Raises :class:`NonFiniteLoss` when the loss is not finite, :class:`Diverged` when an
    epoch's mean loss is above ``DIVERGED_LOSS_FACTOR * ln(classes)``, and
    :class:`DeadlineReached` after the checkpoint of an epoch that ends past ``$MVLIB_DEADLINE``.

    ``pick="best_val"`` keeps, beside the last state, the weights of the epoch with the best
    validation top-1 (the first such epoch on a tie) in the checkpoint's ``pick`` entry; the model
    holds those weights when ``fit`` returns, and :func:`mvlib.checkpoint.load_model_weights` loads
    them. ``"last"``: the last epoch's weights.

    The last epoch's checkpoint keeps only what a finished run is used for: the weights the run
    keeps (the picked ones) under ``model``, the history and the pick's epoch, no optimizer state and
    no second copy of the weights (a quarter of the size with Adam and ``best_val``). Resuming from it
    trains nothing; asking it for more epochs is a :class:`~mvlib.checkpoint.CheckpointError`.

    ``evaluator(model, loader, device)``: how the validation split is evaluated after each epoch
    (default :func:`evaluate`; it must return the same keys).

    ``precision="bf16"``: the training forward (student and teacher) runs under
    ``torch.autocast(device, torch.bfloat16)``: real-valued convolutions and matrix products take bf16
    operands; the binary convolutions stay exact (:class:`mvlib.layers.BinaryConv2d`), their backward
    convolutions take bf16 operands. The loss is computed in float32. Evaluation is float32.
    """
    if pick not in ("last", "best_val"):
        raise ValueError(f"pick must be last or best_val, got {pick!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    rank, world = init_distributed(device)
    model.to(device)
    net = model
    if world > 1:
        use_global_batchnorm(model)  # the statistics of the global batch, as one process would compute them
        net = nn.parallel.DistributedDataParallel(model, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None)
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    total = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup_steps, schedule))
    history: list[dict] = []
    start_epoch = 0
    best = None  # {"rule", "epoch", "val_top1", "model"} when pick == "best_val"
    if checkpoint_path is not None and os.path.isfile(checkpoint_path):
        state = load_checkpoint(checkpoint_path)
        if arch is not None:
            check_arch(checkpoint_path, state["arch"], arch)
        model.load_state_dict(state["model"])
        start_epoch, history = state["epoch"], list(state["history"])
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        elif start_epoch < epochs:
            raise CheckpointError(f"{checkpoint_path} is the final checkpoint of a {start_epoch}-epoch run "
                                  f"(no optimizer state); it cannot be trained on to {epochs} epochs")
        best = state.get("pick")
        if rank == 0:
            log(f"resumed from {checkpoint_path} after epoch {start_epoch}")
    crit = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    dev_type = torch.device(device).type
    autocast = (torch.autocast(dev_type, dtype=PRECISIONS[precision]) if PRECISIONS[precision] is not None
                else contextlib.nullcontext())
    if teacher is not None:
        teacher.to(device).eval()
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        net.train()
        train_loader.set_epoch(epoch)
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False)
        for step_i, (x, y) in enumerate(bar, 1):
            if world > 1:
                x, y = x.chunk(world)[rank], y.chunk(world)[rank]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                out = net(x).float()
                if teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(x).float()
            loss = distillation_loss(out, t_out) if teacher is not None else crit(out, y)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"training loss is {loss.item()} at epoch {epoch + 1}, step {step_i} "
                                    f"(lr {opt.param_groups[0]['lr']:.3g}): the run diverged; its last good "
                                    f"checkpoint is of epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if agc_clip > 0:
                from .agc import adaptive_grad_clip_  # only the BN-Free recipe needs it
                adaptive_grad_clip_(model, agc_clip)
            opt.step()
            sched.step()
            tot_loss += loss.item() * y.numel()
            tot_correct += (out.argmax(1) == y).sum().item()
            tot_n += y.numel()
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{100 * tot_correct / tot_n:.1f}")
        limit = DIVERGED_LOSS_FACTOR * math.log(max(out.shape[1], 2)) if tot_n else math.inf
        if tot_loss / max(tot_n, 1) > limit:
            raise Diverged(f"mean training loss {tot_loss / max(tot_n, 1):.3g} at epoch {epoch + 1} is above "
                           f"{DIVERGED_LOSS_FACTOR:g} x ln({out.shape[1]}) = {limit:.3g} (lr "
                           f"{opt.param_groups[0]['lr']:.3g}): the run diverged and is not recorded as finished; "
                           f"its last good checkpoint is of epoch {epoch}")
        ev = (evaluator or evaluate)(model, val_loader, device)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": tot_loss / max(tot_n, 1),
               "train_top1": 100.0 * tot_correct / max(tot_n, 1), "val_loss": ev["loss"],
               "val_top1": ev["top1"], "val_top5": ev["top5"], "seconds": time.time() - t0}
        history.append(row)
        if pick == "best_val" and (best is None or row["val_top1"] > best["val_top1"]):
            best = {"rule": pick, "epoch": epoch + 1, "val_top1": row["val_top1"],
                    "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if rank == 0:
            done_s = sum(r["seconds"] for r in history)
            left_s = done_s / len(history) * (epochs - epoch - 1)
            log(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.3f} top1 {row['train_top1']:.1f}% | "
                f"val top1 {row['val_top1']:.2f}% | {row['seconds']:.0f}s, elapsed {_clock(done_s)}, "
                f"left ~{_clock(left_s)}")
            if checkpoint_path is not None and epoch + 1 < epochs:
                save_checkpoint(checkpoint_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                  "scheduler": sched.state_dict(), "epoch": epoch + 1,
                                                  "history": history, "arch": arch or {},
                                                  **({"pick": best} if best is not None else {})})
            elif checkpoint_path is not None:  # finished: the kept weights only
                kept = best["model"] if best is not None else model.state_dict()
                save_checkpoint(checkpoint_path, {"model": kept, "epoch": epoch + 1, "history": history,
                                                  "arch": arch or {}, **({"pick": {k: v for k, v in best.items()
                                                                                   if k != "model"}}
                                                                         if best is not None else {})})
                _fault_point("CHECKPOINT", epoch + 1)
            if on_epoch is not None:
                on_epoch(history)
            _fault_point("EPOCH", epoch + 1)
        stop = deadline_passed()
        if world > 1:  # rank 0's clock decides for all ranks
            flag = torch.tensor([int(stop)])
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if epoch + 1 < epochs and stop:
            raise DeadlineReached(f"the time allowed ran out after epoch {epoch + 1}/{epochs} (checkpointed): "
                                  f"run the same command again to resume")
    if best is not None:
        if "model" in best:  # else the model was loaded from a final checkpoint, which holds the picked weights
            model.load_state_dict(best["model"])
        if rank == 0:
            log(f"picked epoch {best['epoch']} (best validation top-1 {best['val_top1']:.2f}%)")
    return history
