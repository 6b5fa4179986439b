"""Size the `cpu` recipe of notebook 06 (the BN / w/o BN / BN-Free appendix), on validation only.

Trains single cells of the appendix grid with the library directly
(:func:`mvlib.models.build_model`, :func:`mvlib.train.fit`,
:func:`mvlib.data.load_split` / :class:`mvlib.data.BatchLoader`) and prints,
per cell, the validation top-1 after every epoch, the seconds per training
epoch and per validation pass, and for every cell the binary-branch /
shortcut rms ratio per block at initialization and at the end
(:func:`mvlib.models.diagnostics.branch_ratios`, geometric mean and range over
the blocks, on a fixed batch of 200 validation images, BN with batch statistics).

Validation = the last ``val_per_class`` images of each class of the train file
(500 for CIFAR-10's ``train.npz``, 10 for CIFAR-100's 100-per-class
``train_subset.npz``); training images are the first ``tpc`` per class of the
rest. The test split is never read here: every recipe choice is made on
validation (docs/METHOD.md).

Usage (one cell per positional argument, ``key=value`` pairs joined by commas;
unspecified keys take the defaults below or ``--set`` values)::

    python tools/probe_appendix.py --set width=16,tpc=500,epochs=3 \\
        model=reactnet18,norm=none model=reactnet18,norm=none,init=reactnet

Keys: model, norm (bn|none|bnfree), dataset (cifar10|cifar100), width (the
ResNet-18 width; ReActNet-A gets the same fraction of its paper width), tpc
(train images per class; 0 = all but validation), epochs, batch, lr, wd, agc
(clip factor, 0 = off), init (binary latent init; '' = the norm's default),
seed, shortcut (1 = shortcut-only network), sched (cosine|linear), opt, aug
(1 = pad-4 crop + flip, 0 = none).
``--timing N`` trains N steps only and reports seconds per step (no accuracy).
Results are appended to ``--out`` (default
``results/probes/appendix_recipe_cpu.txt``), each run's section headed by its
command line.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvlib.data import BatchLoader, load_split  # noqa: E402
from mvlib.models import build_model, relative_width  # noqa: E402
from mvlib.models.diagnostics import branch_ratios, ratio_summary, set_shortcut_only  # noqa: E402
from mvlib.train import evaluate, fit  # noqa: E402

DEFAULTS = {"model": "reactnet18", "norm": "bn", "dataset": "cifar10", "width": 16, "tpc": 500, "epochs": 3,
            "batch": 128, "lr": 2e-3, "wd": 0.0, "agc": 0.0, "init": "", "seed": 0, "shortcut": 0,
            "sched": "cosine", "opt": "adam", "aug": 1}
VAL_PER_CLASS = {"cifar10": 500, "cifar100": 10}
TRAIN_FILE = {"cifar10": "train.npz", "cifar100": "train_subset.npz"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def parse_spec(text: str, base: dict) -> dict:
    spec = dict(base)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown key {key!r} in {text!r}; keys: {', '.join(DEFAULTS)}")
        spec[key] = type(DEFAULTS[key])(value) if not isinstance(DEFAULTS[key], float) else float(value)
    return spec


def build(spec: dict) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    width = relative_width(spec["model"], spec["width"])
    model = build_model(spec["model"], num_classes=NUM_CLASSES[spec["dataset"]], width=width, norm=spec["norm"],
                        binary_init=spec["init"] or None)
    if spec["shortcut"]:
        set_shortcut_only(model)
    return model


def loaders(spec: dict, data_dir: str):
    ds, k = spec["dataset"], VAL_PER_CLASS[spec["dataset"]]
    xtr, ytr = load_split(ds, "train", data_dir, TRAIN_FILE[ds], per_class=spec["tpc"], val_per_class=k)
    xva, yva = load_split(ds, "val", data_dir, TRAIN_FILE[ds], val_per_class=k)
    train = BatchLoader(xtr, ytr, spec["batch"], train=True, augment=bool(spec["aug"]), seed=spec["seed"], dataset=ds)
    val = BatchLoader(xva, yva, 1000, train=False, augment=False, dataset=ds)
    return train, val


def ratio_text(model, xb) -> str:
    if getattr(model, "blocks", None) is not None and not getattr(model.blocks[0], "branch_enabled", True):
        return "-"
    model.train()  # batch statistics for BN cells (buffers are restored); none / bnfree compute the same either way
    s = ratio_summary(branch_ratios(model, xb))
    return f"{s['ratio_gmean']:.2f} [{s['ratio_min']:.2f},{s['ratio_max']:.2f}]"


def run_cell(spec: dict, data_dir: str, timing_steps: int = 0) -> str:
    train, val = loaders(spec, data_dir)
    model = build(spec)
    xb = next(iter(val))[0][:200]
    tag = (f"{spec['dataset']:8s} {spec['model']:11s} {spec['norm']:6s} w{relative_width(spec['model'], spec['width'])} "
           f"init={getattr(model, 'binary_init', '?')} agc={spec['agc']:g} tpc={spec['tpc']} ({len(train.images)} img) "
           f"ep={spec['epochs']} b={spec['batch']} lr={spec['lr']:g} wd={spec['wd']:g} seed={spec['seed']}"
           + ("" if spec["aug"] else " no-aug")
           + (" shortcut-only" if spec["shortcut"] else ""))
    if timing_steps:
        from mvlib.train import make_optimizer
        from mvlib.agc import adaptive_grad_clip_
        opt = make_optimizer(model, spec["opt"], spec["lr"], spec["wd"])
        model.train()
        times = []
        it = iter(train)
        for _ in range(timing_steps + 1):
            x, y = next(it)
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            if spec["agc"] > 0:
                adaptive_grad_clip_(model, spec["agc"])
            opt.step()
            times.append(time.perf_counter() - t0)
        step = sorted(times[1:])[len(times[1:]) // 2]  # median, first step (warm-up) left out
        t0 = time.perf_counter()
        evaluate(model, val)
        ev = time.perf_counter() - t0
        return (f"{tag} | {step * 1000:.0f} ms/step = {len(train) * step:.1f} s/epoch train, "
                f"val pass {ev:.1f} s ({len(val.images)} img), threads {torch.get_num_threads()}, "
                f"load {os.getloadavg()[0]:.1f}")
    r0 = ratio_text(model, xb)
    t0 = time.time()
    try:
        hist = fit(model, train, val, epochs=spec["epochs"], optimizer=spec["opt"], lr=spec["lr"],
                   schedule=spec["sched"], weight_decay=spec["wd"], agc_clip=spec["agc"], progress=False,
                   log=lambda line: None)
    except FloatingPointError as e:  # mvlib.train.NonFiniteLoss: a diverged cell is a result too
        return f"{tag} | DIVERGED after {time.time() - t0:.0f} s: {e} | ratio init {r0}"
    total = time.time() - t0
    t1 = time.time()
    ev = evaluate(model, val)
    ev_s = time.time() - t1
    r1 = ratio_text(model, xb)
    # fit evaluates on the loader it is given (here validation); older versions named the key test_top1
    curve = " ".join(f"{h.get('val_top1', h.get('test_top1')):.1f}" for h in hist)
    train_s = (total - ev_s * len(hist)) / len(hist)
    finite = all(math.isfinite(h["train_loss"]) for h in hist)
    return (f"{tag} | val top1 by epoch {curve} | final {ev['top1']:.2f} | train loss {hist[-1]['train_loss']:.3f}"
            f"{'' if finite else ' (NaN)'} | {train_s:.1f} s/epoch train, {ev_s:.1f} s/val pass | "
            f"ratio init {r0} end {r1} | load {os.getloadavg()[0]:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="+", help="cell specs: key=value,key=value")
    ap.add_argument("--set", default="", help="defaults for every cell: key=value,...")
    ap.add_argument("--data", default=os.environ.get("MVLIB_DATA") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing", type=int, default=0, help="train this many steps only; report seconds per step")
    ap.add_argument("--out", default=str(ROOT / "results" / "probes" / "appendix_recipe_cpu.txt"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = parse_spec(args.set, DEFAULTS)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python tools/probe_appendix.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with out.open("a") as f:
        f.write(f"\n# {cmd}\n# {time.strftime('%Y-%m-%d %H:%M:%S')}, torch threads {args.threads}; 'load' = the "
                f"1-minute load average of this 2-core machine, shared with other jobs (timings above ~2 are inflated)\n")
    for text in args.cells:
        line = run_cell(parse_spec(text, base), args.data, args.timing)
        print(line, flush=True)
        with out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
