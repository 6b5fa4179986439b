"""Choose the retraining settings of a profile on the VALIDATION split: surrogate normalization, learning rate, budget.

    MVLIB_DATA=... python tools/probe_retrain.py --profile cpu [--seeds 0] [--stages norm lr budget]

Needs notebook 01's baselines of the profile. Every setting retrains each of ``mv_models`` through the exact voter
(ApproxSign, as notebook 03 does) from the baselines of ``--seeds`` and is read on the validation split only (the test
split is not evaluated). The stages run in order, each starting from the previous stage's choice, with rules fixed
before any number was seen:

* ``norm``   -- u = s / c with c from each of ``SURROGATE_NORMS`` (at the profile's lr and budget): the highest mean
                validation top-1 wins; the backward-pass diagnostics of each (fraction of pre-activations inside
                ApproxSign's window, weight-gradient norm relative to the popcount network) are recorded beside it;
* ``lr``     -- the profile's ``mv_retrain_lr`` times 0.5, 1 and 2: the highest mean validation top-1 wins;
* ``budget`` -- ``mv_retrain_train_per_class`` times 2/3, 1 and 4/3: the *smallest* budget whose mean validation top-1
                is within ``BUDGET_TOLERANCE`` points of the best one's (more images cost study time; a gain inside
                the validation noise does not buy it).

Run records go to ``build/probes/<profile>`` (ignored by git, reused when the probe runs again); the choices and
every number behind them to ``results/probes/retrain_choice_<profile>.json`` (and a ``.txt`` of the printed lines),
with the commit and code hash. The profile file is then edited by hand to the choices, citing that file.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvlib.environment import REPO_ROOT, environment_info  # noqa: E402
from mvlib.files import write_atomic, write_json  # noqa: E402
from mvlib.study.config import load_profile, parse_cli_overrides  # noqa: E402
from mvlib.study.experiment import find_baseline, load_run_model, loaders, run_config, with_seed  # noqa: E402
from mvlib.study.voter_study import retrain, study_cfg, surrogate_norm_probe, voter_spec  # noqa: E402
from mvlib.voters import SURROGATE_NORMS  # noqa: E402

BUDGET_TOLERANCE = 0.5  # points of validation top-1 (the s.e. of one 5,000-image measurement at 50 % is 0.7)
STEP = "probe_retrain"


def measure(cfg, bases, setting, log):
    """Mean validation top-1 of one setting over models and seeds, with the per-run numbers."""
    c = run_config(cfg, mv_retrain_lr=setting["lr"], mv_retrain_train_per_class=setting["tpc"])
    runs = []
    for (model, seed), base in bases.items():
        t0 = time.time()
        _, run = retrain(c, STEP, base, voter_spec(norm=setting["norm"]), test=False, log=lambda line: None)
        runs.append({"model": model, "seed": seed, "val_top1": run.metrics["val_top1"],
                     "baseline_val_top1": base.metrics["val_top1"], "seconds": round(time.time() - t0, 1)})
    mean = sum(r["val_top1"] for r in runs) / len(runs)
    log(f"  {setting}: mean validation top-1 {mean:.2f} ("
        + ", ".join(f"{r['model']} s{r['seed']} {r['val_top1']:.2f}" for r in runs) + ")")
    return {"setting": dict(setting), "mean_val_top1": mean, "runs": runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="*", help="baseline seeds (default: the profile's sweep_seeds)")
    ap.add_argument("--stages", nargs="*", default=["norm", "lr", "budget"], choices=["norm", "lr", "budget"])
    ap.add_argument("overrides", nargs="*", help="key=value configuration overrides")
    args = ap.parse_args(argv)
    cfg = study_cfg(load_profile(args.profile, parse_cli_overrides(args.overrides)))
    seeds = args.seeds if args.seeds is not None else cfg["sweep_seeds"]
    scratch = run_config(cfg, results_dir=str(REPO_ROOT / "build" / "probes" / args.profile))
    bases = {(m, s): find_baseline(with_seed(cfg, s), m) for m in cfg["mv_models"] for s in seeds}
    lines = []

    def log(line):
        print(line, flush=True)
        lines.append(line)

    choice = {"norm": cfg["mv_surrogate_norm"], "lr": cfg["mv_retrain_lr"], "tpc": cfg["mv_retrain_train_per_class"]}
    log(f"profile {args.profile}, models {cfg['mv_models']}, seeds {seeds}; start from {choice}")
    out = {"profile": args.profile, "seeds": seeds, "start": dict(choice), "stages": {},
           "environment": environment_info("cpu"), "command": "python tools/probe_retrain.py " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    for stage in args.stages:
        if stage == "norm":
            candidates = [{**choice, "norm": n} for n in SURROGATE_NORMS]
        elif stage == "lr":
            candidates = [{**choice, "lr": choice["lr"] * f} for f in (0.5, 1.0, 2.0)]
        else:
            candidates = [{**choice, "tpc": round(choice["tpc"] * f)} for f in (2 / 3, 1.0, 4 / 3)]
        log(f"stage {stage}:")
        rows = [measure(scratch, bases, s, log) for s in candidates]
        best = max(r["mean_val_top1"] for r in rows)
        if stage == "budget":
            chosen = min((r for r in rows if r["mean_val_top1"] >= best - BUDGET_TOLERANCE),
                         key=lambda r: r["setting"]["tpc"])
        else:
            chosen = max(rows, key=lambda r: r["mean_val_top1"])
        entry = {"candidates": rows, "chosen": chosen["setting"]}
        if stage == "norm":
            entry["backward"] = {}
            for (model, seed), base in bases.items():
                probe = surrogate_norm_probe(load_run_model(base), loaders(with_seed(cfg, seed))[0], SURROGATE_NORMS)
                entry["backward"][f"{model} seed {seed}"] = probe.groupby("norm").agg(
                    in_window=("in_window", "mean"), grad_ratio_median=("grad_ratio", "median")).round(4).to_dict(
                    orient="index")
        out["stages"][stage] = entry
        choice = dict(chosen["setting"])
        log(f"stage {stage} chooses {choice}")
    out["chosen"] = choice
    stem = REPO_ROOT / "results" / "probes" / f"retrain_choice_{args.profile}"
    write_json(stem.with_suffix(".json"), out)
    write_atomic(stem.with_suffix(".txt"), f"$ {out['command']}\n" + "\n".join(lines) + "\n")
    print(f"wrote {stem.relative_to(REPO_ROOT)}.json / .txt")


if __name__ == "__main__":
    main()
