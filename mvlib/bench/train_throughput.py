"""Training throughput of mvlib's binary ResNet-18s against the unfused reference.

Run::

    python -m mvlib.bench.train_throughput                      # reactnet18 + birealnet18, widths 16 64, batch 128
    python -m mvlib.bench.train_throughput --models reactnet18 --widths 64 --steps 5
    python -m mvlib.bench.train_throughput --models reactnet18 --widths 32 64 --no-reference --compile

For every (model, width, batch size) it times one *training step* -- forward,
cross-entropy, backward, ``Adam.step`` -- of

* ``mvlib``: :func:`mvlib.models.build_model` as the library runs it;
* ``unfused``: :mod:`mvlib.bench.reference_unfused`, the same model written as
  the official ReActNet / "BNN - BN = ?" code is (separate bias, binarizer and
  weight-scaling modules), with mvlib's parameters copied in;
* ``official`` (``--official``): the reference with the published code's own
  quirks (``torch.sign``, alpha folded into the weights, no rounding) -- a
  slightly different function, timed only to compare with the reference
  speed of 32 img/s (ReActNet-18, width 64, batch 128, on the 2-core CPU).

``--allocator tuned`` applies :func:`mvlib.cpu_fast.tune_cpu_allocator` to
the whole process (all variants): glibc then reuses freed 32 MiB activation
blocks instead of faulting fresh pages in for each. It speeds up every
variant, the unfused ones most (they allocate more tensors).

Data loading is excluded (one fixed normalized random batch; BN statistics do
not depend on what the images show). The first ``--warmup`` steps of each
variant are not timed (allocator, oneDNN primitive caches). The variants'
timed steps are *interleaved* (mvlib, unfused, mvlib, unfused, ...) so that
load from other processes on a shared machine hits them alike; each
variant's images/s is ``batch / median step time`` and the ratio is
``mvlib img/s / unfused img/s`` from those medians.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu_fast import tune_cpu_allocator
from ..environment import cpu_name
from ..models import build_model
from ..voter_ops import set_voter
from .reference_unfused import reference_from
from .timing import interleaved_times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3, bf16: bool = False):
    """A closure running one training step (forward, loss, backward, Adam) of ``model``.

    ``bf16``: the forward under ``torch.autocast(bfloat16)`` and the loss in float32, as
    :func:`mvlib.train.fit` does with ``precision="bf16"``.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model(x).float()
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        return loss

    return step


def time_variants(steps_by_name: dict, device: torch.device, steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each variant, warm-up excluded, timed steps interleaved."""
    return interleaved_times(steps_by_name, steps, warmup, sync=lambda: _sync(device))


VOTERS = {"none": None, "mv": {"name": "mv"}, "hmv4": {"name": "hmv", "fanins": 4, "tie": "pos"}}


def bench_one(model_name: str, width: int, batch: int, device: torch.device, steps: int, warmup: int,
              reference: bool = True, official: bool = False, seed: int = 0, voter: str = "none",
              bf16: bool = False, compiled: bool = False) -> dict:
    """Images/s of mvlib (and the references) for one configuration.

    ``bf16``: also time ``mvlib-bf16``, the same model (a copy of its parameters) trained under bf16
    autocast; ``ratio_bf16_vs_fp32`` is its images/s over mvlib's float32 images/s.

    ``compiled``: also time ``mvlib-compiled``, the same model under ``torch.compile`` (inductor; the layers'
    torch path, which the compiler fuses); ``compile_s`` is its first step, tracing and code generation
    included, and ``ratio_compiled_vs_eager`` its images/s over mvlib's.

    ``voter`` (``none``, ``mv``, ``hmv4``): training through a voter in every binary
    convolution (retraining's step); the references exist for the popcount network only.
    """
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=10, width=width).to(device)
    if VOTERS[voter] is not None:
        set_voter(model, VOTERS[voter])
        reference = official = False
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    variants = {}
    # The references copy mvlib's initial parameters, so all variants start alike.
    if reference:
        variants["unfused"] = make_step(reference_from(model), x, y)
    if official:
        variants["official"] = make_step(reference_from(model, official_quirks=True), x, y)
    if bf16:
        variants["mvlib-bf16"] = make_step(copy.deepcopy(model), x, y, bf16=True)
    compile_s = None
    if compiled:
        step = make_step(torch.compile(copy.deepcopy(model)), x, y)
        t0 = time.perf_counter()
        step()  # tracing and code generation: once per run, not per step
        compile_s = time.perf_counter() - t0
        variants["mvlib-compiled"] = step
    variants = {"mvlib": make_step(model, x, y), **variants}
    times = time_variants(variants, device, steps, warmup)
    row = {"model": model_name, "width": width, "batch": batch, "voter": voter}
    if compile_s is not None:
        row["compile_s"] = compile_s
    for name, ts in times.items():
        med = statistics.median(ts)
        row[f"{name}_img_s"] = batch / med
        row[f"{name}_step_s"] = med
        row[f"{name}_steps_s"] = ts
    for name in ("unfused", "official"):
        if name in times:
            row[f"ratio_vs_{name}"] = row["mvlib_img_s"] / row[f"{name}_img_s"]
    if bf16:
        row["ratio_bf16_vs_fp32"] = row["mvlib-bf16_img_s"] / row["mvlib_img_s"]
    if compiled:
        row["ratio_compiled_vs_eager"] = row["mvlib-compiled_img_s"] / row["mvlib_img_s"]
    return row


def environment(device: torch.device) -> dict:
    """What the numbers were measured on."""
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "machine": platform.machine(), "cpu": cpu_name(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["load_avg_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return env


def format_row(row: dict) -> str:
    parts = [f"{row['model']:<12} w={row['width']:<3} b={row['batch']:<4} voter={row.get('voter', 'none'):<5}",
             f"mvlib {row['mvlib_img_s']:8.1f} img/s"]
    for name in ("unfused", "official"):
        if f"{name}_img_s" in row:
            parts.append(f"{name} {row[f'{name}_img_s']:8.1f} img/s  x{row[f'ratio_vs_{name}']:.2f}")
    if "mvlib-bf16_img_s" in row:
        parts.append(f"mvlib bf16 {row['mvlib-bf16_img_s']:8.1f} img/s  x{row['ratio_bf16_vs_fp32']:.2f} of fp32")
    if "mvlib-compiled_img_s" in row:
        parts.append(f"compiled {row['mvlib-compiled_img_s']:8.1f} img/s  x{row['ratio_compiled_vs_eager']:.2f} "
                     f"of eager (compiling: {row['compile_s']:.0f} s)")
    return " | ".join(parts)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["reactnet18", "birealnet18"])
    ap.add_argument("--widths", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[128])
    ap.add_argument("--voters", nargs="+", default=["none"], choices=sorted(VOTERS),
                    help="train through a voter: none (popcount), mv, hmv4 (G=4, tie +1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    ap.add_argument("--no-reference", action="store_true", help="time mvlib only")
    ap.add_argument("--official", action="store_true",
                    help="also time the reference with the published code's quirks (anchor comparison)")
    ap.add_argument("--allocator", choices=("default", "tuned"), default="default",
                    help="tuned: keep freed 32 MiB blocks in glibc's heap (mvlib.cpu_fast.tune_cpu_allocator), "
                         "for every variant of the run alike")
    ap.add_argument("--bf16", action="store_true",
                    help="also time mvlib trained under bf16 autocast (precision=bf16) and print its ratio to fp32")
    ap.add_argument("--compile", action="store_true",
                    help="also time mvlib under torch.compile (inductor) and print its ratio to the eager step")
    ap.add_argument("--json", default="", help="also write the rows and the environment to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = args.allocator
    if allocator == "tuned" and not tune_cpu_allocator():
        allocator = "default (tuning unavailable)"
    device = torch.device(args.device)
    env = environment(device)
    env["allocator"] = allocator
    print("# training step (forward + backward + Adam), data loading excluded; "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up")
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    rows = []
    for model_name in args.models:
        for width in args.widths:
            for batch in args.batch_sizes:
                for voter in args.voters:
                    row = bench_one(model_name, width, batch, device, args.steps, args.warmup,
                                    reference=not args.no_reference, official=args.official, voter=voter,
                                    bf16=args.bf16, compiled=args.compile)
                    rows.append(row)
                    print(format_row(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
