"""A fast float CIFAR-10 teacher for distilling the binary ResNet-18s, trained on the CPU.

What it reproduces: the recipe of the ``airbench94`` CIFAR-10 speedrun (Keller
Jordan, github.com/KellerJordan/cifar10-airbench, paper arXiv:2404.00498),
which reports 94.01 % mean test top-1 after 9.9 epochs on all 50,000 training
images on an A100 GPU. The parts kept are the ones that do not depend on the
GPU: a small VGG-like net (a frozen 2x2 patch-whitening convolution set from
the data's patch covariance, then three blocks conv-pool-BN-GELU-conv-BN-GELU
of widths 64/256/256, a max over the last 3x3 map and a linear head), BatchNorm
with a frozen scale, label smoothing 0.2, Nesterov SGD with a linear
warm-up/decay schedule and a 64x learning rate for the BN biases, a lookahead
average of the weights, alternating horizontal flips plus 2-pixel reflected
translations, and horizontal-flip test-time augmentation. Left out: half
precision, ``torch.compile`` and the translated test-time views. Everything is
float32, channels_last (oneDNN's preferred layout for CPU convolutions).

Data: the project's split only (:func:`mvlib.data.load_split` with
``val_per_class=500``): 45,000 training images, and the 5,000 held-out
validation images for the reported numbers; the test split is never read.

Hardware and expected result: made for the 2-core CPU (no GPU); the target
is >= 93 % validation top-1 in <= 1 hour. Neither the time nor the accuracy
is assumed here: both are measured, the time budget beforehand by::

    python -m mvlib.teacher --bench                 # training images/s, time for --epochs
    python -m mvlib.teacher --epochs 10 --out results/teacher/airbench.pt

and the second command writes the measured validation top-1 (with and
without flip TTA), seconds, CPU name and torch version next to the weights.

The study trains it as a distillation teacher (``teacher_model: airbench``,
:mod:`mvlib.study.airbench_run`) through :func:`train_teacher` with two
additions made for that use: per-epoch training states (``on_epoch``) that
``resume`` continues bit for bit, and the normalization constants of the
student's dataset (``dataset``), since a teacher sees the student's batches.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import CIFAR_MEAN_STD

__all__ = ["Recipe", "TeacherNet", "build_teacher", "study_teacher", "whitening_filters", "make_optimizer",
           "train_step", "train_teacher", "evaluate", "normalize", "augment"]

CL = torch.channels_last


@dataclass(frozen=True)
class Recipe:
    """The training settings, with airbench94's values as defaults (units in the comments).

    airbench states its learning rate and weight decay per 1,024 examples with the
    summed loss and the momentum factored out; here they are restated as the plain
    ``torch.optim.SGD`` numbers for the batch-*mean* loss at batch 1024, which are the
    same updates: 11.5 / (1 + 1 / (1 - 0.85)) = 1.5 and 0.0153 / 11.5.
    """
    epochs: float = 10.0             # passes over the training split (airbench94: 9.9); fractions allowed
    batch_size: int = 1024           # images per step
    lr: float = 1.5                  # SGD step size at batch 1024 (mean loss), scaled in proportion to batch_size
    momentum: float = 0.85           # Nesterov momentum factor
    weight_decay: float = 0.0153 / 11.5  # L2 coefficient (~1.33e-3), i.e. lr * weight_decay decay per step
    label_smoothing: float = 0.2     # probability mass spread uniformly over the 10 classes
    bias_lr_scale: float = 64.0      # BN biases step 64x faster; their decay is divided by 64 (same per step)
    warmup_frac: float = 0.23        # fraction of the steps over which lr rises linearly ...
    lr_start: float = 0.2            # ... from lr_start * lr to lr, then falls linearly ...
    lr_end: float = 0.07             # ... to lr_end * lr at the last step
    whiten_bias_epochs: int = 3      # epochs the whitening bias trains before it freezes too
    whiten_images: int = 5000        # training images whose 2x2 patches set the whitening filters
    translate: int = 2               # pixels of random reflected shift in each direction
    lookahead_every: int = 5         # steps between lookahead averages of the weights (0: off)
    width_scale: float = 1.0         # multiplies the block widths 64/256/256
    seed: int = 0                    # initial weights, batch order, flips and shifts


RECIPE = Recipe()


def normalize(images: torch.Tensor, dataset: str = "cifar10") -> torch.Tensor:
    """uint8 [N, 3, 32, 32] -> float32 with the dataset's mean/std of mvlib.data (those the study's loaders use)."""
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in CIFAR_MEAN_STD[dataset])
    return (images.float() / 255.0 - mean) / std


def whitening_filters(x: torch.Tensor, kernel: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """Conv filters [2 * 3k^2, 3, k, k] that decorrelate the k x k patches of normalized images ``x``.

    Each filter projects a patch on one eigenvector of the patches' second-moment
    matrix, divided by the square root of its eigenvalue (+ ``eps``, which keeps the
    near-null directions from being amplified into noise); largest eigenvalue first.
    The bank is stacked with its negation because a GELU follows: the two signs of
    every direction then both reach the next layer.
    """
    dim = x.shape[1] * kernel * kernel
    moment = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    for chunk in x.split(500):  # a few hundred MB of patches at most at a time
        p = F.unfold(chunk.float(), kernel).transpose(1, 2).reshape(-1, dim).double()
        moment += p.T @ p
        count += len(p)
    evals, evecs = torch.linalg.eigh(moment / count)  # ascending
    filters = (evecs.T / torch.sqrt(evals + eps)[:, None]).flip(0).float()
    filters = filters.reshape(dim, x.shape[1], kernel, kernel)  # unfold's order is (channel, row, col)
    return torch.cat([filters, -filters])


class _Block(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU.

    Pooling right after the first convolution (not after the block) is airbench's
    order: BN and GELU then run on a quarter of the pixels. BN scales stay at 1
    (only the biases train), since a scale before GELU adds little here.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        # torch's momentum 0.4 = airbench's 0.6 (the weight of the old running statistics)
        self.norm1, self.norm2 = (nn.BatchNorm2d(cout, eps=1e-12, momentum=0.4) for _ in range(2))
        for conv in (self.conv1, self.conv2):
            # identity on the first cin output channels: the net starts close to passing the
            # whitened input through, which is what lets the high learning rate be stable early
            nn.init.dirac_(conv.weight[:conv.in_channels])
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class TeacherNet(nn.Module):
    """The teacher: ``forward(x)`` gives logits; ``forward(x, tta=True)`` averages x and its mirror image.

    ``tta`` (attribute, default False) is what ``forward(x)`` does in eval mode; in train
    mode it never averages, so one model can be trained plainly and then used (evaluated,
    distilled from) with its test-time augmentation by everything that calls ``model(x)``.
    """

    def __init__(self, widths=(64, 256, 256), num_classes: int = 10, whiten_kernel: int = 2, tta: bool = False):
        super().__init__()
        self.tta = tta
        n_whiten = 2 * 3 * whiten_kernel ** 2
        self.whiten = nn.Conv2d(3, n_whiten, whiten_kernel, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data, never trained
        nn.init.zeros_(self.whiten.bias)
        chans = (n_whiten, *widths)
        self.blocks = nn.Sequential(*(_Block(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.out_scale = 1.0 / 9.0  # small logits at the start; airbench's temperature

    def set_whitening(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalized float images [N, 3, 32, 32]."""
        with torch.no_grad():
            self.whiten.weight.copy_(whitening_filters(images, self.whiten.kernel_size[0]))

    def _logits(self, x):
        x = self.blocks(F.gelu(self.whiten(x)))
        return self.head(x.amax(dim=(2, 3))) * self.out_scale  # max over the last 3x3 map

    def forward(self, x, tta: bool | None = None):
        if tta is None:
            tta = self.tta and not self.training
        if not tta:
            return self._logits(x)
        return 0.5 * (self._logits(x) + self._logits(x.flip(-1)))


def build_teacher(width_scale: float = 1.0, num_classes: int = 10) -> TeacherNet:
    """A TeacherNet with widths round(64, 256, 256 x width_scale), channels_last, float32."""
    widths = tuple(max(1, round(w * width_scale)) for w in (64, 256, 256))
    return TeacherNet(widths, num_classes).to(memory_format=CL)


def study_teacher(num_classes: int = 10, width: int = 64) -> TeacherNet:
    """The teacher as the study's registry builds it (``mvlib.models.TEACHERS["airbench"]``).

    ``width`` is the first block's width, as for the ResNet teachers (64 = airbench94's
    64/256/256; the others scale with it), and the eval-mode forward is the flip TTA:
    the study measures and distils from that forward (:mod:`mvlib.study.airbench_run`).
    """
    model = build_teacher(width / 64, num_classes)
    model.tta = True
    return model


def _generator(seed: int, *stream: int) -> torch.Generator:
    """An independent CPU generator per (seed, stream...) so that every draw is reproducible alone."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def augment(x: torch.Tensor, flip: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Mirror the images where ``flip`` is set and shift each by up to ``pad`` pixels (reflected border)."""
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad:
        n, size = len(x), x.shape[-1]
        padded = F.pad(x, (pad,) * 4, mode="reflect")
        off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
        rows = (off[0, :, None] + torch.arange(size))[:, None, :, None]
        cols = (off[1, :, None] + torch.arange(size))[:, None, None, :]
        x = padded[torch.arange(n).view(-1, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1), rows, cols]
    return x.contiguous(memory_format=CL)


class _Lookahead:
    """Keeps a slow copy of the weights (and BN statistics); every few steps the model moves onto it.

    The slow copy follows the model with a pull that grows as (step / total)^3, so
    early on the model runs free and near the end it averages over recent steps.
    """

    def __init__(self, model: nn.Module):
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def pull(self, keep: float) -> None:
        for s, t in zip(self.slow, self.live):
            s.lerp_(t, 1.0 - keep)
            t.copy_(s)


def make_optimizer(model: TeacherNet, r: Recipe) -> torch.optim.SGD:
    """Nesterov SGD, two groups: the BN biases (lr x bias_lr_scale) and every other trained parameter.

    The whitening bias is in the second group even while frozen: with no gradient SGD skips it.
    """
    norm_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    ids = {id(p) for p in norm_biases}
    others = [p for p in model.parameters() if (p.requires_grad or p is model.whiten.bias) and id(p) not in ids]
    base_lr = r.lr * r.batch_size / 1024  # linear scaling: the step per image stays the same
    return torch.optim.SGD([
        dict(params=norm_biases, lr=base_lr * r.bias_lr_scale, weight_decay=r.weight_decay / r.bias_lr_scale),
        dict(params=others, lr=base_lr, weight_decay=r.weight_decay)], momentum=r.momentum, nesterov=True)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the label-smoothed cross-entropy (batch mean); returns (loss, logits)."""
    out = model(x)
    loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), out.detach()


def _lr_factor(step: int, total: int, r: Recipe) -> float:
    """Piecewise linear: lr_start -> 1 over warmup_frac of the steps, then 1 -> lr_end."""
    up = int(total * r.warmup_frac)
    if step < up:
        return r.lr_start + (1.0 - r.lr_start) * step / up
    return 1.0 + (r.lr_end - 1.0) * (step - up) / max(1, total - up)


def _training_state(model, opt, lookahead, step: int, epoch: int, history: dict) -> dict:
    """What a resume needs after ``epoch`` epochs: tensors and literals only (``torch.load(weights_only=True)``)."""
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
            "lookahead": list(lookahead.slow) if lookahead is not None else [],
            "history": {**history, "epochs": list(history["epochs"])}}


def _restore(state: dict, model, opt, lookahead, recipe: dict) -> tuple[int, int, dict]:
    """Load a :func:`_training_state` into the fresh model, optimizer and lookahead; (step, epoch, history)."""
    if state["history"]["recipe"] != recipe:
        raise ValueError(f"the training state is of recipe {state['history']['recipe']}, not {recipe}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if lookahead is not None:
        for slow, saved in zip(lookahead.slow, state["lookahead"], strict=True):
            slow.copy_(saved)
    history = state["history"]
    return state["step"], state["epoch"], {**history, "epochs": list(history["epochs"])}


def train_teacher(train_images: torch.Tensor, train_labels: torch.Tensor, *,
                  epochs: float = RECIPE.epochs, batch_size: int = RECIPE.batch_size, lr: float = RECIPE.lr,
                  momentum: float = RECIPE.momentum, weight_decay: float = RECIPE.weight_decay,
                  label_smoothing: float = RECIPE.label_smoothing, seed: int = RECIPE.seed,
                  log: Callable[[dict], None] | None = None, val: tuple[torch.Tensor, torch.Tensor] | None = None,
                  num_classes: int = 10, dataset: str = "cifar10", tta: bool = False, resume: dict | None = None,
                  on_epoch: Callable[[dict], None] | None = None, **more) -> tuple[TeacherNet, dict]:
    """Train a teacher on uint8 ``train_images`` [N, 3, 32, 32] / int64 ``train_labels``; returns (model, history).

    ``more`` takes the other :class:`Recipe` fields. Deterministic for a given seed
    and thread count: the weights come from ``torch.manual_seed(seed)``, and the
    order, flips and shifts from generators seeded by (seed, epoch). ``log``
    receives one dict per epoch (loss, accuracy, seconds, estimated seconds left,
    and ``val_top1`` when ``val`` = (images, labels) is given). The history holds
    those dicts and the recipe.

    ``dataset`` picks the normalization constants; ``tta`` sets the model's eval-mode
    forward (:class:`TeacherNet`), used by the per-epoch validation too. ``on_epoch``
    receives after every epoch (after ``log``) the training state: weights, optimizer,
    lookahead copy, step, history; it refers to the live tensors, so it must be saved
    before it returns. Passed back as ``resume`` (same arguments), it continues to the
    bit-identical result of an uninterrupted run, because every random draw is a
    function of (seed, epoch) and the state holds everything else that changes.
    """
    r = Recipe(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
               label_smoothing=label_smoothing, seed=seed, **more)
    torch.manual_seed(r.seed)
    model = build_teacher(r.width_scale, num_classes)
    model.tta = tta
    model.set_whitening(normalize(train_images[:r.whiten_images], dataset))
    x_all = normalize(train_images, dataset)  # once: 45,000 images are 550 MB of float32
    n = len(x_all)
    steps_per_epoch = n // r.batch_size  # a short last batch would give noisy BN statistics
    if steps_per_epoch == 0:
        raise ValueError(f"{n} images give no batch of {r.batch_size}")
    total = math.ceil(steps_per_epoch * r.epochs)

    opt = make_optimizer(model, r)
    group_lr = [g["lr"] for g in opt.param_groups]  # before a restore overwrites them with the last step's
    lookahead = _Lookahead(model) if r.lookahead_every else None
    # alternating flip: each image has a fixed random side, and every other epoch shows the other one
    base_flip = torch.rand(n, generator=_generator(r.seed, 1)) < 0.5

    history, step, first_epoch = {"recipe": asdict(r), "epochs": []}, 0, 0
    if resume is not None:
        step, first_epoch, history = _restore(resume, model, opt, lookahead, history["recipe"])
    # the clock goes on from the saved epochs, so seconds and estimates stay those of the whole run
    t0 = time.perf_counter() - (history["epochs"][-1]["seconds"] if history["epochs"] else 0.0)
    # the process's CPU time (all its threads), cumulative like seconds: what a run costs on a shared machine
    c0 = time.process_time() - (history["epochs"][-1].get("cpu_seconds", 0.0) if history["epochs"] else 0.0)
    model.train()
    for epoch in range(first_epoch, math.ceil(r.epochs)):
        model.whiten.bias.requires_grad_(epoch < r.whiten_bias_epochs)
        gen = _generator(r.seed, 0, epoch)
        order = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * r.batch_size:(i + 1) * r.batch_size]
            x = augment(x_all[idx], base_flip[idx] ^ bool(epoch % 2), r.translate, gen)
            y = train_labels[idx]
            for g, g_lr in zip(opt.param_groups, group_lr):
                g["lr"] = g_lr * _lr_factor(step, total, r)
            loss, out = train_step(model, opt, x, y, r.label_smoothing)
            step += 1
            if lookahead is not None and step % r.lookahead_every == 0:
                lookahead.pull(0.95 ** 5 * (step / total) ** 3)
            loss_sum += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
        if lookahead is not None and step >= total:
            lookahead.pull(1.0)  # end on the slow weights
        elapsed = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "steps": step, "train_loss": loss_sum / seen, "train_top1": correct / seen,
               "seconds": elapsed, "cpu_seconds": time.process_time() - c0,
               "eta_seconds": elapsed / step * (total - step)}
        if val is not None:
            rec["val_top1"] = evaluate(model, *val, dataset=dataset)
            model.train()
        history["epochs"].append(rec)
        if log is not None:
            log(rec)
        if on_epoch is not None:
            on_epoch(_training_state(model, opt, lookahead, step, epoch + 1, history))
    model.eval()
    history["train_seconds"] = time.perf_counter() - t0
    return model, history


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool | None = None,
             batch_size: int = 1000, dataset: str = "cifar10") -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode on uint8 ``images``.

    ``tta``: True adds the mirror view, False does not, None is the model's own eval forward (its ``tta``).
    """
    model.eval()
    correct = 0
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size)):
        out = model(normalize(xb, dataset).contiguous(memory_format=CL), tta=tta)
        correct += int((out.argmax(1) == yb).sum())
    return correct / len(labels)


if __name__ == "__main__":
    from .bench.teacher_run import main
    main()
