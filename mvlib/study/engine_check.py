"""The engine on the study's trained models: ``python -m mvlib.study.engine_check``.

For every finished run of the chosen steps that has a checkpoint
(``results/runs/<step>/<run_id>``, weights in ``checkpoints/``), the run's
model is rebuilt (:func:`mvlib.study.run_setup.load_run_model`, with the voter
it was trained or evaluated with), then evaluated over the whole test split
by the float simulation and by :func:`cuda_numba.compile_engine`, as trained
and under the voters the study substitutes into a popcount network:

* ``mv`` / ``mv-alpha`` / ``mv-matched``: the exact MV with the three output
  scales of notebook 02 (``matched`` calibrated on the first test batches,
  as :func:`mvlib.voter_ops.calibrate_matched_scale` does);
* ``hmv4``: the hierarchical voter, G = 4, tie +1 (notebook 04);
* ``threshold``: the BN-folded threshold voter of notebook 08.

Each row: images, differing top-1 predictions (the goal is 0), the
largest absolute logit difference (0.0 when bit-identical) and both top-1
accuracies. Runs whose model the engine does not compile (BN-Free, binary
downsampling, ReActNet-A) are listed with the reason. Results go to
``--out`` (JSON). Only runs with a ResNet-18 model are considered.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cuda_numba.convert import prediction_agreement
from cuda_numba.engine import EngineUnsupported, compile_engine, configure_threads

SUBSTITUTIONS = {
    "mv": "mv", "mv-alpha": {"name": "mv", "output_scale": "alpha"},
    "mv-matched": {"name": "mv", "output_scale": "matched"},
    "hmv4": {"name": "hmv", "fanins": [4], "tie": "pos"}, "threshold": "threshold",
}


def test_batches(params: dict, data_dir=None, batch: int = 500, limit: int = 0):
    from mvlib.data import BatchLoader, load_split

    x, y = load_split(params.get("dataset", "cifar10"), "test", data_dir)
    if limit:
        x, y = x[:limit], y[:limit]
    return list(BatchLoader(x, y, batch, train=False, augment=False, dataset=params.get("dataset", "cifar10")))


def variants_of(model, params: dict, batches, names):
    """(name, model) pairs: the run as it is, then each substitution into a popcount network."""
    import copy

    from mvlib.voter_analysis import calibrate_threshold_voters
    from mvlib.voter_ops import calibrate_matched_scale, set_voter

    yield "as-run", model
    if params.get("voter") is not None:
        return  # a voter run is checked as it was trained/evaluated
    for name in names:
        m = set_voter(copy.deepcopy(model), SUBSTITUTIONS[name])
        if name == "mv-matched":
            calibrate_matched_scale(m, batches, batches=2)
        elif name == "threshold":
            calibrate_threshold_voters(m, batches, batches=2)
        yield name, m.eval()


def check_run(run_dir: Path, names, data_dir=None, limit=0, checkpoints=None, log=print) -> list[dict]:
    import dataclasses

    from .run_setup import load_run_model
    from .records import run_from_dir

    run = run_from_dir(run_dir)
    if checkpoints is not None:  # a copy of the results whose checkpoints/ lies elsewhere
        run = dataclasses.replace(run, checkpoint_dir=Path(checkpoints) / run.step / run.run_id)
    params = run.params
    base = {"step": run.step, "run_id": run.run_id, "model": params.get("model"), "width": params.get("width"),
            "norm": params.get("norm")}
    if not str(params.get("model", "")).endswith("18"):
        return [{**base, "skipped": "not a ResNet-18"}]
    if not run.checkpoint.is_file():
        return [{**base, "skipped": "no checkpoint"}]
    model = load_run_model(run)
    batches = test_batches(params, data_dir, limit=limit)
    rows = []
    for name, m in variants_of(model, params, batches, names):
        try:
            engine = compile_engine(m)
        except EngineUnsupported as err:
            rows.append({**base, "variant": name, "skipped": str(err)})
            continue
        t0 = time.perf_counter()
        rep = prediction_agreement(m, engine, batches)
        rows.append({**base, "variant": name, **rep, "seconds": time.perf_counter() - t0})
        log(f"{run.step}/{run.run_id} {name}: {rep['images']} images, {rep['differing_predictions']} differing "
            f"predictions, max |logit diff| {rep['max_abs_logit_diff']:.3g}, top-1 {rep['top1_float']:.2f} / "
            f"{rep['top1_bit']:.2f}")
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results", help="the results folder holding runs/<step>/<run_id>")
    p.add_argument("--checkpoints", default=None, help="checkpoints folder, if not the results' usual one")
    p.add_argument("--steps", nargs="+", default=None, help="steps to check (default: every step folder)")
    p.add_argument("--variants", nargs="*", default=list(SUBSTITUTIONS), choices=list(SUBSTITUTIONS))
    p.add_argument("--data", default=None, help="folder with cifar10/test.npz (default: the project's search path)")
    p.add_argument("--limit", type=int, default=0, help="first N test images only (0 = all)")
    p.add_argument("--max-runs", type=int, default=0, help="at most N runs per step (0 = all)")
    p.add_argument("--out", default="results/bench/engine_check.json")
    a = p.parse_args(argv)
    configure_threads()
    runs_root = Path(a.results) / "runs"
    steps = a.steps or sorted(d.name for d in runs_root.iterdir() if d.is_dir())
    rows = []
    for step in steps:
        dirs = sorted(d for d in (runs_root / step).iterdir() if (d / "metrics.json").is_file())
        for d in dirs[: a.max_runs or None]:
            rows.extend(check_run(d, a.variants, a.data, a.limit, a.checkpoints))
    checked = [r for r in rows if "skipped" not in r]
    result = {"results": str(a.results), "checkpoints": a.checkpoints, "test_images_limit": a.limit,
              "rows": rows, "models_checked": len(checked),
              "all_predictions_identical": all(r["differing_predictions"] == 0 for r in checked),
              "max_abs_logit_diff": max((r["max_abs_logit_diff"] for r in checked), default=None),
              "threads": torch.get_num_threads()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"{len(checked)} model variants checked, predictions identical: {result['all_predictions_identical']}, "
          f"max |logit diff| {result['max_abs_logit_diff']}; wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
