"""Retraining through the exact voter from a profile's baseline, one setting per argument (no run records written).

    MVLIB_DATA=... python tools/probe_retrain.py reactnet18 tpc=1200 tpc=1500 tpc=1200,lr=0.002 tpc=1200,kd=1

Each argument is ``key=value[,key=value...]``: ``tpc`` training images per class (default the profile's
``mv_retrain_train_per_class``), ``lr`` peak learning rate (cosine to 0), ``ep`` epochs, ``bs`` batch size,
``kd=1`` distillation from the baseline (popcount) network, ``est`` estimator, ``norm`` surrogate normalization.
Prints top-1 on the profile's test set and the seconds. This is how the ``cpu`` profile's retraining budget
(``mv_retrain_*`` in configs/cpu.yaml) was chosen; it needs notebook 01's baselines.
"""
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mvlib.study.config import load_profile  # noqa: E402
from mvlib.study.experiment import apply_threads, find_baseline, load_run_model, loaders  # noqa: E402
from mvlib.train import fit  # noqa: E402
from mvlib.voter_ops import recalibrate_bn, set_voter  # noqa: E402
from mvlib.study.voter_study import study_cfg, voter_spec  # noqa: E402

KEYS = {"tpc": int, "lr": float, "ep": int, "bs": int, "kd": int, "est": str, "norm": str}


def parse(arg: str) -> dict:
    out = {}
    for item in filter(None, arg.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"unknown setting {key!r} in {arg!r}; known: {sorted(KEYS)}")
        out[key] = KEYS[key](value)
    return out


def main(model_name: str, settings: list[str], profile: str = "cpu") -> None:
    cfg = study_cfg(load_profile(profile))
    apply_threads(cfg)
    base = find_baseline(cfg, model_name)
    for arg in settings:
        s = parse(arg)
        loader_cfg = {**cfg, "batch_size": s.get("bs", cfg["batch_size"])}
        train_loader, test_loader, _ = loaders(loader_cfg, train_per_class=s.get("tpc", cfg["mv_retrain_train_per_class"]))
        torch.manual_seed(cfg["seed"])
        model = load_run_model(base)
        teacher = copy.deepcopy(model).eval() if s.get("kd") else None
        set_voter(model, voter_spec(estimator=s.get("est", "approxsign"), norm=s.get("norm", cfg["mv_surrogate_norm"])))
        recalibrate_bn(model, train_loader, cfg["mv_recal_batches"])
        t0 = time.time()
        hist = fit(model, train_loader, test_loader, epochs=s.get("ep", cfg["mv_retrain_epochs"]), optimizer=cfg["optimizer"],
                   lr=s.get("lr", cfg["mv_retrain_lr"]), schedule=cfg["schedule"], warmup_steps=0,
                   weight_decay=cfg["weight_decay"], momentum=cfg["momentum"], label_smoothing=cfg["label_smoothing"],
                   teacher=teacher, device="cpu", progress=False, log=lambda *a: None)
        print(f"{model_name} {arg or '(profile)'}: top1 {hist[-1]['test_top1']:.2f} (baseline {base.metrics['top1']:.2f}) "
              f"in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:] or [""])
