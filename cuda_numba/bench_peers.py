"""The peers of the network benchmark: plain torch fp32, its bf16 and int8 paths, Larq Compute Engine.

:func:`plain_resnet18` is the same network as mvlib's ReActNet-18 (stem, 16
blocks of one 3x3 convolution with its own shortcut, AvgPool + 1x1 projection
shortcuts, BN, a PReLU with learnable shifts, global pooling, linear) with
*real* convolutions: what a user would run without binarization. It is timed

* in fp32 (eager, channels-last: oneDNN's fastest layout for it on this CPU),
* in bf16 (weights and activations ``torch.bfloat16``; AMX/AVX-512-BF16 where
  the CPU has them, as this one does),
* in int8 (post-training static quantization, FX graph mode, the ``x86``
  backend: oneDNN/FBGEMM int8 convolutions), where it converts.

Larq Compute Engine (LCE), the peer for binary inference, runs in a separate
Python environment (it needs TensorFlow 2.16, which this project does not
depend on): :class:`LceWorker` starts ``cuda_numba/lce_worker.py`` under that
environment's interpreter (``--lce-python``), which builds and converts a
binary ResNet-18-like CIFAR network in Larq, and answers timing requests over
a pipe, so that its calls are interleaved with the others in the same run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn


class _PReLUShift(nn.Module):
    """RPReLU with real-valued ops: ``PReLU(x - gamma) + zeta`` (the same shape of computation as mvlib's)."""

    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.zeta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.prelu = nn.PReLU(c, 0.25)

    def forward(self, x):
        return self.prelu(x - self.gamma) + self.zeta


class _PlainBlock(nn.Module):
    def __init__(self, cin, cout, stride, act: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.AvgPool2d(2) if stride != 1 else nn.Identity(),
                                       nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = _PReLUShift(cout) if act else nn.PReLU(cout, 0.25)

    def forward(self, x):
        res = x if self.short is None else self.short(x)
        return self.act(self.bn(self.conv(x)) + res)


class PlainResNet18(nn.Module):
    """ReActNet-18's shape with real 3x3 convolutions (``simple_act``: a plain PReLU, for int8 conversion)."""

    def __init__(self, width=64, num_classes=10, simple_act=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for i in range(4):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(_PlainBlock(cin, width * mult, stride, not simple_act))
                cin = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def plain_fp32(width=64, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return PlainResNet18(width).eval().to(memory_format=torch.channels_last)


def plain_bf16(width=64, seed=0) -> nn.Module:
    return plain_fp32(width, seed).to(torch.bfloat16)


def plain_int8(width=64, seed=0, calib_batches=2):
    """Post-training static int8 quantization (FX, ``x86`` backend); returns (model, None) or (None, reason)."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.manual_seed(seed)
        model = PlainResNet18(width, simple_act=True).eval()
        example = torch.randn(2, 3, 32, 32)
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (example,))
        with torch.no_grad():
            for _ in range(calib_batches):
                prepared(torch.randn(8, 3, 32, 32))
        q = convert_fx(prepared)
        with torch.no_grad():
            q(example.contiguous(memory_format=torch.channels_last))
        return q, None
    except Exception as err:  # noqa: BLE001 - any failure means "does not run this network", reported as such
        return None, f"{type(err).__name__}: {err}"[:300]


def as_input(model_kind: str, x: torch.Tensor) -> torch.Tensor:
    """The input in the layout/dtype each peer wants (converted once, outside the timed calls)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return x.to(torch.bfloat16) if model_kind == "bf16" else x


# --------------------------------------------------------------------------
# Larq Compute Engine in its own interpreter
# --------------------------------------------------------------------------
LCE_WORKER = Path(__file__).with_name("lce_worker.py")


class LceWorker:
    """A running ``lce_worker.py``: ``time(batch)`` runs one inference of that batch size and returns seconds."""

    def __init__(self, python: str, width: int, threads: int, batches, clock: str = "wall"):
        self.proc = subprocess.Popen([python, str(LCE_WORKER), "--width", str(width), "--threads", str(threads),
                                      "--clock", clock, "--batches", *map(str, batches)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = json.loads(self._readline())
        if not hello.get("ready"):
            raise RuntimeError(f"LCE worker failed: {hello}")
        self.info = hello

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"LCE worker exited (code {self.proc.poll()})")
        return line

    def time(self, batch: int) -> float:
        self.proc.stdin.write(f"{batch}\n")
        return float(json.loads(self._readline())["seconds"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_lce(python: str | None, width: int, threads: int, batches, clock: str = "wall", log=print):
    """(worker, None) when ``python`` runs LCE, else (None, reason)."""
    if not python:
        return None, "no --lce-python given (LCE needs its own TensorFlow 2.16 environment)"
    try:
        return LceWorker(python, width, threads, batches, clock), None
    except Exception as err:  # noqa: BLE001 - reported, the rest of the benchmark goes on
        log(f"LCE not measured: {err}")
        return None, f"{type(err).__name__}: {err}"[:300]


if __name__ == "__main__":  # pragma: no cover - quick manual check of the peers
    for name, m in (("fp32", plain_fp32()), ("bf16", plain_bf16())):
        with torch.no_grad():
            print(name, m(as_input(name, torch.randn(2, 3, 32, 32))).shape)
    print("int8", plain_int8()[1] or "ok", file=sys.stderr)
