"""Notebook 09's runs: the voter designs of the accuracy–logic front, retrained and measured over seeds.

Every point is a network design measured by run records:

* at the base width, the popcount network (notebook 01's baseline evaluated on the points' shared splits), the
  exact voter and every retrained hierarchical voter, each retrained from that baseline by one shared recipe
  (:func:`mvlib.study.pareto.point_config`);
* the control: at each reduced width, notebook 01's recipe trains a popcount network, which is evaluated as it
  is and retrained through the exact voter by the same shared recipe.

Which tie rules are retrained is decided on the validation split: every rule (``pareto_tie_choice: all``) or,
per voter, the one whose vote disagrees least with the exact voter's on the baselines' own activations
(:func:`mvlib.study.pareto.choose_ties`). Where the shared recipe and splits are notebooks 03/04's own
(:func:`mvlib.study.pareto.shares_runs`), their retrained runs are the points' runs (same step, same record).

Nothing here reads or writes a table: :mod:`mvlib.study.pareto` shapes the rows into the front and judges it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..voter_spec import VoterSpec
from . import pareto, records
from .config import recipe_for
from .experiment import baselines_by_seed, evaluate_record, load_run_model, run_config, train_recipe, with_seed
from .voter_study import disagreement_table, retrain, voter_spec

STEP = "09_voter_pareto"
OWNERS = {"mv": "03_mv_retraining", "hmv": "04_hierarchical_voter"}  # the steps whose runs are shared, by kind


@dataclass(frozen=True)
class PointPlan:
    """What notebook 09 measures, checked before any work (a bad width fraction, fan-in or seed is an error)."""

    width: int                            # channels of stage 1 at the base width
    families: tuple[tuple[int, ...], ...]  # fan-ins of the hierarchical voters (single levels, then trees)
    candidates: tuple[VoterSpec, ...]     # every family with every tie rule
    controls: tuple[int, ...]             # the control networks' reduced widths
    point_cfg: dict[str, Any]             # the points' shared splits and retraining recipe
    owners: dict[str, str]                # kind -> step whose retrained runs are the points' (empty: none shared)

    @property
    def shared(self) -> bool:
        """Whether notebooks 03/04's retrained runs are the points' runs."""
        return bool(self.owners)

    def family_key(self, fanins) -> str:
        """``4x4``: a family's name in the tables."""
        return "x".join(map(str, fanins))

    def summary(self, cfg: dict[str, Any]) -> pd.Series:
        """The plan as the notebook shows it before any work."""
        p = self.point_cfg
        return pd.Series({
            "voters": ", ".join(self.family_key(f) for f in self.families), "control widths": str(list(self.controls)),
            "seeds": str(cfg["pareto_seeds"]), "ties": str(cfg["pareto_ties"]), "tie choice": cfg["pareto_tie_choice"],
            "retraining images per class": p["mv_retrain_train_per_class"],
            "evaluation (val / test per class)": f"{p['val_eval_per_class']} / {p['test_per_class']}",
            "runs shared with notebooks 03/04": self.shared}, name="value")


def point_plan(cfg: dict[str, Any]) -> PointPlan:
    """The plan of a configuration; ValueError for a seed without a baseline, a width fraction that is not a whole
    number of channels, or a voter whose leaf count does not divide the width."""
    width = cfg["width"]
    missing = sorted(set(cfg["pareto_seeds"]) - set(cfg["seeds"]))
    if missing:
        raise ValueError(f"pareto_seeds {missing} have no baseline: notebook 01 trains the seeds {cfg['seeds']}")
    families = tuple(pareto.voter_families(width, cfg["pareto_groups"], cfg["pareto_trees"]))
    return PointPlan(width=width, families=families, candidates=tuple(pareto.hierarchical_points(cfg)),
                     controls=tuple(pareto.control_widths(width, cfg["pareto_width_fractions"])),
                     point_cfg=pareto.point_config(cfg), owners=dict(OWNERS) if pareto.shares_runs(cfg) else {})


def point_baselines(cfg: dict[str, Any]) -> dict[str, dict[int, records.Run]]:
    """Notebook 01's baselines of the points' seeds, by model and seed."""
    return {m: baselines_by_seed(cfg, m, cfg["pareto_seeds"]) for m in cfg["mv_models"]}


def disagreement(cfg: dict[str, Any], plan: PointPlan,
                 baselines: dict[str, dict[int, records.Run]]) -> tuple[pd.DataFrame, dict[str, str],
                                                                       dict[tuple[int, ...], list[str]]]:
    """Each voter's disagreement with the exact voter on every baseline's validation activations, the tie rule
    with the lowest disagreement per voter, and the rules to retrain per family (all, or that one)."""
    dis = pd.concat([disagreement_table(cfg, base, [list(f) for f in plan.families], cfg["pareto_ties"],
                                        cfg["hmv_disagreement_batches"], cfg["hmv_sweep_val_per_class"]).assign(seed=s)
                     for by_seed in baselines.values() for s, base in by_seed.items()], ignore_index=True)
    dis["fanins"] = dis["fanins"].astype(str)
    chosen = pareto.choose_ties(dis, cfg["pareto_ties"])
    ties = {f: (list(cfg["pareto_ties"]) if cfg["pareto_tie_choice"] == "all" else [chosen[plan.family_key(f)]])
            for f in plan.families}
    return dis, chosen, ties


def _row(model: str, seed: int, width: int, base_width: int, run: records.Run,
         voter: VoterSpec | None = None) -> dict[str, Any]:
    """One row: the point the run measures (voter None: the popcount network) and its numbers."""
    return {"model": model, "seed": seed, **pareto.point_columns(voter, width, base_width), "run_id": run.run_id,
            "code_hash": run.metrics["code_hash"], "val_top1": run.metrics["val_top1"], "top1": run.metrics["top1"]}


def _evaluate_popcount(plan: PointPlan, base: records.Run, width: int) -> records.Run:
    """The popcount network on the points' shared splits (its own record: notebook 01's run is kept as it is)."""
    c = with_seed(run_config(plan.point_cfg, width=width), base.params["seed"])
    return evaluate_record(c, STEP, lambda: load_run_model(base), base.params["model"], f"popcount-w{width}",
                           {"source_run": base.run_id, "model": base.params["model"], "voter": None})


def run_points(cfg: dict[str, Any], plan: PointPlan, baselines: dict[str, dict[int, records.Run]],
               ties: dict[tuple[int, ...], list[str]]) -> pd.DataFrame:
    """Train and evaluate every point (finished runs are reused), one row per run: model, seed, the point's
    columns (:func:`mvlib.study.pareto.point_columns`), run id, code hash, validation and test top-1."""
    width, exact = plan.width, voter_spec(norm=cfg["mv_surrogate_norm"])
    rows = []
    for model, by_seed in baselines.items():
        for seed, base in by_seed.items():
            rows.append(_row(model, seed, width, width, _evaluate_popcount(plan, base, width)))
            rows.append(_row(model, seed, width, width,
                             retrain(plan.point_cfg, plan.owners.get("mv", STEP), base, exact)[1], exact))
            for voter in [v for v in plan.candidates if v.tie in ties[v.fanins]]:
                step = plan.owners.get("hmv", STEP) if pareto.point_kind(voter) == "hmv" else STEP
                rows.append(_row(model, seed, width, width, retrain(plan.point_cfg, step, base, voter)[1], voter))
            for w in plan.controls:  # notebook 01's recipe at width w, then the same retraining through the exact voter
                c = recipe_for(with_seed(run_config(cfg, width=w), seed), model)
                # a ResNet teacher does not depend on the student's width: notebook 01's serves
                t_step = "01_baseline" if c["distill"] and c["teacher_model"] != "same" else None
                _, narrow = train_recipe(c, STEP, model, f"baseline-w{w}", teacher_step=t_step)
                rows.append(_row(model, seed, w, width, _evaluate_popcount(plan, narrow, w)))
                rows.append(_row(model, seed, w, width, retrain(run_config(plan.point_cfg, width=w), STEP, narrow,
                                                                exact, variant=f"w{w}-retrain-approx")[1], exact))
    return pd.DataFrame(rows)
