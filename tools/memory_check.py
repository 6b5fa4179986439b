"""Will each training of a profile fit in this device's memory? A pre-flight check before a long run.

For every (network, width, voter) that a profile trains (the rows of :func:`mvlib.study.estimate.count`), one
fresh process takes a training step (forward, backward, Adam) at two small batches and reports its peak memory:
on a GPU ``torch.cuda.max_memory_allocated``, on a CPU the process's peak resident set (Linux ``VmHWM``),
each reset before the step it measures (after a first, unmeasured step).
The peak is fitted as ``base + per_image x batch`` and extrapolated to the batch the profile trains that network
at (its recipe's; the teacher's own; the appendix's) and to the estimate's measuring batch (``estimate.measure_batch``),
then compared with the device's memory. Why a tool: the float simulation of a voter tree holds one tensor per
leaf block, so its memory grows with the leaves (from ``mvlib.voters.RECOMPUTE_FROM_LEAVES`` leaves the tree is
recomputed in the backward pass instead of kept, which this tool measured first: the 64-leaf tree's 237-258
MiB per image fell to 60-101 in two runs), and the largest decides whether a paper run's notebook 09 can train at
all; a step that does not fit is killed by the operating system, which no ``try`` can catch.

    python tools/memory_check.py --profile paper [--device cuda] [--only hmv] [--memory-gib 80]

``--memory-gib`` compares with that much memory instead of this device's (e.g. planning a GPU run from a CPU box:
the CPU's resident set is then a proxy for the GPU's allocations, which differ by allocator and workspaces).

Prints one line per key, then the keys that do not fit. Exit status 1 when any does not.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from mvlib.models import TEACHERS, TRAINED_BY_OWN_RECIPE
from mvlib.study.config import load_profile, recipe_for
from mvlib.study.estimate import build_network, count, measure_batch
from mvlib.teacher import Recipe

PROBE_BATCHES = (4, 8)  # images: small enough for any key on a CPU box, far enough apart for the slope
# On a CPU, below this the two peaks differ by less than the allocator's noise (tens of MiB): the line then says "<=" and
# extrapolates this slope from the larger probe's peak, an upper bound (the small networks need little anyway).
RESOLUTION_MIB_PER_IMAGE = 16.0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux: "5" resets the process's peak resident set (VmHWM) to its current one
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024  # kB


def probe(net: str, width: int, voter: str, device: str) -> list[float]:
    """Peak MiB of one training step at each of :data:`PROBE_BATCHES` (run in a fresh process).

    A first step at the smaller batch comes before any measurement: it compiles the Numba kernels and creates
    Adam's moments, whose one-off peak (hundreds of MiB of compiler memory on a cold cache) would otherwise
    hide the step's own. The peak is reset before each measured step."""
    dev = torch.device(device)
    model = build_network(net, width, voter).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def step(b):
        x, y = torch.randn(b, 3, 32, 32, device=dev), torch.randint(0, 10, (b,), device=dev)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    step(PROBE_BATCHES[0])
    peaks = []
    for b in PROBE_BATCHES:
        _reset_peak(dev)
        step(b)
        peaks.append(_peak_mb(dev))
    return peaks


def device_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemTotal")) / 1024


def train_batches(cfg: dict) -> dict:
    """The batch each trained (network, width, voter) of ``cfg`` trains at (the largest, where steps differ)."""
    out = {}
    for (step, kind, net, width, voter) in count(cfg).rows:
        if kind != "train":
            continue
        if net in TRAINED_BY_OWN_RECIPE:  # the airbench teacher's batch is its recipe's, not teacher_batch_size
            b = Recipe.batch_size
        elif net in TEACHERS:
            b = cfg["teacher_batch_size"]
        elif step.startswith("06"):
            b = cfg["appendix_batch_size"] or cfg["batch_size"]
        else:
            b = recipe_for(cfg, net)["batch_size"]
        out[(net, width, voter)] = max(b, out.get((net, width, voter), 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="", help="keys whose voter tag starts with this (e.g. hmv)")
    ap.add_argument("--memory-gib", type=float, default=0.0, help="compare with this memory, not this device's")
    ap.add_argument("--child", nargs=3, metavar=("NET", "WIDTH", "VOTER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        net, width, voter = args.child
        print(json.dumps(probe(net, int(width), voter, args.device)))
        return 0
    cfg = load_profile(args.profile)
    if args.memory_gib < 0:
        ap.error(f"--memory-gib must not be negative (0: this device's memory), not {args.memory_gib}")
    total = args.memory_gib * 1024 or device_mb(args.device)
    print(f"profile {args.profile}, device {args.device}, compared with {total / 1024:.1f} GiB"
          f"{'' if args.memory_gib else ' (its memory)'}; probe batches {PROBE_BATCHES}")
    too_big = []
    for (net, width, voter), batch in sorted(train_batches(cfg).items()):
        if not voter.startswith(args.only):
            continue
        out = subprocess.run([sys.executable, __file__, "--device", args.device, "--child", net, str(width), voter],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            print(f"  {net} width {width} voter {voter}: probe failed: {out.stderr.strip().splitlines()[-1:]}")
            too_big.append((net, width, voter, batch))
            continue
        p1, p2 = json.loads(out.stdout.strip().splitlines()[-1])
        per_image = (p2 - p1) / (PROBE_BATCHES[1] - PROBE_BATCHES[0])
        resolution = RESOLUTION_MIB_PER_IMAGE if args.device == "cpu" else 0.0  # CUDA's counter is exact
        bound = per_image < resolution  # the two peaks differ by less than the allocator's noise
        per_image = max(per_image, resolution)
        base = p2 - per_image * PROBE_BATCHES[1]
        need = {b: (base + per_image * b) / 1024 for b in sorted({batch, measure_batch(cfg["batch_size"], args.device)})}
        fits = all(gib * 1024 <= total for gib in need.values())
        print(f"  {net:<12} width {width:>2} voter {voter:<24} {'<=' if bound else '  '}{per_image:7.1f} MiB/image; "
              + ", ".join(f"batch {b}: {'<=' if bound else '  '}{gib:6.1f} GiB" for b, gib in need.items())
              + ("" if fits else "  DOES NOT FIT"))
        if not fits:
            too_big.append((net, width, voter, batch))
    if too_big:
        print(f"do not fit in {total / 1024:.1f} GiB at the profile's batch: "
              + "; ".join(f"{n} width {w} voter {v} (batch {b})" for n, w, v, b in too_big))
        return 1
    print(f"every training fits in {total / 1024:.1f} GiB at the profile's batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
