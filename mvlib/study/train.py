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

from ..checkpoint import CheckpointError
from ..models import MODELS
from ..train import Diverged, NonFiniteLoss
from .config import did_you_mean, load_profile, parse_cli_overrides, scope_keys
from .experiment import train_baseline
from .progress import error_line
from .records import RecordError, RunBusy, resolve_results_dir, update_summary

# Exit codes (also in --help): 0 trained or reused, 1 the run failed, 2 bad input (nothing made), 130 Ctrl-C.
EPILOG = ("exit codes: 0 the run finished (trained or reused); 1 the run failed (diverged, busy, a record, "
          "checkpoint or disk error; the message says what to do); 2 bad configuration, model or data (nothing "
          "was made); 130 interrupted (Ctrl-C): the run resumes from its last epoch when run again")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train a binary network with run records (baseline step).",
                                 epilog=EPILOG)
    ap.add_argument("--profile", default="cpu", help="configs/<profile>.yaml")
    ap.add_argument("--model", required=True, help=", ".join(MODELS))
    ap.add_argument("--force", action="store_true", help="train again even if a finished run of this configuration exists")
    ap.add_argument("overrides", nargs="*", help="key=value configuration overrides (YAML literals)")
    args = ap.parse_args(argv)
    try:
        if args.model not in MODELS:
            raise ValueError(f"unknown model {args.model!r}; {did_you_mean(args.model, MODELS, 'models')}")
        overrides = parse_cli_overrides(args.overrides, allowed=scope_keys("exec", "data", "train"),
                                        command="python -m mvlib.study.train")
        cfg = load_profile(args.profile, {**overrides, **({"force": True} if args.force else {})})
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        return _fail(error_line(e), 2)
    try:
        model, run = train_baseline(cfg, args.model)
        # a reused run, or one recorded by a process killed before its summary: the summaries follow the records
        update_summary(resolve_results_dir(cfg["results_dir"]))
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        # data errors and a results folder that cannot exist: raised before any folder is made
        return _fail(error_line(e), 2)
    except (RunBusy, NonFiniteLoss, Diverged, RecordError, CheckpointError) as e:
        return _fail(e, 1)
    except OSError as e:  # a full disk, a results folder that is a file, missing or not writable
        return _fail(f"{error_line(e)}; the run resumes from its last epoch once this is fixed", 1)
    except KeyboardInterrupt:
        return _fail("interrupted; the run resumes from its last finished epoch when run again", 130)
    print(f"{run.dir}: val top1 {run.metrics['val_top1']:.2f}%  test top1 {run.metrics['top1']:.2f}%  "
          f"top5 {run.metrics['top5']:.2f}%")
    return 0


def _fail(message, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
