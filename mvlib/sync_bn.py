"""Data-parallel training's process group, and BatchNorm over the global batch of all ranks (gloo on CPU too).

:func:`init_distributed` joins the process group torchrun describes and
:func:`close_distributed` leaves it; :func:`mvlib.train.fit` calls the first,
a worker process the second before it exits.

Why: under DistributedDataParallel every rank sees ``batch / world`` images.
A plain BatchNorm normalizes by the statistics of that slice, so N ranks
train a different function from one process with the whole batch.
``torch.nn.SyncBatchNorm`` fixes that on GPUs only (it refuses CPU tensors),
and the project's multi-process test runs on CPU with gloo. This module
computes the statistics of the global batch with a differentiable
``all_reduce`` (``torch.distributed.nn.functional``), so forward values and
gradients equal one process's with the whole batch, up to the order of
floating-point additions.

:func:`use_global_batchnorm` switches a model's ``nn.BatchNorm2d`` layers to
:class:`GlobalBatchNorm2d` in place; :func:`mvlib.train.fit` does it when it
runs under torchrun with more than one rank.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are those of the batch of all ranks.

    Forward (training, world > 1): ``mean`` and biased ``var`` per channel over
    every rank's images and positions (two all-reduces: the sums, then the
    squared deviations), ``y = (x - mean) / sqrt(var + eps) * weight + bias``;
    running statistics updated as BatchNorm does (unbiased variance, ``momentum``
    or the cumulative average when it is None). Backward: through the
    all-reduces, so each rank's gradient is its share of the global one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        c = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)), x.new_tensor([x.numel() / c])])
        total = all_reduce(local)
        n = total[c]
        mean = total[:c] / n
        centered = x - mean.view(1, -1, 1, 1)
        var = all_reduce((centered * centered).sum((0, 2, 3))) / n
        y = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp_min(1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def use_global_batchnorm(model: nn.Module) -> int:
    """Turn every plain ``nn.BatchNorm2d`` of ``model`` into a :class:`GlobalBatchNorm2d` in place; returns the count.

    Same parameters, buffers and state-dict keys (only ``forward`` changes), and
    outside a process group of more than one rank, or in eval mode, the
    layer computes exactly what BatchNorm computes.
    """
    layers = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for m in layers:
        m.__class__ = GlobalBatchNorm2d
    return len(layers)


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world) and a process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        # before the group exists: torch.distributed.nn.functional's collectives take group.WORLD as a default
        # argument, bound when it is first imported; imported later (DDP and GlobalBatchNorm2d import it lazily),
        # those defaults hold the group for the life of the process, so close_distributed could not end its threads
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
