"""Notebook 09's analysis: points, the front, the equal-cost comparison and the verdict, on hand-made rows."""
import pandas as pd
import pytest
import torch

from mvlib.hw import cost as hw_cost
from mvlib.layers import binary_convs
from mvlib.models import build_model
from mvlib.study import pareto
from mvlib.voter_spec import VoterSpec


def _runs(spec):
    """Rows for ``{(point, kind, width, circuit): [top1 per seed]}`` of one model."""
    rows = []
    for (point, kind, width, circuit), accs in spec.items():
        for seed, a in enumerate(accs):
            rows.append({"model": "m", "seed": seed, "point": point, "kind": kind, "width": width, "fanins": "",
                         "tie": "", "circuit": circuit, "top1": a, "val_top1": a})
    return pd.DataFrame(rows)


def _net(costs):
    return pd.DataFrame([{"circuit": c, "width": w, "ge_evals_per_image": v, "max_depth": d, "area_ge": v / 100}
                         for (c, w), (v, d) in costs.items()])


RUNS = _runs({("popcount w16", "popcount", 16, "popcount"): [60.0, 61.0, 62.0],
              ("popcount w12", "popcount", 12, "popcount"): [57.0, 57.5, 58.0],
              ("MV", "mv", 16, "mv"): [55.0, 55.5, 56.0],
              ("HMV G=4 tie pos", "hmv", 16, "hmv4_pos"): [59.6, 60.4, 60.0],    # within 1 point, 5 % cheaper
              ("HMV G=16 tie pos", "hmv", 16, "hmv16_pos"): [50.0, 50.5, 51.0],  # cheaper, but worse than w12
              ("tree 2x2 tie first", "tree", 16, "hmv2x2_first"): [40.0, 41.0, 42.0]})
NET = _net({("popcount", 16): (100.0, 27), ("popcount", 12): (56.0, 25), ("mv", 16): (99.0, 25),
            ("hmv4_pos", 16): (95.0, 20), ("hmv16_pos", 16): (83.0, 18), ("hmv2x2_first", 16): (25.0, 16)})


def test_points_front_and_equal_cost_comparison():
    pts = pareto.points_table(RUNS, NET)
    assert len(pts) == 6 and (pts.seeds == 3).all()
    hmv4 = pts.set_index("point").loc["HMV G=4 tie pos"]
    assert hmv4.top1 == pytest.approx(60.0) and hmv4.top1_half > 0 and hmv4.ge_evals_per_image == 95.0
    tree = pts.set_index("point").loc["tree 2x2 tie first"]
    assert tree.degenerate and tree.inputs_read == pytest.approx(0.25)  # one of four leaves is read
    on = pts[pareto.front(pts)].sort_values("ge_evals_per_image").point.tolist()
    # cheapest first, each more accurate than every cheaper point
    assert on == ["tree 2x2 tie first", "popcount w12", "HMV G=4 tie pos", "popcount w16"]
    vs = pareto.against_popcount(RUNS, pts).set_index("point")
    assert vs.loc["HMV G=16 tie pos", "outcome"] == "loses"          # w12 costs less and is more accurate
    assert vs.loc["HMV G=16 tie pos", "popcount_no_costlier"] == "popcount w12"
    assert vs.loc["HMV G=4 tie pos", "outcome"] == pareto.UNRESOLVED  # below w16, above w12: not resolved
    assert pd.isna(vs.loc["tree 2x2 tie first", "popcount_no_costlier"])  # cheaper than every control
    assert vs.loc["tree 2x2 tie first", "outcome"] == "degenerate (reads 25% of its inputs)"


def test_verdict_names_the_cheapest_voter_within_1_and_3_points():
    pts = pareto.points_table(RUNS, NET)
    text = pareto.verdict(RUNS, pts, 16)
    assert "within 1 point: HMV G=4 tie pos (60.00 %, 5.0 % less logic work, depth 20 against 27)" in text
    assert "within 3 points: HMV G=4 tie pos" in text
    assert "1 lose to one costing no more (HMV G=16 tie pos)" in text and "? not resolved at 95 %" in text
    better = RUNS.assign(top1=RUNS.top1.where(RUNS.point != "HMV G=4 tie pos", RUNS.top1 + 5))  # 65 > w16's 61
    text = pareto.verdict(better, pareto.points_table(better, NET), 16)
    assert "? yes: 1 of 2 voters beat" in text  # the degenerate tree is left out of the family
    assert "Left out: tree 2x2 tie first (degenerate" in text and "Holm" in text


def _record(step, variant, model, epochs, images, top1, test_images, code="c1"):
    return {"step": step, "variant": variant, "model": model, "profile": "cpu", "epochs": epochs,
            "train_images": images, "top1": top1, "test_images": test_images, "code_hash": code}


def test_recipe_note_reads_the_recipes_and_the_longer_retraining_from_the_records():
    records = [_record("09_voter_pareto", "baseline-w8", "m", 4, 20000, 49.0, 2000),
               _record("09_voter_pareto", "retrain-approx", "m", 1, 1000, 39.0, 2000),
               _record("09_voter_pareto", "retrain-approx", "m", 1, 1000, 41.0, 2000),
               _record("03_mv_retraining", "retrain-approx", "m", 1, 15000, 50.0, 10000),
               _record("03_mv_retraining", "retrain-approx", "m", 1, 15000, 52.0, 10000),
               _record("03_mv_retraining", "retrain-approx", "m", 1, 15000, 10.0, 10000, code="old")]
    note = pareto.recipe_note(records, "cpu", "c1")
    assert "trained from scratch for 4 epochs on 20,000 images" in note
    assert "retrained through its voter for 1 epoch on 1,000 images, shorter than notebook 03's" in note
    # the old code's record is left out: the mean is (50 + 52) / 2, not with 10
    assert "m 51.00 % (n=2, 10,000 test images) against 40.00 % here (n=2, 2,000 test images)" in note
    same = [r if r["step"] != "03_mv_retraining" else {**r, "train_images": 1000} for r in records]
    assert "shorter" not in pareto.recipe_note(same, "cpu", "c1")  # the paper profile: 03's own runs
    assert pareto.recipe_note(records[3:], "cpu", "c1") is None     # no notebook-09 records
    assert pareto.recipe_note(records, "paper", "c1") is None       # another profile's records only
    assert pareto.verdict(RUNS, pareto.points_table(RUNS, NET), 16, note).endswith(note)


def test_tie_choice_and_checks():
    dis = pd.DataFrame({"fanins": ["4", "4", "4", "2x2", "2x2"], "tie": ["pos", "neg", "first", "pos", "first"],
                        "disagree_rate": [0.3, 0.2, 0.2, 0.1, 0.4]})
    assert pareto.choose_ties(dis, ["pos", "neg", "first"]) == {"4": "neg", "2x2": "pos"}  # equal: earlier rule
    assert pareto.control_widths(16, [0.75, 0.5]) == [12, 8]
    with pytest.raises(ValueError, match="whole number of channels"):
        pareto.control_widths(16, [0.3])
    with pytest.raises(ValueError, match="must divide the stage-1 width 16"):
        pareto.voter_families(16, [4], [[4, 8]])
    assert pareto.voter_families(16, [2, 16], [[4, 4]]) == [(2,), (16,), (4, 4)]
    assert pareto.point_label(VoterSpec.hierarchical(4), 16, 16) == "HMV G=4 tie pos"
    assert pareto.point_label(VoterSpec.exact(), 12, base_width=16) == "MV w12"
    assert pareto.point_label(None, 16, 16) == "popcount w16"
    assert pareto.circuit_of(VoterSpec.hierarchical((2, 2, 2, 2), "neg")) == "hmv2x2x2x2_neg"
    assert pareto.point_kind(VoterSpec.hierarchical((2, 2), "neg")) == "tree" and pareto.point_kind(None) == "popcount"


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18"])
def test_costed_layers_are_the_networks_binary_convolutions(name):
    """The logic cost sums over cost.reactnet18_layers: both networks' binary 3x3 convolutions, shape for shape."""
    model = build_model(name, width=12).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m.in_channels * 9, o[0].numel())))
             for _, m in binary_convs(model) if m.kernel_size == 3]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen == [(layer["fanin"], layer["outputs"]) for layer in hw_cost.reactnet18_layers(12)]


def test_network_costs_sum_the_layers():
    layers = hw_cost.reactnet18_layers(4)
    costs = pd.DataFrame([{"circuit": "popcount", "n": n, "area_ge": n / 9, "n_cells": n, "depth": n // 36}
                          for n in {layer["fanin"] for layer in layers}])
    row = pareto.network_costs(costs, [("popcount", 4)]).iloc[0]
    assert row.area_ge == pytest.approx(sum(layer["fanin"] / 9 for layer in layers))
    assert row.ge_evals_per_image == pytest.approx(sum(layer["fanin"] / 9 * layer["outputs"] for layer in layers))
    assert row.max_depth == max(layer["fanin"] // 36 for layer in layers)
    synth, designs = pareto.circuits_needed(4, [2], [VoterSpec.hierarchical(f) for f in [(2,), (2, 2)]])
    assert ("hmv2x2_pos", 36) in synth and ("popcount", 18) in synth and ("hmv2_pos", 18) not in synth
    assert designs[-2:] == [("hmv2_pos", 4), ("hmv2x2_pos", 4)]


def test_point_plan_checks_before_any_work_and_names_what_it_measures():
    from mvlib.study.config import load_profile
    from mvlib.study.pareto_runs import OWNERS, point_plan

    cfg = load_profile("cpu")
    plan = point_plan(cfg)
    assert plan.width == cfg["width"] and plan.controls == tuple(pareto.control_widths(cfg["width"],
                                                                                        cfg["pareto_width_fractions"]))
    assert {v.fanins for v in plan.candidates} == set(plan.families)
    assert plan.shared == pareto.shares_runs(cfg) and plan.owners == (OWNERS if plan.shared else {})
    assert plan.summary(cfg)["voters"] == ", ".join("x".join(map(str, f)) for f in plan.families)
    with pytest.raises(ValueError, match=r"pareto_seeds \[99\] have no baseline"):
        point_plan({**cfg, "pareto_seeds": [99]})
    with pytest.raises(ValueError, match="whole number of channels"):
        point_plan({**cfg, "pareto_width_fractions": [0.3]})
    with pytest.raises(ValueError, match="must divide the stage-1 width"):
        point_plan({**cfg, "pareto_groups": [3]})
