"""One recorded training run from the command line (notebook 01's baseline step).

    python -m mvlib.study.train --profile cpu --model reactnet18 epochs=2 lr=1e-3 seed=1

The run goes through :func:`mvlib.study.experiment.train_baseline`, so it has
a run folder, is reused when finished and resumed when interrupted. Only keys
that change such a run (and the execution keys: threads, device, progress,
results_dir) are accepted; any other key is an error, not silently ignored.
"""
from __future__ import annotations

import argparse
import sys

from ..train import Diverged, NonFiniteLoss
from .config import load_profile, parse_cli_overrides, scope_keys
from .experiment import train_baseline
from .records import RecordError, RunBusy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train a binary network with run records (baseline step).")
    ap.add_argument("--profile", default="cpu", help="configs/<profile>.yaml")
    ap.add_argument("--model", required=True, help="reactnet18, birealnet18, xnornet18, reactneta")
    ap.add_argument("--force", action="store_true", help="train again even if a finished run of this configuration exists")
    ap.add_argument("overrides", nargs="*", help="key=value configuration overrides (YAML literals)")
    args = ap.parse_args(argv)
    try:
        overrides = parse_cli_overrides(args.overrides, allowed=scope_keys("exec", "data", "train"),
                                        command="python -m mvlib.study.train")
        cfg = load_profile(args.profile, {**overrides, **({"force": True} if args.force else {})})
        model, run = train_baseline(cfg, args.model)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        # configuration and data errors: raised before any folder is made
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except (RunBusy, NonFiniteLoss, Diverged, RecordError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{run.dir}: val top1 {run.metrics['val_top1']:.2f}%  test top1 {run.metrics['top1']:.2f}%  "
          f"top5 {run.metrics['top5']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
