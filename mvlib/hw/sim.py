"""Simulation of gate netlists and the check against mvlib's reference voters.

Netlists come from Yosys as JSON (``write_json``): either the generator's
Verilog read and lowered to Yosys' internal gates (``$_AND_``, ``$_XOR_``, ... --
this simulates the Verilog text as a Verilog front end reads it), or the
ABC-mapped netlist of library cells (:data:`mvlib.hw.cost.CELLS`). Both are
evaluated here in numpy, one bool array per net over all test vectors, in
topological order; the same pass gives the logic depth. (Yosys' own ``sim`` is
cycle-based and slow to feed thousands of vectors; iverilog would add a second
tool to CI. A 40-line evaluator over the JSON netlist does the job.)

Reference outputs come from :mod:`mvlib.voters`: ``majority_vote(s)`` for the
voter, ``hierarchical_vote(block_sums, fanins, tie)`` for the hierarchical voters
(one level or nested trees), the integer popcount for ``popcount``. Test vectors
mix uniform random inputs, inputs at and next to the decision threshold,
all-agree / all-disagree, forced ties of the voter (N even), of the leaf blocks,
of every inner tree level and of the outer vote (:func:`_tree_votes`), and are
exhaustive where that is small (all ``a, w`` for N <= 9, all XNOR patterns for
N <= 16).
"""
from __future__ import annotations

import numpy as np
import torch

from ..voters import hierarchical_vote, majority_vote, outer_tie_mask
from .cost import CELLS
from .verilog import circuit_fanins, parse_circuit

# Yosys internal gate cells (after techmap): input pins and function
_YOSYS_GATES = {
    "$_BUF_": (("A",), lambda A: A), "$_NOT_": (("A",), lambda A: ~A),
    "$_AND_": (("A", "B"), lambda A, B: A & B), "$_OR_": (("A", "B"), lambda A, B: A | B),
    "$_XOR_": (("A", "B"), lambda A, B: A ^ B), "$_XNOR_": (("A", "B"), lambda A, B: ~(A ^ B)),
    "$_NAND_": (("A", "B"), lambda A, B: ~(A & B)), "$_NOR_": (("A", "B"), lambda A, B: ~(A | B)),
    "$_ANDNOT_": (("A", "B"), lambda A, B: A & ~B), "$_ORNOT_": (("A", "B"), lambda A, B: A | ~B),
    "$_MUX_": (("A", "B", "S"), lambda A, B, S: (A & ~S) | (B & S)),
}
_GATES = {**_YOSYS_GATES, **{name: (pins, fn) for name, (_, pins, _, fn) in CELLS.items()}}


class GateNetlist:
    """A combinational netlist from Yosys JSON, evaluable on bool vectors."""

    def __init__(self, data: dict, top: str = "top"):
        mod = data["modules"][top]
        self.inputs = {n: p["bits"] for n, p in mod["ports"].items() if p["direction"] == "input"}
        self.outputs = {n: p["bits"] for n, p in mod["ports"].items() if p["direction"] == "output"}
        self.cell_counts: dict[str, int] = {}
        cells = []
        for c in mod["cells"].values():
            if c["type"] not in _GATES:
                raise ValueError(f"cannot simulate cell type {c['type']!r}")
            pins, fn = _GATES[c["type"]]
            cells.append((fn, [c["connections"][p][0] for p in pins], c["connections"]["Y"][0]))
            self.cell_counts[c["type"]] = self.cell_counts.get(c["type"], 0) + 1
        self.cells = self._toposort(cells)

    def _toposort(self, cells):
        """Order cells so that every input is computed first (Kahn's algorithm)."""
        driver = {out: i for i, (_, _, out) in enumerate(cells)}
        users: dict[int, list[int]] = {}
        missing = []
        for i, (_, ins, _) in enumerate(cells):
            deps = {driver[b] for b in ins if b in driver}
            missing.append(len(deps))
            for d in deps:
                users.setdefault(d, []).append(i)
        ready = [i for i, m in enumerate(missing) if m == 0]
        order = []
        while ready:
            i = ready.pop()
            order.append(cells[i])
            for u in users.get(i, ()):
                missing[u] -= 1
                if missing[u] == 0:
                    ready.append(u)
        if len(order) != len(cells):
            raise ValueError("netlist has a combinational loop")
        return order

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def depth(self) -> int:
        """Cells on the longest input-to-output path."""
        lvl: dict = {}
        for _, ins, out in self.cells:
            lvl[out] = 1 + max((lvl.get(b, 0) for b in ins if not isinstance(b, str)), default=0)
        return max((lvl.get(b, 0) for bits in self.outputs.values() for b in bits if not isinstance(b, str)),
                   default=0)

    def evaluate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs ``[V, width]`` (bool) for inputs ``{name: bool [V, width]}`` (bit i = column i)."""
        v = len(next(iter(inputs.values())))
        net = {"0": np.zeros(v, bool), "1": np.ones(v, bool)}
        for name, bits in self.inputs.items():
            for i, b in enumerate(bits):
                net[b] = np.asarray(inputs[name][:, i], bool)
        for fn, ins, out in self.cells:
            net[out] = fn(*(net[b] for b in ins))
        undefined = [b for bits in self.outputs.values() for b in bits if b not in net]
        if undefined:
            raise ValueError(f"outputs undriven or 'x': {undefined[:4]}")
        return {name: np.stack([net[b] for b in bits], 1) for name, bits in self.outputs.items()}


# ---------------------------------------------------------------------------
# Test vectors and reference outputs
# ---------------------------------------------------------------------------
def _patterns_with_count(rng, counts: np.ndarray, width: int) -> np.ndarray:
    """Random bool rows of ``width`` with exactly ``counts[i]`` ones each."""
    ranks = rng.random((len(counts), width)).argsort(1).argsort(1)
    return ranks < np.asarray(counts)[:, None]


def _xnor_patterns(rng, circuit: str, n: int, count: int) -> np.ndarray:
    """XNOR patterns ``x`` (1 = operands agree) stressing the circuit's decisions."""
    kind, g, _ = parse_circuit(circuit)
    t = (n + 1) // 2
    parts = [rng.random((count, n)) < 0.5, np.zeros((1, n), bool), np.ones((1, n), bool)]
    # popcount exactly at and next to the threshold (for even N, p = N/2 is the tie s = 0)
    near = np.clip(t + rng.integers(-2, 2, count), 0, n)
    parts.append(_patterns_with_count(rng, near, n))
    if n <= 16:  # all 2^n patterns
        parts.append(((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool))
    if kind == "hmv":
        fs, tie = circuit_fanins(circuit), parse_circuit(circuit)[2]
        nb = n // g
        tb = (nb + 1) // 2
        # leaf votes: random, or built top-down with exact ties forced at every level
        for ups in (rng.random((count, g)) < 0.5, _tree_votes(rng, fs, tie, count)):
            # each leaf at its threshold -1 / tie / +1 (exact leaf ties when nb is even: p = nb/2 = tb)
            off = np.where(ups, rng.integers(0, 2, (count, g)), rng.integers(-2, 0, (count, g)))
            blocks = [_patterns_with_count(rng, np.clip(tb + off[:, j], 0, nb), nb) for j in range(g)]
            parts.append(np.concatenate(blocks, 1))
    return np.concatenate(parts, 0)


def _tree_votes(rng, fanins, tie: str, count: int) -> np.ndarray:
    """Leaf votes (True = +1) ``[count, prod(fanins)]`` whose tree hits exact ties at every level.

    Top-down from a random root value d: a node of G children gets exactly G/2
    +1 children (a tie) half the time when G is even and the tie rule yields d
    (pos: d = +1, neg: d = -1, first: the first child set to d); otherwise the
    smallest majority / largest minority for d, or one step further. Every node
    then votes d, so the forced ties are real ties and the parents stay at theirs.
    """
    d = rng.random((count, 1)) < 0.5
    for g in fanins:  # outer level first
        v, m = d.shape
        d = d.reshape(-1)
        step = rng.integers(0, 2, d.size)
        k = np.where(d, np.minimum(g // 2 + 1 + step, g), np.maximum((g - 1) // 2 - step, 0))
        can_tie = {"pos": d, "neg": ~d, "first": np.ones_like(d)}[tie] & (g % 2 == 0)
        at_tie = can_tie & (rng.random(d.size) < 0.5)
        kids = _patterns_with_count(rng, np.where(at_tie, g // 2, k), g)
        if tie == "first":  # first child = d, g/2 ups in all
            rest = _patterns_with_count(rng, g // 2 - d.astype(np.int64), g - 1)
            kids = np.where(at_tie[:, None], np.concatenate([d[:, None], rest], 1), kids)
        d = kids.reshape(v, m * g)
    return d


def make_vectors(circuit: str, n: int, count: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Input vectors ``{a, w[, thr] | v}`` (bool ``[V, width]``) for ``circuit`` at fan-in ``n``."""
    rng = np.random.default_rng(seed)
    kind, g, _ = parse_circuit(circuit)
    if kind == "vote":  # the outer vote alone: all 2^G inputs
        return {"v": ((np.arange(2 ** g)[:, None] >> np.arange(g)) & 1).astype(bool)}
    if 2 * n <= 18:  # every (a, w) pair
        allv = ((np.arange(2 ** (2 * n))[:, None] >> np.arange(2 * n)) & 1).astype(bool)
        vec = {"a": allv[:, :n], "w": allv[:, n:]}
    else:
        x = _xnor_patterns(rng, circuit, n, count)
        a = rng.random(x.shape) < 0.5
        vec = {"a": a, "w": ~(a ^ x)}  # a XNOR w = x
    if kind == "pc_thr":
        width = n.bit_length()
        v = len(vec["a"])
        p = (~(vec["a"] ^ vec["w"])).sum(1)
        # thresholds: the voter's own, at the count and next to it, and uniform
        thr = np.select([np.arange(v) % 4 == 0, np.arange(v) % 4 == 1, np.arange(v) % 4 == 2],
                        [np.full(v, (n + 1) // 2), p, p + 1], rng.integers(0, 2 ** width, v))
        vec["thr"] = ((np.clip(thr, 0, 2 ** width - 1)[:, None] >> np.arange(width)) & 1).astype(bool)
    return vec


def reference(circuit: str, n: int, vec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Expected outputs from mvlib's reference voters (bit 1 = +1)."""
    kind, g, tie = parse_circuit(circuit)
    if kind == "vote":
        s = torch.from_numpy(2 * vec["v"].astype(np.int64) - 1)  # each child a ±1 vote
        return {"y": (hierarchical_vote(s, g, tie) > 0).numpy()[:, None]}
    x = ~(vec["a"] ^ vec["w"])
    p = x.sum(1).astype(np.int64)
    if kind == "popcount":
        width = n.bit_length()
        return {"count": ((p[:, None] >> np.arange(width)) & 1).astype(bool)}
    if kind == "pc_thr":
        thr = (vec["thr"].astype(np.int64) << np.arange(vec["thr"].shape[1])).sum(1)
        return {"y": (p >= thr)[:, None]}
    if kind in ("pc_cmp", "mv"):
        return {"y": (majority_vote(torch.from_numpy(2 * p - n)) > 0).numpy()[:, None]}
    nb = n // g
    block = torch.from_numpy(2 * x.reshape(len(x), g, nb).sum(2).astype(np.int64) - nb)
    return {"y": (hierarchical_vote(block, circuit_fanins(circuit), tie) > 0).numpy()[:, None]}


def check(evaluate, circuit: str, n: int, count: int = 2000, seed: int = 0) -> dict:
    """Run ``evaluate(inputs) -> outputs`` on the test vectors; count mismatches per output."""
    vec = make_vectors(circuit, n, count, seed)
    want = reference(circuit, n, vec)
    got = evaluate(vec)
    bad = {k: int((got[k] != want[k]).any(1).sum()) for k in want}
    vectors = len(next(iter(vec.values())))
    return {"vectors": vectors, "mismatches": sum(bad.values()), "ok": not any(bad.values()),
            "tie_vectors": _tie_count(circuit, n, vec)}


def _tie_count(circuit: str, n: int, vec) -> int:
    """How many vectors hit an exact tie (of the voter, or of the outer HMV / tree vote)."""
    kind, g, tie = parse_circuit(circuit)
    if kind == "vote":
        return int((vec["v"].sum(1) * 2 == g).sum())
    x = ~(vec["a"] ^ vec["w"])
    if kind != "hmv":
        return int((2 * x.sum(1) == n).sum())
    nb = n // g
    block = torch.from_numpy(2 * x.reshape(len(x), g, nb).sum(2).astype(np.int64) - nb)
    return int(outer_tie_mask(block, circuit_fanins(circuit), tie).sum())


def bits_to_int(bits: np.ndarray) -> np.ndarray:
    """Bool ``[V, width]`` (bit i = column i) -> int64 ``[V]``."""
    return (bits.astype(np.int64) << np.arange(bits.shape[1])).sum(1) if bits.shape[1] else np.zeros(len(bits), int)

