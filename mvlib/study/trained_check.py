"""End-to-end check on trained models: bit kernels vs the float simulation on the test set.

For each trained baseline of the configuration (notebook 01), with the popcount
output, with the exact voter and with the hierarchical voter (G = 4)
substituted, and for each model retrained through the voter (notebook 03) when
present: convert to bit kernels, run the test split through both, and count
differing predictions (0 expected: the logits are bit-identical by
construction).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from cuda_numba.convert import convert_model, prediction_agreement

from ..voter_ops import set_voter
from .experiment import find_baseline
from .run_setup import load_run_model, loaders, with_seed
from .records import all_metrics, run_from_dir
from .summary import select

SUBSTITUTED = (("popcount", None), ("mv (substituted)", "mv"),
               ("hmv G=4 tie pos (substituted)", {"name": "hmv", "fanins": [4], "tie": "pos"}))


def trained_agreement(cfg: dict[str, Any], log=print) -> pd.DataFrame:
    """One row per (model, case): images, differing predictions, max |logit difference|, top-1 of both.

    The models of the first of ``sweep_seeds`` (one seed is enough for an exactness check).
    """
    seed = cfg["sweep_seeds"][0]
    c = with_seed(cfg, seed)
    _, _, test, _ = loaders(c)
    records = all_metrics(cfg["results_dir"])
    rows = []
    for name in cfg["models"]:
        base = find_baseline(c, name)
        cases = [(label, base, spec) for label, spec in SUBSTITUTED]
        found = [r for r in select(records, step="03", model=name, variant="retrain-approx", profile=cfg["profile"])
                 if r.get("seed") == seed]
        retrained = run_from_dir(found[0]["dir"]) if found else None
        if retrained is not None and retrained.checkpoint.is_file():
            cases.append(("mv (retrained, approxsign)", retrained, "keep"))
        for label, run, spec in cases:
            model = load_run_model(run)
            if spec != "keep":
                set_voter(model, spec)
            res = prediction_agreement(model, convert_model(model), test)
            rows.append({"model": name, "case": label, "run": run.run_id, **res})
            log(f"{name} {label}: {res['differing_predictions']} of {res['images']} predictions differ")
    return pd.DataFrame(rows)
