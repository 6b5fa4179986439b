"""VoterSpec: every form of every voter the configurations name reads back to the same voter, and the names in
the committed results (run parameters and variants, circuits, the front's labels) are the names it writes."""
import csv
import dataclasses
import json
import math

import pytest

from mvlib.environment import REPO_ROOT
from mvlib.hw import flow
from mvlib.hw.verilog import circuit_fanins, parse_circuit
from mvlib.study import pareto
from mvlib.study.config import load_profile
from mvlib.study.pipeline import smoke_overrides
from mvlib.study.voter_study import ESTIMATOR_TAGS, retrained_voters, sweep_voters, voter_spec
from mvlib.voter_spec import (DEFAULT_ESTIMATOR, DEFAULT_SURROGATE_NORM, TIE_RULES, VoterSpec, circuit_parts,
                              parse_fanins)

RESULTS = REPO_ROOT / "results"
PROFILES = ("ci", "cpu", "paper")


def configured_voters(cfg) -> list[VoterSpec]:
    """Every voter a configuration names: the exact voter's rows (scales, estimators), notebook 04's sweep and
    retraining, notebook 09's front, notebook 07's circuits."""
    norm = cfg["mv_surrogate_norm"]
    exact = [voter_spec(norm=norm, output_scale=s) for s in cfg["mv_output_scales"]] + [
        voter_spec(estimator=e, norm=norm) for e in cfg["mv_retrain_estimators"]]
    return (exact + sweep_voters(cfg) + retrained_voters(cfg) + pareto.hierarchical_points(cfg)
            + flow.hierarchical_voters(cfg["hw_groups"], cfg["hw_ties"]))


def structure(voter: VoterSpec) -> VoterSpec:
    """The voter with the default layer options: what a tag, a circuit name or a label can say about it."""
    return dataclasses.replace(voter, estimator=DEFAULT_ESTIMATOR, norm=DEFAULT_SURROGATE_NORM, output_scale="none")


def old_parameters(fanins=None, tie="pos", estimator="approxsign", norm=DEFAULT_SURROGATE_NORM, output_scale="none"):
    """The run parameters as the study wrote them before VoterSpec (mvlib.study.voter_study.voter_spec then)."""
    spec = {"name": "mv", "estimator": estimator, "norm": norm, "output_scale": output_scale}
    if fanins is not None:
        spec.update(name="hmv", fanins=[fanins] if isinstance(fanins, int) else list(fanins), tie=tie)
    return spec


@pytest.fixture(scope="module", params=PROFILES + ("cpu+smoke", "paper+smoke"))  # ci has no smoke run
def profile_voters(request):
    name = request.param
    profile = name.removesuffix("+smoke")
    cfg = load_profile(profile, smoke_overrides(profile) if name.endswith("+smoke") else None)
    voters = configured_voters(cfg)
    assert voters and any(v.kind == "hmv" for v in voters)
    return voters


def test_every_configured_voter_reads_back_from_every_form(profile_voters):
    for v in profile_voters:
        assert VoterSpec.from_dict(v.to_dict()) == v
        assert VoterSpec.from_dict(json.loads(json.dumps(v.to_dict()))) == v  # as a record stores it
        assert VoterSpec.from_tag(v.tag()) == structure(v)
        assert VoterSpec.from_circuit(v.circuit_name()) == structure(v)
        if v.kind == "hmv":
            assert VoterSpec.from_variant(v.variant("retrain-approx")) == (structure(v), "retrain-approx")
            assert parse_circuit(v.circuit_name()) == ("hmv", v.leaves, v.tie)
            assert circuit_fanins(v.circuit_name()) == v.fanins
        else:
            assert v.variant("naive+recal") == "naive+recal" and VoterSpec.from_variant("naive+recal") is None
    # the names tell the voters apart exactly as their structure does
    shapes = {structure(v) for v in profile_voters}
    for form in (VoterSpec.tag, VoterSpec.circuit_name, VoterSpec.label):
        assert len({form(v) for v in shapes}) == len(shapes)


def test_the_parameters_are_those_the_study_recorded_before(profile_voters):
    """The dicts a run records are unchanged, so every committed run keeps its identity's parameters."""
    for v in profile_voters:
        fanins = None if v.kind == "mv" else list(v.fanins)
        old = old_parameters(fanins, v.tie, v.estimator, v.norm, v.output_scale)
        assert json.dumps(v.to_dict()) == json.dumps(old)


def test_notebook_04_voters_are_its_former_loops():
    cfg = load_profile("cpu")
    norm, w = cfg["mv_surrogate_norm"], cfg["width"]
    before = [old_parameters(g, t, norm=norm) for g in [g for g in cfg["hmv_groups"] if w % g == 0]
              + [list(f) for f in cfg["hmv_nested"] if w % math.prod(f) == 0] for t in cfg["hmv_ties"]]
    assert [v.to_dict() for v in sweep_voters(cfg)] == before
    assert [v.to_dict() for v in retrained_voters(cfg)] == [
        old_parameters(g, t, norm=norm) for g in cfg["hmv_retrain_groups"] for t in cfg["hmv_retrain_ties"]]


def test_names():
    tree = VoterSpec.hierarchical([4, 2], "first")
    assert (tree.tag(), tree.circuit_name(), tree.label()) == ("hmv-g4x2-tiefirst", "hmv4x2_first", "tree 4x2 tie first")
    g4 = VoterSpec.hierarchical(4)
    assert (g4.tag(), g4.circuit_name(), g4.label(), g4.variant("naive")) == (
        "hmv-g4-tiepos", "hmv4_pos", "HMV G=4 tie pos", "hmv-g4-tiepos-naive")
    mv = VoterSpec.exact(output_scale="alpha")
    assert (mv.tag(), mv.circuit_name(), mv.label(), mv.fanin_text(), mv.leaves) == ("mv", "mv", "MV", "", 1)
    assert VoterSpec.from_dict("mv") == VoterSpec.exact()
    assert VoterSpec.from_dict({"name": "hmv", "fanins": 4, "tie": "neg"}) == VoterSpec.hierarchical(4, "neg")
    assert VoterSpec.from_variant("hmv-g16-tieneg-naive+recal") == (VoterSpec.hierarchical(16, "neg"), "naive+recal")
    assert VoterSpec.from_variant("w8-retrain-approx") is None and VoterSpec.from_variant("baseline") is None
    assert {ESTIMATOR_TAGS[e] for e in ESTIMATOR_TAGS} == {"approx", "ste"}


@pytest.mark.parametrize("bad, message", [
    (lambda: VoterSpec("mv", (4,)), "no fan-ins"),
    (lambda: VoterSpec("mv", tie="neg"), "no fan-ins"),
    (lambda: VoterSpec("threshold"), "unknown voter kind"),
    (lambda: VoterSpec.hierarchical(4, "maybe"), "tie rule"),
    (lambda: VoterSpec.hierarchical([4, 1]), ">= 2"),
    (lambda: VoterSpec.exact(norm="l2"), "normalization"),
    (lambda: VoterSpec.exact(output_scale="beta"), "output scale"),
    (lambda: VoterSpec.from_dict({"name": "hmv", "fanins": [4], "recompute": True}), "not part of a VoterSpec"),
    (lambda: VoterSpec.from_tag("hmv-g4-tiemaybe"), "unknown voter name"),
    (lambda: VoterSpec.from_tag("hmv-g04-tiepos"), "leading zeros"),
    (lambda: VoterSpec.from_tag("hmv-4-tiepos"), "unknown voter name"),
    (lambda: VoterSpec.from_tag("hmv4"), "unknown voter name"),
    (lambda: VoterSpec.from_tag("hmv4_pos"), "unknown voter name"),  # a circuit name is not a tag
    (lambda: VoterSpec.from_circuit("hmv4x_pos"), "unknown"),
    (lambda: VoterSpec.from_circuit("popcount"), "unknown"),
    (lambda: VoterSpec.from_circuit("hmv1_pos"), ">= 2"),
    (lambda: VoterSpec.from_variant("hmv-gx-tiepos-naive"), "unknown"),
])
def test_malformed_voters_and_names_are_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_the_kernels_and_circuits_take_the_tie_rules_from_one_place():
    from cuda_numba.bitops import TIE_CODES
    from mvlib.voters import TIE_RULES as layer_rules
    assert layer_rules is TIE_RULES and list(TIE_CODES) == list(TIE_RULES)
    assert TIE_CODES == {"pos": 0, "neg": 1, "first": 2}  # the codes the kernels branch on
    assert circuit_parts("vote4_first", "vote") == ((4,), "first") and parse_fanins("2x2x2", "x") == (2, 2, 2)
    assert flow.circuits((4,), base=()) == [f"hmv4_{t}" for t in TIE_RULES]


def test_the_study_records_a_voter_as_its_parameters(monkeypatch):
    """substitute and retrain take a VoterSpec and hand the record its dict (and run_params converts one left in)."""
    from types import SimpleNamespace

    from mvlib.study import voter_study
    from mvlib.study.experiment import run_params
    seen = {}
    monkeypatch.setattr(voter_study, "apply_process_settings", lambda cfg: None)
    monkeypatch.setattr(voter_study, "loaders", lambda cfg: [None])
    monkeypatch.setattr(voter_study, "evaluate_record", lambda c, step, build, model, variant, params, **kw:
                        seen.setdefault("substitute", (variant, params)))
    monkeypatch.setattr(voter_study, "train_run", lambda c, step, model, variant, voter=None, **kw:
                        seen.setdefault("retrain", (variant, voter)))
    cfg = load_profile("ci")
    base = SimpleNamespace(run_id="20260101-000000-reactnet18-baseline-0123456789",
                           params={"model": "reactnet18", "seed": 0})
    voter = voter_spec([4, 2], "neg", norm=cfg["mv_surrogate_norm"])
    voter_study.substitute(cfg, "04_hierarchical_voter", base, voter, recal=True)
    voter_study.retrain(cfg, "04_hierarchical_voter", base, voter)
    assert seen["substitute"][0] == "hmv-g4x2-tieneg-naive+recal" and seen["substitute"][1]["voter"] == voter.to_dict()
    assert seen["retrain"] == ("hmv-g4x2-tieneg-retrain-approx", voter.to_dict())
    assert run_params(cfg, voter=voter)["voter"] == old_parameters([4, 2], "neg", norm=cfg["mv_surrogate_norm"])


# ---------------------------------------------------------------------------------------------- committed results
def committed_parameters() -> list[dict]:
    return [json.loads(p.read_text())["identity"]["params"] for p in sorted((RESULTS / "runs").glob("*/*/params.json"))]


def test_committed_run_parameters_and_variants_are_written_back_the_same():
    seen = 0
    for params in committed_parameters():
        stored = params.get("voter")
        if not isinstance(stored, dict) or stored.get("name") not in ("mv", "hmv"):
            continue
        voter = VoterSpec.from_dict(stored)
        assert voter.to_dict() == stored, params["variant"]
        tagged = VoterSpec.from_variant(params["variant"])
        if voter.kind == "hmv":
            assert tagged is not None and tagged[0] == structure(voter), params["variant"]
            assert voter.variant(tagged[1]) == params["variant"]
        else:
            assert tagged is None, params["variant"]
        seen += 1
    assert seen >= 100  # the committed study's voter runs of notebooks 02-04, 08 and 09


def test_committed_variants_in_the_run_index_read_back():
    with open(RESULTS / "runs.csv") as f:
        variants = {row["variant"] for row in csv.DictReader(f)}
    tagged = [v for v in variants if v.startswith("hmv-")]
    assert len(tagged) >= 20
    for variant in tagged:
        voter, mode = VoterSpec.from_variant(variant)
        assert voter.variant(mode) == variant


def test_committed_circuit_names_read_back():
    names = {p.stem.rsplit("_N", 1)[0] for p in (RESULTS / "hw" / "cache").glob("*.json")}
    for table in (RESULTS / "hw").glob("*/*.csv"):
        with open(table) as f:
            names |= {row["circuit"] for row in csv.DictReader(f) if row.get("circuit")}
    voters = [n for n in names if n == "mv" or n.startswith("hmv")]
    assert len(voters) >= 25 and any("x" in n for n in voters)
    for name in voters:
        assert VoterSpec.from_circuit(name).circuit_name() == name


@pytest.mark.parametrize("table", sorted(p.name for p in (RESULTS / "tables").glob("09_voter_pareto_runs_*.csv")))
def test_committed_front_rows_are_written_back_the_same(table):
    with open(RESULTS / "tables" / table) as f:
        rows = list(csv.DictReader(f))
    base = max(int(r["width"]) for r in rows if r["kind"] == "popcount")
    for r in rows:
        voter = None if r["circuit"] == "popcount" else VoterSpec.from_circuit(r["circuit"])
        got = pareto.point_columns(voter, int(r["width"]), base)
        assert {k: str(v) for k, v in got.items()} == {k: r[k] for k in got}, r["point"]
