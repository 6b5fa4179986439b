"""Verilog generators for the voter circuits (notebook 07), built as explicit gate lists.

Every circuit of fan-in ``N`` has inputs ``a[N-1:0]`` (activation bits) and
``w[N-1:0]`` (weight bits), bit 1 = +1, and starts with one XNOR per pair
(``x_i = a_i XNOR w_i``, 1 when they agree), so ``p = popcount(x)`` and the
dot product is ``s = 2p - N``. Circuits (names accepted by :func:`build`):

``popcount``  XNOR + popcount, integer output ``count[W-1:0]`` (W = bit length of N).
``pc_cmp``    popcount + the comparison ``count >= ceil(N/2)`` written as a
              plain Verilog ``>=`` on the count: "compute the count, then
              compare" (synthesis may simplify the constant comparison).
``pc_thr``    popcount + ``count >= thr`` against a runtime threshold input
              ``thr[W-1:0]`` -- how BNN accelerators fold BN into a per-channel
              threshold; an extra, realistic baseline.
``mv``        the majority voter ``y = (p >= ceil(N/2))`` built so that only what
              the sign needs exists (see *threshold structure* below).
``hmv{G}_{tie}``  hierarchical voter: G contiguous blocks of N/G inputs, an
              inner ``mv`` each (tie +1), an outer vote over the G bits with
              ``tie`` in pos / neg / first (mvlib.voters.hierarchical_vote).
``hmv{G1}x{G2}x...x{Gk}_{tie}``  nested tree, fan-ins from the OUTER level
              inwards (``hmv4x4_pos``, ``hmv2x2x2x2_first``): G1*...*Gk
              contiguous leaf blocks of N/(G1*...*Gk) inputs, an ``mv`` each
              (tie +1), then every level from the innermost up votes over
              consecutive groups of its G children with ``tie``
              (``hierarchical_vote(block_sums, (G1, ..., Gk), tie)``).
``vote{G}_{tie}`` the outer vote alone on G plain input bits ``v[G-1:0]``
              (no XNOR); used to cost an HMV as inner voters + one vote per tree node.

Degenerate cases. ``hmv2_first`` -- and every tree level with G = 2 and tie
``first`` -- reads only its first child (a tie of two is broken by the first),
so it is a voter over half the inputs and synthesis drops the other half.
``hmv2_pos`` is the OR of two half-voters, ``hmv2_neg`` their AND.

Structure. The count is a *compressor tree* of full adders (3:2 counters) on
weight columns, built greedily by arrival time: in each column, from the LSB
up, the three shallowest bits go into a full adder (sum stays, carry moves one
column up) until at most two bits are left (the "three-greedy" Wallace tree of
Oklobdzija, Villeger & Liu, IEEE TC 1996). This is balanced (depth
O(log N) full adders) and uses about N full adders. The two remaining rows go
through a Sklansky parallel-prefix adder (``popcount``).

Threshold structure (``mv`` and the outer votes). ``p >= T`` is bit K of
``p + (2^K - T)``, where K is the smallest width with ``2^K >= T`` and
``2^K > p_max - T``. The inputs go through the same compressor tree as the
popcount (to column K); the constant is then added to the two rows left, by
one more compression pass (a full adder with a constant input folds to an
XNOR + OR or an XOR + AND). Because the total is always below ``2^(K+1)``, at
most one signal in column K can be 1 at a time, so column K is never
compressed: the output is the OR of its bits and of the carry out of columns
0..K-1 (a balanced generate/transmit tree, no sum bits, no comparator). That
exclusivity is a fact about the value range a tool would have to prove; writing
it in is the part of "dropping what the sign does not need" beyond the sum bits.
For ``mv`` K is one bit narrower than the popcount width.

:class:`Netlist` both emits Verilog and evaluates itself in numpy, so the
structure is checked without any tool; :mod:`mvlib.hw.sim` checks the Verilog
and the synthesized netlists.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from pathlib import Path

import numpy as np

from ..voter_spec import TIE_RULES, circuit_parts

BASE_CIRCUITS = ("popcount", "pc_cmp", "pc_thr", "mv")


def generator_hash() -> str:
    """Hash of this module's source: a cache entry is valid only for the generator that made it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _levels(name: str) -> tuple[str, tuple[int, ...], str]:
    """(``hmv`` or ``vote``, fan-ins, tie) of a voter circuit or an outer vote; the voter grammar is
    :class:`mvlib.voter_spec.VoterSpec`'s (:func:`mvlib.voter_spec.circuit_parts`), so the names the study gives
    its voters are the names built here."""
    if not name.startswith(("hmv", "vote")):
        raise ValueError(f"unknown circuit {name!r}: use {BASE_CIRCUITS}, hmv<G>_<tie>, hmv<G1>x<G2>..._<tie> "
                         f"or vote<G>_<tie>, tie in {TIE_RULES}")
    kind = "vote" if name.startswith("vote") else "hmv"
    fs, tie = circuit_parts(name, kind)
    if kind == "vote" and len(fs) > 1:
        raise ValueError(f"circuit {name!r}: vote<G>_<tie> is one level (compose a tree from one vote per node)")
    return kind, fs, tie


def circuit_fanins(name: str) -> tuple[int, ...]:
    """Fan-ins of the hierarchy, outer level first: ``"hmv4x2_pos"`` -> ``(4, 2)``, ``"mv"`` -> ``()``."""
    return () if name in BASE_CIRCUITS else _levels(name)[1]


def parse_circuit(name: str) -> tuple[str, int, str]:
    """``"hmv4_first"`` -> ``("hmv", 4, "first")``; ``"mv"`` -> ``("mv", 1, "")``.

    For a nested tree ``g`` is the PRODUCT of the fan-ins, the number of leaf
    blocks: ``"hmv4x2_neg"`` -> ``("hmv", 8, "neg")`` (:func:`circuit_fanins` gives the levels).
    """
    if name in BASE_CIRCUITS:
        return name, 1, ""
    kind, fs, tie = _levels(name)
    return kind, math.prod(fs), tie


class Netlist:
    """A combinational gate list with constant folding, Verilog output and numpy evaluation.

    Signals are wire names (``str``) or the constants ``0`` / ``1``. ``level``
    tracks an estimated depth in gate levels, used only to balance the trees.
    """

    def __init__(self):
        self.inputs: dict[str, int] = {}
        self.outputs: dict[str, list] = {}
        self.gates: list[tuple[str, str, tuple]] = []
        self.level: dict[str, int] = {}
        self._ids = itertools.count()

    def add_input(self, name: str, width: int) -> list[str]:
        self.inputs[name] = width
        bits = [f"{name}[{i}]" for i in range(width)]
        self.level.update({b: 0 for b in bits})
        return bits

    def lvl(self, s) -> int:
        return self.level.get(s, 0) if isinstance(s, str) else 0

    def _gate(self, op: str, *args) -> str:
        out = f"n{next(self._ids)}"
        self.gates.append((out, op, args))
        self.level[out] = 1 + max((self.lvl(a) for a in args), default=0)
        return out

    # Constant folding keeps injected threshold constants from turning into real gates.
    def NOT(self, a):
        return 1 - a if isinstance(a, int) else self._gate("not", a)

    def AND(self, a, b):
        if isinstance(a, int):
            a, b = b, a
        if isinstance(b, int):
            return a if b == 1 else 0
        return self._gate("and", a, b)

    def OR(self, a, b):
        if isinstance(a, int):
            a, b = b, a
        if isinstance(b, int):
            return 1 if b == 1 else a
        return self._gate("or", a, b)

    def XOR(self, a, b):
        if isinstance(a, int):
            a, b = b, a
        if isinstance(b, int):
            return self.NOT(a) if b == 1 else a
        return self._gate("xor", a, b)

    def XNOR(self, a, b):
        if isinstance(a, int) or isinstance(b, int):
            return self.NOT(self.XOR(a, b))
        return self._gate("xnor", a, b)

    def full_add(self, a, b, c):
        """(sum, carry) of three bits; the carry reuses a^b (majority form)."""
        t = self.XOR(a, b)
        return self.XOR(t, c), self.OR(self.AND(a, b), self.AND(c, t))

    def ge(self, a_bits: list, b_bits: list) -> str:
        """Behavioural unsigned ``a >= b`` (emitted as Verilog ``>=``; the tool maps it)."""
        return self._gate("ge", tuple(a_bits), tuple(b_bits))

    def reduce_or(self, bits: list):
        """Balanced OR tree."""
        bits = list(bits) or [0]
        while len(bits) > 1:
            bits = [self.OR(*bits[i:i + 2]) if i + 1 < len(bits) else bits[i] for i in range(0, len(bits), 2)]
        return bits[0]

    # ---- output ------------------------------------------------------------------
    def to_verilog(self, module: str = "top") -> str:
        def ref(s):
            return f"1'b{s}" if isinstance(s, int) else s

        def vec(bits):  # MSB first for a Verilog concatenation
            return "{" + ", ".join(ref(b) for b in reversed(bits)) + "}"

        ports = [f"input [{w - 1}:0] {n}" for n, w in self.inputs.items()]
        ports += [f"output [{len(b) - 1}:0] {n}" for n, b in self.outputs.items()]
        lines = [f"// generated by mvlib.hw.verilog (generator {generator_hash()})",
                 f"module {module}(" + ", ".join(ports) + ");"]
        ops = {"and": "&", "or": "|", "xor": "^"}
        for out, op, args in self.gates:
            if op == "not":
                rhs = f"~{ref(args[0])}"
            elif op == "xnor":
                rhs = f"~({ref(args[0])} ^ {ref(args[1])})"
            elif op == "ge":
                rhs = f"({vec(args[0])} >= {vec(args[1])})"
            else:
                rhs = f"{ref(args[0])} {ops[op]} {ref(args[1])}"
            lines.append(f"  wire {out} = {rhs};")
        for name, bits in self.outputs.items():
            lines.append(f"  assign {name} = {vec(bits)};")
        lines.append("endmodule")
        return "\n".join(lines) + "\n"

    def evaluate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs as bool arrays ``[V, width]`` for input bool arrays ``[V, width]``."""
        v = len(next(iter(inputs.values())))
        val = {f"{n}[{i}]": np.asarray(inputs[n][:, i], bool) for n in self.inputs for i in range(self.inputs[n])}

        def get(s):
            return np.full(v, bool(s)) if isinstance(s, int) else val[s]

        def as_int(bits):
            return sum(get(b).astype(np.int64) << i for i, b in enumerate(bits))

        fns = {"not": lambda x: ~x, "and": np.logical_and, "or": np.logical_or,
               "xor": np.logical_xor, "xnor": lambda x, y: ~np.logical_xor(x, y)}
        for out, op, args in self.gates:
            val[out] = as_int(args[0]) >= as_int(args[1]) if op == "ge" else fns[op](*map(get, args))
        return {n: np.stack([get(b) for b in bits], 1) for n, bits in self.outputs.items()}


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------
def compress(nl: Netlist, cols: list[list], upto: int) -> list[list]:
    """Greedy 3:2 compressor tree: columns ``< upto`` end with at most two bits each.

    ``cols[j]`` holds the bits of weight 2^j; carries out of column ``upto - 1``
    land in column ``upto`` (left uncompressed). Returns the new columns.
    """
    cols = [list(c) for c in cols] + [[] for _ in range(upto + 1 - len(cols))]
    tie = itertools.count()
    for j in range(upto):
        heap = [(nl.lvl(b), next(tie), b) for b in cols[j]]
        heapq.heapify(heap)
        while len(heap) > 2:
            # the three earliest bits: keeps the tree balanced when carries arrive late
            (_, _, x), (_, _, y), (_, _, z) = (heapq.heappop(heap) for _ in range(3))
            s, c = nl.full_add(x, y, z)
            heapq.heappush(heap, (nl.lvl(s), next(tie), s))
            cols[j + 1].append(c)
        cols[j] = [b for _, _, b in sorted(heap)]
    return cols


def _rows(cols: list[list], width: int) -> tuple[list, list]:
    """Two addend rows (constant 0 where a column has fewer than two bits)."""
    a = [c[0] if len(c) > 0 else 0 for c in cols[:width]]
    b = [c[1] if len(c) > 1 else 0 for c in cols[:width]]
    return a, b


def sklansky_add(nl: Netlist, a: list, b: list) -> list:
    """Sum bits of ``a + b`` (same width, carry-out dropped) by a Sklansky prefix adder."""
    w = len(a)
    p = [nl.XOR(x, y) for x, y in zip(a, b)]
    G, P = [nl.AND(x, y) for x, y in zip(a, b)], list(p)
    step = 1
    while step < w:
        for i in range(w):
            if i & step:  # upper half of a 2*step block: combine with the lower half's prefix
                j = (i & ~(2 * step - 1)) + step - 1
                G[i], P[i] = nl.OR(G[i], nl.AND(P[i], G[j])), nl.AND(P[i], P[j])
        step *= 2
    return [p[0]] + [nl.XOR(p[i], G[i - 1]) for i in range(1, w)]


def carry_out(nl: Netlist, a: list, b: list):
    """Carry out of ``a + b`` by a balanced generate/transmit tree (no sum bits).

    Transmit ``t = a | b`` suffices for the carry (``a ^ b`` is only needed for sums).
    """
    def rec(lo, hi, need_t):  # (generate, transmit) of columns lo..hi-1; transmit only if used
        if hi - lo == 1:
            return nl.AND(a[lo], b[lo]), nl.OR(a[lo], b[lo]) if need_t else None
        mid = (lo + hi) // 2
        (g0, t0), (g1, t1) = rec(lo, mid, need_t), rec(mid, hi, True)
        return nl.OR(g1, nl.AND(t1, g0)), nl.AND(t1, t0) if need_t else None
    return rec(0, len(a), False)[0] if a else 0


def threshold(nl: Netlist, cols: list[list], p_max: int, t: int):
    """Bit ``sum_j 2^j * (sum of cols[j]) >= t`` (inputs of any weight; ``p_max`` bounds the sum)."""
    if t <= 0:
        return 1
    if t > p_max:
        return 0
    k = 0
    while (1 << k) < t or (1 << k) <= p_max - t:
        k += 1
    cols = [list(c) for c in cols] + [[] for _ in range(k + 1 - len(cols))]
    # Count first (the same tree as the popcount), then add the constant to the two rows
    # left: bit K of p + 2^K - T is the decision, and only its carry path is built.
    c = (1 << k) - t
    cols = compress(nl, cols, k)
    for j in range(k):
        if (c >> j) & 1:
            cols[j].append(1)
    cols = compress(nl, cols, k)
    a, b = _rows(cols, k)
    # total < 2^(K+1): column-K signals are mutually exclusive and columns above K are 0
    return nl.reduce_or(cols[k] + [carry_out(nl, a, b)])


# ---------------------------------------------------------------------------
# Circuits
# ---------------------------------------------------------------------------
def _xnor_inputs(nl: Netlist, n: int) -> list:
    a, w = nl.add_input("a", n), nl.add_input("w", n)
    return [nl.XNOR(x, y) for x, y in zip(a, w)]


def _popcount(nl: Netlist, bits: list) -> list:
    width = len(bits).bit_length()
    cols = compress(nl, [bits], width)
    return sklansky_add(nl, *_rows(cols, width))


def _outer_vote(nl: Netlist, votes: list, tie: str):
    """Vote over ``votes`` (bits, 1 = +1) with ``tie`` at an exact tie (even count)."""
    g = len(votes)
    if g % 2 or tie == "pos":
        return threshold(nl, [votes], g, (g + 1) // 2)
    if tie == "neg":
        return threshold(nl, [votes], g, g // 2 + 1)
    # "first": q + v0 >= G/2 + 1, i.e. v0 counted twice (weight-2 column) breaks the tie
    return threshold(nl, [votes[1:], [votes[0]]], g + 1, g // 2 + 1)


def build(circuit: str, n: int) -> Netlist:
    """The gate list of ``circuit`` at fan-in ``n`` (``n`` is G for ``vote<G>_<tie>``)."""
    kind, g, tie = parse_circuit(circuit)
    nl = Netlist()
    if kind == "vote":
        if n != g:
            raise ValueError(f"{circuit} has fan-in {g}, not {n}")
        nl.outputs["y"] = [_outer_vote(nl, nl.add_input("v", g), tie)]
        return nl
    if n < 1 or n % g:
        raise ValueError(f"{circuit}: fan-in {n} must be positive and divisible by {g} (leaf blocks)")
    x = _xnor_inputs(nl, n)
    if kind == "popcount":
        nl.outputs["count"] = _popcount(nl, x)
    elif kind == "pc_cmp":
        cnt = _popcount(nl, x)
        t = (n + 1) // 2
        nl.outputs["y"] = [nl.ge(cnt, [(t >> i) & 1 for i in range(len(cnt))])]
    elif kind == "pc_thr":
        cnt = _popcount(nl, x)
        nl.outputs["y"] = [nl.ge(cnt, nl.add_input("thr", len(cnt)))]
    elif kind == "mv":
        nl.outputs["y"] = [threshold(nl, [x], n, (n + 1) // 2)]
    else:  # hmv: contiguous leaf blocks (channel-major order = contiguous channel blocks), then the levels
        nb = n // g
        votes = [threshold(nl, [x[i * nb:(i + 1) * nb]], nb, (nb + 1) // 2) for i in range(g)]
        for f in reversed(circuit_fanins(circuit)):  # innermost level first
            votes = [_outer_vote(nl, votes[i:i + f], tie) for i in range(0, len(votes), f)]
        nl.outputs["y"] = votes
    return nl


def generate(circuit: str, n: int, module: str = "top") -> str:
    """Synthesizable Verilog of ``circuit`` at fan-in ``n``."""
    return build(circuit, n).to_verilog(module)
