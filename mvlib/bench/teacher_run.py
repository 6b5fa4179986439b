"""Command line of the CIFAR-10 teacher (:mod:`mvlib.teacher`): train it, or measure its speed first.

Run::

    python -m mvlib.teacher --bench                          # images/s and the time --epochs would take
    python -m mvlib.teacher --epochs 10 --out results/teacher/airbench.pt

Training uses the project's split (45,000 training images, the 5,000 held out
by ``val_per_class=500`` for validation; the test split is never read), prints
one line per epoch with the elapsed time and an estimate of the time left,
then writes the weights to ``--out`` and a record beside it (``.json``): the
recipe, the per-epoch history, validation top-1 without and with flip TTA,
seconds, the splits' identities, CPU name, thread count and torch version.

``--bench`` times training steps on random images (the speed of a dense
float network does not depend on what the images show), in both phases of the
recipe: while the whitening bias trains (the first convolution's input
gradient is computed) and after. Each phase's images/s is ``batch / median
step time``; the estimate for a run weights the phases by their step counts and
adds the evaluations. Training images per CPU second (all threads) are given
too: on a machine shared with other jobs they show what the training itself
costs, apart from how much of the machine it got. Both modes keep freed memory
in glibc's heap (:func:`mvlib.cpu_fast.tune_cpu_allocator`), as the project's
training runs do.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import torch

from ..checkpoint import save_checkpoint
from ..cpu_fast import tune_cpu_allocator
from ..data import load_split, split_identity
from ..environment import environment_info
from ..files import write_json
from ..teacher import (Recipe, augment, build_teacher, evaluate, make_optimizer, normalize, train_step,
                       train_teacher)
from .timing import interleaved_times

VAL_PER_CLASS = 500  # the project's hold-out: 5,000 validation images, 45,000 training images
TRAIN_IMAGES = 45_000
VAL_IMAGES = 5_000


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def bench(r: Recipe, steps: int, warmup: int = 1, val_every_epoch: bool = False) -> dict:
    """Seconds per training step in both phases, eval images/s, and the estimated time of a run of ``r``."""
    torch.manual_seed(r.seed)
    model = build_teacher(r.width_scale)
    images = torch.randint(0, 256, (r.batch_size, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (r.batch_size,))
    x = normalize(images)
    model.set_whitening(x)
    opt = make_optimizer(model, r)
    flips, gen = torch.zeros(r.batch_size, dtype=torch.bool), torch.Generator().manual_seed(0)
    model.train()

    def phase(bias_trains: bool):
        def step():
            model.whiten.bias.requires_grad_(bias_trains)
            train_step(model, opt, augment(x, flips, r.translate, gen), labels, r.label_smoothing)
        return step

    cpu0 = time.process_time()
    times = interleaved_times({"early": phase(True), "late": phase(False)}, reps=steps, warmup=warmup)
    # CPU seconds (all threads) per image: on a machine shared with other jobs, wall time says how busy
    # it was, and this says what the training itself costs
    cpu_per_image = (time.process_time() - cpu0) / (2 * (steps + warmup) * r.batch_size)
    step_s = {k: statistics.median(v) for k, v in times.items()}
    evaluate(model, images, labels)  # untimed: the first inference call sets up its primitives
    t0 = time.perf_counter()
    evaluate(model, images, labels)
    eval_ips = r.batch_size / (time.perf_counter() - t0)

    per_epoch = TRAIN_IMAGES // r.batch_size
    total = math.ceil(per_epoch * r.epochs)
    early = min(total, per_epoch * r.whiten_bias_epochs)
    train_s = early * step_s["early"] + (total - early) * step_s["late"]
    # the final evaluation is one plain pass and one two-view TTA pass over the validation split
    eval_passes = 3 + (math.ceil(r.epochs) if val_every_epoch else 0)
    return {"batch_size": r.batch_size, "width_scale": r.width_scale, "threads": torch.get_num_threads(),
            "steps_timed": steps, "step_seconds": step_s,
            "train_images_per_s": {k: r.batch_size / v for k, v in step_s.items()},
            "eval_images_per_s": eval_ips, "images_per_cpu_second": 1.0 / cpu_per_image,
            "epochs": r.epochs, "train_steps": total,
            "estimated_seconds": train_s + eval_passes * VAL_IMAGES / eval_ips}


def train(args, r: Recipe) -> dict:
    """Train on the project's split, evaluate on validation, write weights and record; returns the record."""
    split = dict(data_dir=args.data_dir, val_per_class=VAL_PER_CLASS)
    train_x, train_y = load_split("cifar10", "train", per_class=args.per_class, **split)
    val_x, val_y = load_split("cifar10", "val", **split)
    print(f"teacher: {len(train_x)} training images, {len(val_x)} validation images, "
          f"{torch.get_num_threads()} threads, recipe {dataclasses.asdict(r)}", flush=True)
    epochs_total = math.ceil(r.epochs)

    def log(rec: dict) -> None:
        val = f"  val {100 * rec['val_top1']:.2f}%" if "val_top1" in rec else ""
        print(f"epoch {rec['epoch']:>2}/{epochs_total}  loss {rec['train_loss']:.4f}  "
              f"train {100 * rec['train_top1']:.2f}%{val}  elapsed {_clock(rec['seconds'])}  "
              f"left ~{_clock(rec['eta_seconds'])}", flush=True)

    t0 = time.perf_counter()
    fields = {f.name: getattr(r, f.name) for f in dataclasses.fields(Recipe)}
    model, history = train_teacher(train_x, train_y, log=log, val=(val_x, val_y) if args.epoch_val else None,
                                   **fields)
    t1 = time.perf_counter()
    top1 = evaluate(model, val_x, val_y)
    top1_tta = evaluate(model, val_x, val_y, tta=True)
    t2 = time.perf_counter()
    print(f"validation top-1: {100 * top1:.2f}%  with flip TTA: {100 * top1_tta:.2f}%  "
          f"(train {_clock(t1 - t0)}, eval {_clock(t2 - t1)})", flush=True)

    out = Path(args.out)
    save_checkpoint(out, {"model": model.state_dict(), "arch": {"name": "airbench_teacher",
                                                                "width_scale": r.width_scale, "num_classes": 10}})
    record = {"recipe": history["recipe"], "epochs": r.epochs, "history": history["epochs"],
              "val_top1": top1, "val_top1_tta": top1_tta, "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
              "seconds": t2 - t0, "weights": out.name,
              "train_split": split_identity("cifar10", "train", per_class=args.per_class, **split),
              "val_split": split_identity("cifar10", "val", **split),
              "environment": environment_info("cpu")}  # cpu name, threads, torch version, commit
    write_json(out.with_suffix(".json"), record)
    print(f"wrote {out} and {out.with_suffix('.json')}", flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mvlib.teacher", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Recipe):  # one flag per recipe setting, defaults from the recipe
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--out", help="weights file to write (the record goes beside it, .json)")
    p.add_argument("--bench", action="store_true", help="time training steps on random data instead of training")
    p.add_argument("--bench-steps", type=int, default=3, help="timed steps per phase with --bench")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--data-dir", default=None, help="folder of the CIFAR-10 npz files (default: mvlib.data's search)")
    p.add_argument("--per-class", type=int, default=0, help="train on the first N images per class (0: all 4,500)")
    p.add_argument("--epoch-val", action="store_true", help="also evaluate on validation after every epoch")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # batch-1024 activations are tens of MB each: without this, every one is a fresh mmap whose pages
    # fault in on first touch (the project's training runs opt in the same way)
    tune_cpu_allocator()
    r = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
    if args.bench:
        res = bench(r, args.bench_steps, val_every_epoch=args.epoch_val)
        ips = res["train_images_per_s"]
        print(f"teacher bench: batch {r.batch_size}, width x{r.width_scale}, {res['threads']} threads: "
              f"{ips['early']:.1f} img/s (whitening bias training), {ips['late']:.1f} img/s (after), "
              f"eval {res['eval_images_per_s']:.0f} img/s, {res['images_per_cpu_second']:.1f} training images per "
              f"CPU second; {r.epochs:g} epochs of {TRAIN_IMAGES} images "
              f"~ {_clock(res['estimated_seconds'])} (min:s)")
        print(res)
        return
    if not args.out:
        p.error("--out is needed to train (or use --bench)")
    train(args, r)


if __name__ == "__main__":
    main()
