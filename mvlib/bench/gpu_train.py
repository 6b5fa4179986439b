"""GPU check: train ReActNet-18 (width 64) for a few epochs on one GPU; record images/s and accuracy.

Reproduces nothing of the deck by itself: it measures what the `paper` profile
costs per epoch on a real card and checks that training on device (data held
and augmented on the GPU) learns. Run on a machine with CUDA::

    python -m mvlib.bench.gpu_train --data /path/to/cifar10 --epochs 3 --out results/gpu

Writes ``<out>/gpu_train.json`` (card name, torch version, images/s per epoch,
top-1/top-5 per epoch) and ``history.csv``. Uses whatever torch is installed
(it needs nothing beyond mvlib's own modules).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import BatchLoader, load_split
from ..models import build_model
from ..environment import environment_info
from ..files import write_json
from ..train import evaluate, fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="folder with train.npz/test.npz (default: $MVLIB_DATA)")
    ap.add_argument("--model", default="reactnet18")
    ap.add_argument("--width", type=int, default=64, help="channels of stage 1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="images per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="results/gpu")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures GPU training")
    dev = "cuda"
    torch.backends.cudnn.benchmark = True
    xtr, ytr = load_split("cifar10", "train", args.data)
    xte, yte = load_split("cifar10", "test", args.data)
    train = BatchLoader(xtr, ytr, args.batch, train=True, augment=True, device=dev, seed=0)
    test = BatchLoader(xte, yte, 1000, train=False, augment=False, device=dev)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, width=args.width)
    t0 = time.time()
    hist = fit(model, train, test, epochs=args.epochs, lr=args.lr, device=dev, progress=False)
    torch.cuda.synchronize()
    wall = time.time() - t0
    for row in hist:
        row["images_per_s"] = len(ytr) / row["seconds"]  # epoch time includes the test pass
    ev = evaluate(model, test, dev)
    out = Path(args.out)
    record = {"what": f"{args.model} width {args.width}, {args.epochs} epochs, batch {args.batch}, Adam lr {args.lr}",
              "env": environment_info(dev), "wall_seconds": round(wall, 1), "history": hist,
              "final_top1": ev["top1"], "final_top5": ev["top5"],
              "train_images_per_s_best_epoch": max(r["images_per_s"] for r in hist)}
    write_json(out / "gpu_train.json", record)
    print(json.dumps({k: record[k] for k in ("what", "final_top1", "train_images_per_s_best_epoch")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
