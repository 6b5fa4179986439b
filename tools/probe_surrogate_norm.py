"""Measure the voter's surrogate normalization (u = s / c) on trained baselines; write results/probes/surrogate_norm.json.

    MVLIB_DATA=... python tools/probe_surrogate_norm.py --profile cpu [key=value ...]

Needs notebook 01's baselines for the profile (``results_dir`` may point elsewhere). Two measurements per model and
normalization: (1) the backward pass at the start of retraining (fraction of pre-activations inside the surrogate's
window, gradient norm of each binary weight relative to the popcount network; mvlib.study.voter_study.surrogate_norm_probe),
(2) a short retraining through the exact voter (ApproxSign) from the baseline, top-1 on a test subset.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvlib.study.config import load_profile, parse_cli_overrides  # noqa: E402
from mvlib.study.experiment import find_baseline, load_run_model, loaders, train_run  # noqa: E402
from mvlib.study.records import write_json  # noqa: E402
from mvlib.study.voter_study import surrogate_norm_probe, voter_spec  # noqa: E402
from mvlib.voters import SURROGATE_NORMS  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--profile", default="cpu")
ap.add_argument("--out", default="results/probes/surrogate_norm.json")
ap.add_argument("--retrain-per-class", type=int, default=150)
ap.add_argument("--test-per-class", type=int, default=100)
ap.add_argument("overrides", nargs="*")
args = ap.parse_args()
cfg = load_profile(args.profile, parse_cli_overrides(args.overrides))
result = {"profile": args.profile, "overrides": args.overrides, "retrain_per_class": args.retrain_per_class,
          "test_per_class": args.test_per_class, "models": {}}
for name in cfg["mv_models"]:
    base = find_baseline(cfg, name)
    model = load_run_model(base)
    train_loader, _, _ = loaders(cfg)
    probe = surrogate_norm_probe(model, train_loader, SURROGATE_NORMS, batches=2)
    per_norm = probe.groupby("norm").agg(in_window=("in_window", "mean"), grad_ratio_median=("grad_ratio", "median"),
                                         grad_ratio_first=("grad_ratio", "first"), grad_ratio_last=("grad_ratio", "last"))
    entry = {"baseline_run": base.run_id, "baseline_top1": base.metrics["top1"],
             "backward": per_norm.round(4).to_dict(orient="index"), "retrain": {}}
    sub = {**cfg, "test_per_class": args.test_per_class, "mv_retrain_train_per_class": args.retrain_per_class}
    for norm in SURROGATE_NORMS:
        t0 = time.time()
        _, run = train_run(sub, "probe_surrogate_norm", name, f"retrain-approx-{norm}", epochs=1,
                           lr=cfg["mv_retrain_lr"], init_from=base, voter=voter_spec(norm=norm),
                           train_per_class=args.retrain_per_class)
        entry["retrain"][norm] = {"top1": run.metrics["top1"], "test_images": run.metrics["test_images"],
                                  "seconds": round(time.time() - t0, 1)}
        print(name, norm, entry["retrain"][norm], flush=True)
    result["models"][name] = entry
    print(json.dumps(entry, indent=1), flush=True)
write_json(Path(args.out), result)
print("wrote", args.out)
