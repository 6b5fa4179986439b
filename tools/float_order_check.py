"""How far float order alone moves a short training run: 1 thread vs 2 threads vs 2 DDP ranks.

Reproduces the README's multi-GPU statement (the paper profile): Bi-RealNet-18 (width 4, 40 CIFAR-10
images, SGD lr 0.01, batch 20, one epoch = two steps, the ci profile) trained by ``train_baseline`` three ways; prints the
largest parameter/buffer difference from the 1-thread run and the key where it occurs. A binary network
amplifies rounding (a value within rounding of 0 flips its sign), so 2 ranks are expected to differ from one
process about as much as 2 threads do.

    python tools/float_order_check.py [--data DIR]
"""
import argparse
import os
import tempfile
from pathlib import Path

from mvlib.checkpoint import load_checkpoint
from mvlib.study.config import load_profile
from mvlib.study.experiment import train_baseline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MVLIB_DATA"), help="folder holding cifar10/")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="float-order-"))
    base = {"progress": False, "width": 4, "train_per_class": 4, "test_per_class": 2, "epochs": 1,
            "batch_size": 20, "threads": 1, "optimizer": "sgd", "lr": 0.01,
            **({"data_dir": args.data} if args.data else {})}
    states = {}
    for name, kw in [("1 thread", {}), ("2 threads", {"threads": 2}), ("2 ranks", {"ddp_procs": 2})]:
        cfg = load_profile("ci", {**base, **kw, "results_dir": str(tmp / name.replace(" ", "_"))})
        _, run = train_baseline(cfg, "birealnet18")
        states[name] = load_checkpoint(run.checkpoint)["model"]
    ref = states["1 thread"]
    for name in ("2 threads", "2 ranks"):
        diff = {k: (ref[k].float() - states[name][k].float()).abs().max().item() for k in ref}
        worst = max(diff, key=diff.get)
        print(f"{name} vs 1 thread: max |diff| {diff[worst]:.2e} ({worst}); stem.0.weight {diff['stem.0.weight']:.2e}")


if __name__ == "__main__":
    main()
