"""Notebook 08's study functions (mvlib.study.voter_drop): verdicts on synthetic rows, records on tiny real runs,
and the notebook itself under papermill at the ci profile."""
import json
import math

import pandas as pd
import pytest

from mvlib.study import voter_drop as vd
from mvlib.study import voter_drop_verdicts as vdv
from mvlib.study.config import VOTER_DROP_CONVENTIONS, load_profile
from mvlib.study.deck import deck_numbers
from mvlib.study.stats import AT_FLOOR, UNRESOLVED, p_value, welch


def test_k_label_and_conventions():
    assert [vd.k_label(k) for k in (0.125, 0.5, 1, 2.0, 8)] == ["1/8", "1/2", "1", "2", "8"]
    assert vd.k_label(0.3) == "0.3"
    assert list(VOTER_DROP_CONVENTIONS) == list(vd.CONVENTIONS) + ["threshold"]  # config and module agree


def test_deck_difference_comes_from_the_deck_file():
    d = deck_numbers("main").set_index(["model", "variant"]).top1
    want = (d["birealnet18", "baseline"] - d["birealnet18", "naive"]) - (d["reactnet18", "baseline"]
                                                                         - d["reactnet18", "naive"])
    assert vdv.deck_difference() == pytest.approx(want)
    assert vdv.deck_difference() > 0  # the deck's ordering: Bi-RealNet-18 loses more


def _rows(factor, condition, react, bireal, **extra):
    """Per-seed rows with the given drops (float top-1 60 for every seed)."""
    out = []
    for model, drops in (("reactnet18", react), ("birealnet18", bireal)):
        for seed, d in enumerate(drops):
            out.append({"factor": factor, "condition": condition, "model": model, "seed": seed, "split": "val",
                        "baseline": 60.0, "voter": 60.0 - d, "drop": d, **extra})
    return out


def test_ordering_table_pairs_drops_and_orders_the_networks():
    rows = pd.DataFrame(_rows("a", "bireal worse", [10, 11, 12], [30, 32, 31], k=1.0)
                        + _rows("a", "react worse", [40, 42, 41], [5, 6, 7], k=8.0)
                        + _rows("a", "overlap", [10, 20, 30], [12, 25, 28], k=0.125)
                        + _rows("a", "one network only", [1, 2, 3], []))
    t = vdv.ordering_table(rows).set_index("condition")
    assert "one network only" not in t.index  # a difference needs both networks
    r = t.loc["bireal worse"]
    iv = welch([30, 32, 31], [10, 11, 12])
    assert r["difference"] == pytest.approx(iv.mean) and r["difference ± 95 %"] == pytest.approx(iv.half)
    assert r["reactnet18 drop"] == pytest.approx(11) and r["seeds"] == 3 and r["k"] == 1.0
    assert r["ordering"] == "deck's ordering"
    assert t.loc["react worse", "ordering"] == "reversed"
    assert t.loc["overlap", "ordering"] == UNRESOLVED
    assert t.loc["bireal worse", "point"] is None  # carried columns absent from the rows stay empty


def _order(*parts):
    return vdv.ordering_table(pd.DataFrame([r for p in parts for r in p]))


def test_factor_verdicts_follow_the_intervals():
    deck_like, reversed_, unclear = ([10, 11, 12], [30, 32, 31]), ([40, 42, 41], [5, 6, 7]), ([10, 20, 30],
                                                                                           [12, 25, 28])
    ref = dict(convention="naive", point="reference", kind="real")
    order = _order(
        _rows("a", "naive, k = 1", *reversed_, k=1.0), _rows("a", "naive, k = 8", *deck_like, k=8.0),
        _rows("b", "real: naive", *unclear, **ref),
        _rows("b", "binary: naive", *deck_like, **{**ref, "kind": "binary"}),
        _rows("c", "wide: naive", *unclear, **{**ref, "point": "wide"}),
        _rows("d", "01 baselines: naive-matched", *reversed_, convention="naive-matched"),
        _rows("d", "01 baselines: threshold", *reversed_, convention="threshold"))
    table, lines = vdv.factor_verdicts(order)
    v = dict(zip(table.factor, table.verdict))
    assert v["a"] == "reproduces the deck's ordering"  # k = 8 has it, k = 1 does not
    assert v["b"] == "reproduces the deck's ordering"
    assert v["c"] == UNRESOLVED
    assert v["d"] == "reverses the deck's ordering"
    text = "\n".join(lines)
    assert "cannot carry the deck's claim" in text  # the ordering flips between two k, both resolved
    assert f"{vdv.deck_difference():.1f}" in lines[0]
    # every sentence carries its interval
    r = order.set_index("condition").loc["binary: naive"]
    assert f"{r['difference']:+.1f} ± {r['difference ± 95 %']:.1f}" in text
    # a deck ordering at the reference that the treated condition loses is "removed"
    order2 = _order(_rows("b", "real: naive", *deck_like, **ref),
                    _rows("b", "binary: naive", *unclear, **{**ref, "kind": "binary"}))
    assert dict(zip(*vdv.factor_verdicts(order2)[0][["factor", "verdict"]].T.values))["b"] == \
        "removes the deck's ordering"
    # never the deck's ordering, reversed somewhere: said so, with the count
    order3 = _order(_rows("a", "naive, k = 1", *unclear, k=1.0), _rows("a", "naive, k = 8", *reversed_, k=8.0),
                    _rows("a", "naive, k = 1/8", *reversed_, k=0.125))
    assert vdv.factor_verdicts(order3)[0].verdict.iloc[0] == \
        "does not reproduce the deck's ordering (reversed in 2 of 3)"
    empty = vdv.factor_verdicts(_order(_rows("a", "naive, k = 1", *deck_like, k=1.0)))[0]
    assert set(empty[empty.factor != "a"].verdict) == {"not measured in this profile"}



def test_variant_label_and_result_sentence():
    assert vdv.variant_label("w16-e1-binary1x1, voter 3x3+1x1: naive") == "binary1x1\n3x3+1x1: naive"
    with pytest.raises(ValueError, match="is not '<recipe>, voter"):
        vdv.variant_label("01 baselines: naive")
    deck_like, reversed_ = ([10, 11, 12], [30, 32, 31]), ([40, 42, 41], [5, 6, 7])
    order = _order(_rows("a", "naive, k = 1", *reversed_, k=1.0), _rows("a", "naive, k = 1/8", *deck_like, k=0.125))
    table, _ = vdv.factor_verdicts(order)
    s = vdv.result_sentence(order, table, "cpu", 3)
    assert s.startswith("**Result (cpu, 3 seeds).**")
    assert "ReActNet-18 41.0 and Bi-RealNet-18 6.0 points" in s  # drops at k = 1, from the rows
    assert "largest at k = 1/8" in s and "(a) reproduces the deck's ordering" in s
    assert vdv.result_sentence(order[order.condition != "naive, k = 1"], table, "cpu", 3) == \
        "not enough records for a result sentence"

# ---------------------------------------------------------------------------------------------- tiny real runs
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_root):
    """A configuration of seconds and one trained baseline per network (seed 0)."""
    from mvlib.study.experiment import train_baseline
    res = tmp_path_factory.mktemp("vd") / "results"
    cfg = load_profile("ci", {"results_dir": str(res), "data_dir": str(data_root), "width": 4,
                              "train_per_class": 5, "val_per_class": 5, "test_per_class": 5, "seeds": [0],
                              "sweep_seeds": [0], "eval_batch_size": 50, "mv_calib_batches": 1,
                              "mv_recal_batches": 1, "vd_train_width": 4, "vd_wide_width": 8,
                              "vd_train_per_class": 5})
    base = {m: {0: train_baseline(cfg, m)[1]} for m in vd.MODELS}
    return cfg, base


def _n_records(cfg, step):
    from pathlib import Path
    return len(list(Path(cfg["results_dir"]).glob(f"runs/{step}/*/metrics.json")))


@pytest.mark.slow
def test_rescale_checks_and_sweep_on_trained_networks(tiny):
    from mvlib.study.voter_study import substitute, voter_spec
    cfg, base = tiny
    checks = vd.rescale_checks(cfg, base["reactnet18"][0], [0.125, 1.0, 4.0])
    assert [c["k"] for c in checks] == [0.125, 4.0]  # k = 1 is the baseline itself
    for c in checks:  # powers of two: the float network is bit-identical
        assert c["val_differing_predictions"] == c["test_differing_predictions"] == 0
        assert c["val_max_abs_logit_diff"] == c["test_max_abs_logit_diff"] == 0.0
        assert c["top1"] == base["reactnet18"][0].metrics["top1"]
    before = _n_records(cfg, vd.STEP)
    assert [c["run_id"] for c in vd.rescale_checks(cfg, base["reactnet18"][0], [0.125, 4.0])] == \
        [c["run_id"] for c in checks]  # reused, nothing recomputed
    sweep = vd.rescale_sweep(cfg, base, [0.125, 1.0])
    assert _n_records(cfg, vd.STEP) == before + 4
    assert set(sweep.condition) == {"naive, k = 1/8", "naive, k = 1"} and set(sweep.split) == {"val"}
    assert (sweep["drop"] == sweep["baseline"] - sweep["voter"]).all()
    # at k = 1 the sweep's voter is notebook 02's naive row, read on the same validation images
    for m in vd.MODELS:
        naive = substitute(cfg, vd.NAIVE_STEP, base[m][0], voter_spec(norm=cfg["mv_surrogate_norm"]))
        got = sweep[(sweep.model == m) & (sweep.k == 1.0)].voter.iloc[0]
        assert got == naive.metrics["val_top1"]


@pytest.mark.slow
def test_convention_rows_reuse_notebook_02_and_add_the_threshold(tiny):
    cfg, base = tiny
    conv = vd.convention_rows(cfg, base)
    assert set(conv.convention) == {"naive", "naive-alpha", "naive-matched", "naive+recal", "threshold"}
    assert set(conv.split) == {"test"} and set(conv.point) == {"01 baselines"}
    steps = {json.loads(open(f"{cfg['results_dir']}/runs/{s}/{r}/params.json").read())["identity"]["params"]
             ["step"] for r, s in zip(conv.run_id, [vd.STEP if c == "threshold" else vd.NAIVE_STEP
                                                     for c in conv.convention])}
    assert steps == {vd.STEP, vd.NAIVE_STEP}
    assert set(conv[conv.convention == "threshold"].factor) == {"d"}
    assert set(conv[conv.convention == "naive"].factor) == {"a"}


@pytest.mark.slow
def test_train_variants_one_factor_at_a_time(tiny):
    cfg, _ = tiny
    c = {**cfg, "vd_train_seeds": [0], "vd_scale_seeds": [0], "vd_downsample_kinds": ["binary", "weights"],
         "vd_conventions": ["naive", "threshold"]}
    trained = vd.train_variants(c)
    got = {(t["point"], t["kind"], t["model"]) for t in trained}
    assert got == {(p, k, m) for p, k in [("reference", "real"), ("reference", "binary"), ("reference", "weights"),
                                          ("wide", "real"), ("long", "real")] for m in vd.MODELS}
    by = {(t["point"], t["kind"], t["model"]): t["run"].params for t in trained}
    ref = by["reference", "real", "reactnet18"]
    assert by["reference", "binary", "reactnet18"]["model_options"] == {"binary_downsample": "binary"}
    assert by["reference", "weights", "reactnet18"]["model_options"] == {"binary_downsample": "weights"}
    # each point differs from the reference in one factor only
    for (point, kind, _), p in by.items():
        diff = {k for k in set(p) | set(ref) if p.get(k) != ref.get(k)} - {"model", "variant", "model_options"}
        assert diff == {"wide": {"width"}, "long": {"epochs"}}.get(point, set()), (point, kind, diff)
    assert by["wide", "real", "reactnet18"]["width"] == cfg["vd_wide_width"]
    assert by["long", "real", "reactnet18"]["epochs"] == cfg["vd_train_epochs"] * cfg["vd_long_factor"]
    rows = vd.variant_rows(c, trained)
    binary = rows[rows.kind == "binary"]
    assert set(binary.layers) == {"3x3", "3x3+1x1"} and set(rows[rows.kind != "binary"].layers) == {"3x3"}
    for rid, layers in zip(binary.run_id, binary.layers):
        p = json.loads(open(f"{cfg['results_dir']}/runs/{vd.STEP}/{rid}/params.json").read())["identity"]["params"]
        assert p["voter_layers"] == ("all" if layers == "3x3+1x1" else "3x3")
    assert set(rows.factor) == {"b", "c"} and set(rows.split) == {"val"}
    order = vdv.ordering_table(rows)
    assert len(order) == len(rows) // 2  # one seed per network: every condition has both


@pytest.mark.slow
def test_two_step_and_distillation_share_the_teacher(tiny):
    cfg, _ = tiny
    c = {**vd.recipe_cfg(cfg), "two_step": True, "distill": True, "teacher_epochs": 1, "epochs": 2}
    runs = {k: vd.train_variant(c, "reactnet18", k) for k in ("real", "binary")}
    assert runs["real"].params["teacher_run"] == runs["binary"].params["teacher_run"] is not None
    assert runs["real"].params["init_run"] != runs["binary"].params["init_run"]  # step 1 has the variant's 1x1
    assert runs["binary"].params["epochs"] == 1  # the second half of two-step training


@pytest.mark.slow
def test_flips_and_damage(tiny):
    cfg, base = tiny
    flips = vd.flip_table(cfg, base, [0.5, 1.0, 2.0])
    assert set(flips.k) == {0.5, 1.0, 2.0} and len(flips) == 3 * 2 * 16
    for col in ("flip_alpha", "flip_matched", "flip_threshold"):  # these conventions do not see k
        wide = flips.pivot_table(index=["model", "index"], columns="k", values=col)
        assert (wide[0.5] == wide[1.0]).all() and (wide[2.0] == wide[1.0]).all(), col
    assert flips.flip_threshold.max() < 1e-3  # exact up to float32 BN rounding at BN = 0
    damage = vd.layer_damage(cfg, base, [0])
    assert set(damage["index"]) == set(range(16))
    lines = vd.damage_lines(flips, damage)
    assert len(lines) == 2 and all("Spearman" in line for line in lines)


# ---------------------------------------------------------------------------------------------- the notebook
@pytest.fixture(scope="module")
def ci_results(tmp_path_factory, data_root):
    """A results folder holding notebook 01's ci baselines (as tests/test_notebooks_study.py does)."""
    import os
    from test_notebooks_study import execute
    os.environ["MVLIB_DATA"] = str(data_root)  # the kernel inherits it
    root = tmp_path_factory.mktemp("vd_ci")
    execute("01_baseline", root / "results", root)
    return root / "results"


@pytest.mark.slow
def test_notebook_08_ci(ci_results, tmp_path):
    import nbformat
    from test_notebooks_study import execute, metrics
    execute("08_voter_drop", ci_results, tmp_path)
    recs = metrics(ci_results, vd.STEP)
    variants = {m["variant"] for m in recs}
    assert {"float-k0.125", "naive-k0.125", "naive-k1", "naive-k8", "threshold"} <= variants
    assert all(m["val_differing_predictions"] == m["test_differing_predictions"] == 0
               for m in recs if m["variant"].startswith("float-k"))
    assert {m["variant"] for m in metrics(ci_results, vd.TRAIN_STEP)} >= {"w8-e1-real1x1", "w8-e1-binary1x1",
                                                                          "w16-e1-real1x1", "w8-e2-real1x1"}
    for name in ("rows", "ordering", "verdict", "flips", "damage", "rescale_check", "timing"):
        assert (ci_results / "tables" / f"08_voter_drop_{name}_ci.csv").is_file(), name
    verdict = pd.read_csv(ci_results / "tables" / "08_voter_drop_verdict_ci.csv")
    assert list(verdict.factor) == ["a", "b", "c", "d"]
    nb = nbformat.read(tmp_path / "08_voter_drop.ipynb", as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "Result (ci, 2 seeds)" in shown and "(d) A genuine architectural difference" in shown
    assert shown.count("image/png") >= 5  # one plot per experiment
    execute("99_report", ci_results, tmp_path)  # section 6 regenerates the verdict from notebook 08's tables
    report = json.dumps([c.get("outputs", []) for c in nbformat.read(tmp_path / "99_report.ipynb",
                                                                     as_version=4).cells])
    for line in vdv.factor_verdicts(vdv.ordering_table(pd.read_csv(ci_results / "tables"
                                                                 / "08_voter_drop_rows_ci.csv")))[1]:
        assert json.dumps(line)[1:-1] in report
    before = {s: len(metrics(ci_results, s)) for s in (vd.STEP, vd.TRAIN_STEP, vd.NAIVE_STEP)}
    execute("08_voter_drop", ci_results, tmp_path)  # a second run reuses every record
    assert {s: len(metrics(ci_results, s)) for s in before} == before
    rows = pd.read_csv(ci_results / "tables" / "08_voter_drop_rows_ci.csv")
    assert not rows["drop"].isna().any()
    assert math.isclose((rows.baseline - rows.voter - rows["drop"]).abs().max(), 0, abs_tol=1e-9)


def test_a_row_at_chance_says_nothing_and_the_rows_are_one_holm_family():
    # Bi-RealNet-18's voter row at 60 - 51 = 9 % (chance 10 %): its drop is floor-limited
    rows = pd.DataFrame(_rows("b", "at chance", [10, 11, 12], [51, 50.5, 51.5], k=1.0)
                        + _rows("b", "clear", [10, 11, 12], [30, 32, 31], k=1.0))
    t = vdv.ordering_table(rows).set_index("condition")
    assert t.loc["at chance", "ordering"] == AT_FLOOR and bool(t.loc["at chance", "at_floor"])
    assert t.loc["at chance", "birealnet18 voter"] == pytest.approx(9.0)
    assert t.loc["clear", "ordering"] == "deck's ordering"
    # every condition at the floor: the factor says nothing
    only = vdv.ordering_table(pd.DataFrame(_rows("b", "at chance", [10, 11, 12], [51, 50.5, 51.5], k=1.0)))
    assert vdv._factor(only, only).startswith(AT_FLOOR)
    # a difference resolved alone at 95 % that does not survive Holm over a family of many rows
    weak = _rows("a", "weak", [10, 11, 12], [12.5, 13.5, 14.8], k=1.0)
    p_alone = p_value(welch([12.5, 13.5, 14.8], [10, 11, 12]))
    assert p_alone < 0.05
    family = weak + [r for i in range(6) for r in _rows("a", f"null {i}", [10, 11, 12], [10.5, 10.5, 12.5], k=1.0)]
    assert vdv.ordering_table(pd.DataFrame(family)).set_index("condition").loc["weak", "ordering"] == UNRESOLVED
