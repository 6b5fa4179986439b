"""What a voter is, as one value: :class:`VoterSpec`, and the names the rest of the library gives it.

A voter is written five ways, and each way is a method of :class:`VoterSpec` (its ``from_*`` classmethod reads
it back):

* parameters ``{"name": "hmv", "fanins": [4, 2], "tie": "pos", ...}``: ``to_dict`` / ``from_dict``;
* tag ``hmv-g4x2-tiepos``, and a run's variant ``hmv-g4x2-tiepos-naive``: ``tag`` / ``from_tag``,
  ``variant`` / ``from_variant``;
* circuit ``hmv4x2_pos``: ``circuit_name`` / ``from_circuit``;
* label ``tree 4x2 tie pos``, ``HMV G=4 tie pos``, ``MV``: ``label``;
* kernel: ``fanins`` and ``tie``, whose position in :data:`TIE_RULES` is its code in the bit kernels.

The parameters are what :func:`mvlib.voter_ops.set_voter` builds a voter from and what a run record keeps under
``voter``; the tag names a run (its variant), the circuit a synthesized netlist (:mod:`mvlib.hw.verilog`), the
label a point of notebook 09's front.

The vocabulary (tie rules, output scales, surrogate normalizations) is defined here, in a module that imports
neither torch nor numba, so that the layers (:mod:`mvlib.voters`), the circuit generator (:mod:`mvlib.hw.verilog`)
and the bit kernels (:mod:`cuda_numba.bitops`) read the same names from the lowest layer of the library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

# Outer tie rules of the hierarchical voter: +1, -1, the vote of the group's first child. The position of a rule
# is its code in the bit kernels (cuda_numba.bitops.TIE_CODES): a new rule is appended, never inserted.
TIE_RULES = ("pos", "neg", "first")
OUTPUT_SCALES = ("none", "alpha", "matched")
SURROGATE_NORMS = ("sqrt_fanin", "fanin", "batch_std")
# The default normalization of the pre-activation the surrogate sees (u = s / c). Chosen on validation: see
# "Surrogate normalization" in mvlib.voters and results/probes/retrain_choice_cpu.json.
DEFAULT_SURROGATE_NORM = "batch_std"
DEFAULT_ESTIMATOR = "approxsign"
VOTER_KINDS = ("mv", "hmv")


def normalize_fanins(fanins: int | Sequence[int]) -> tuple[int, ...]:
    """``4`` -> ``(4,)``; ``(4, 2)`` stays; every fan-in must be an int >= 2."""
    fs = (fanins,) if isinstance(fanins, int) else tuple(fanins)
    if not fs or any((not isinstance(g, int)) or g < 2 for g in fs):
        raise ValueError(f"fan-ins must be integers >= 2, got {fanins!r}")
    return fs


def parse_fanins(text: str, name: str) -> tuple[int, ...]:
    """``"4x2"`` -> ``(4, 2)``, as tags and circuit names write fan-ins (``name``: the whole name, for errors).

    Strict, so that a name read back writes the same name: decimal integers >= 2, no sign, no leading zeros.
    """
    parts = text.split("x")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"unknown voter name {name!r}: fan-ins are written like 4 or 4x2")
    fs = tuple(int(p) for p in parts)
    if any(g < 2 for g in fs):
        raise ValueError(f"{name!r}: every fan-in must be an integer >= 2")
    if any(str(g) != p for g, p in zip(fs, parts)):
        raise ValueError(f"{name!r}: fan-ins are written without leading zeros")
    return fs


# How a hierarchical voter's name is written: <head><fan-ins><middle><tie>. A tag and a circuit name differ only
# in their head and middle, so one writer and one reader serve both (VoterSpec._written, VoterSpec._read).
TAG_FORM = ("hmv-g", "-tie")      # hmv-g4x2-tiepos
CIRCUIT_FORM = ("hmv", "_")       # hmv4x2_pos


def name_parts(name: str, head: str, middle: str) -> tuple[tuple[int, ...], str]:
    """Fan-ins and tie rule of ``<head><G1>x<G2>...<middle><tie>``: ``"hmv4x2_pos"`` (head ``hmv``, middle ``_``)
    -> ``((4, 2), "pos")``."""
    body, sep, tie = name.rpartition(middle)
    if not (sep and body.startswith(head) and tie in TIE_RULES):
        raise ValueError(f"unknown voter name {name!r}: write {head}<G>{middle}<tie> or "
                         f"{head}<G1>x<G2>...{middle}<tie>, tie in {TIE_RULES}")
    return parse_fanins(body[len(head):], name), tie


def circuit_parts(name: str, prefix: str = "hmv") -> tuple[tuple[int, ...], str]:
    """Fan-ins and tie rule of a circuit name ``<prefix><G1>x<G2>..._<tie>``: ``"hmv4x2_pos"`` -> ``((4, 2), "pos")``.

    ``prefix`` is ``hmv`` for a voter; :mod:`mvlib.hw.verilog` also reads its one-level ``vote<G>_<tie>`` with it.
    """
    return name_parts(name, prefix, CIRCUIT_FORM[1])


def _one_of(what: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {allowed}")


@dataclass(frozen=True)
class VoterSpec:
    """One voter: the exact majority voter (``kind="mv"``) or a hierarchical one (``"hmv"``), with its training options.

    ``fanins`` run from the outer level inwards (``(4, 2)``: 4 groups of 2 leaf blocks); the exact voter has
    none. ``tie`` is the rule of every level above the leaves; the exact voter's ties vote +1 (docs/SEMANTICS.md),
    so its tie is always ``"pos"``. ``estimator`` (the surrogate gradient), ``norm`` (its pre-activation scale) and
    ``output_scale`` are the layer options of :class:`mvlib.voters.MajorityVoter` /
    :class:`mvlib.voters.HierarchicalVoter`: they are part of the parameters, but not of the tag, the circuit or the
    label, which name what the voter computes on its binary inputs (a variant names the estimator and the output
    scale in its mode: ``retrain-ste``, ``naive-alpha``). The BN-folded threshold voter is not a VoterSpec: it is
    calibrated from a trained network, not specified.
    """

    kind: str
    fanins: tuple[int, ...] = ()
    tie: str = "pos"
    estimator: str = DEFAULT_ESTIMATOR
    norm: str = DEFAULT_SURROGATE_NORM
    output_scale: str = "none"

    def __post_init__(self):
        _one_of("voter kind", self.kind, VOTER_KINDS)
        _one_of("tie rule", self.tie, TIE_RULES)
        _one_of("surrogate normalization", self.norm, SURROGATE_NORMS)
        _one_of("output scale", self.output_scale, OUTPUT_SCALES)
        # the estimator's name is checked where the voter is built (mvlib.binarizers imports torch; this module not)
        if not isinstance(self.estimator, str) or not self.estimator:
            raise ValueError(f"the estimator is a binarizer's name, got {self.estimator!r}")
        if self.kind == "mv":
            if tuple(self.fanins) or self.tie != "pos":
                raise ValueError("the exact voter has no fan-ins and votes +1 at a tie (fanins=(), tie='pos')")
            object.__setattr__(self, "fanins", ())
        else:  # fan-ins given as a list or an int become the tuple a frozen value needs
            object.__setattr__(self, "fanins", normalize_fanins(self.fanins))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def exact(cls, **options) -> VoterSpec:
        """The exact majority voter with the given layer options (estimator, norm, output_scale)."""
        return cls("mv", **options)

    @classmethod
    def hierarchical(cls, fanins: int | Sequence[int], tie: str = "pos", **options) -> VoterSpec:
        """The hierarchical voter of ``fanins`` (outer level first) and ``tie``, with the given layer options."""
        return cls("hmv", normalize_fanins(fanins), tie, **options)

    # ------------------------------------------------------------------ parameters
    def to_dict(self) -> dict[str, Any]:
        """The JSON-able parameters: what :func:`mvlib.voter_ops.set_voter` builds from and a run record keeps.

        Keys and order are those of every record written so far: name, estimator, norm, output_scale, then
        fanins (a list) and tie for the hierarchical voter only.
        """
        out: dict[str, Any] = {"name": self.kind, "estimator": self.estimator, "norm": self.norm,
                               "output_scale": self.output_scale}
        if self.kind == "hmv":
            out.update(fanins=list(self.fanins), tie=self.tie)
        return out

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | str) -> VoterSpec:
        """The spec of a parameter dict (or a bare name, ``"mv"``); keys it lacks take their defaults.

        A key a VoterSpec does not hold is an error rather than dropped, so that nothing a record says about its
        voter is lost on the way back.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise TypeError(f"a voter's parameters are a dict with 'name', got {spec!r}")
        known = {"name", "fanins", "tie", "estimator", "norm", "output_scale"}
        extra = sorted(set(spec) - known)
        if extra:
            raise ValueError(f"voter parameters {extra} are not part of a VoterSpec ({sorted(known)})")
        options = {k: spec[k] for k in ("tie", "estimator", "norm", "output_scale") if k in spec}
        if spec["name"] == "hmv":
            return cls.hierarchical(spec.get("fanins", ()), **options)
        return cls(spec["name"], tuple(spec.get("fanins", ())), **options)

    # ------------------------------------------------------------------ names
    @property
    def leaves(self) -> int:
        """Leaf blocks the input channels split into (1 for the exact voter)."""
        return math.prod(self.fanins)

    def fanin_text(self) -> str:
        """``"4x2"``, ``"16"``; ``""`` for the exact voter (the tables' ``fanins`` column)."""
        return "x".join(map(str, self.fanins))

    def _written(self, form: tuple[str, str]) -> str:
        return "mv" if self.kind == "mv" else f"{form[0]}{self.fanin_text()}{form[1]}{self.tie}"

    @classmethod
    def _read(cls, name: str, form: tuple[str, str]) -> VoterSpec:
        """The voter a name of ``form`` writes (default layer options); a name that would not be written back the
        same is an error."""
        return cls.exact() if name == "mv" else cls.hierarchical(*name_parts(name, *form))

    def tag(self) -> str:
        """``hmv-g4x2-tiepos``; ``mv`` for the exact voter."""
        return self._written(TAG_FORM)

    @classmethod
    def from_tag(cls, tag: str) -> VoterSpec:
        """The voter of a tag (default layer options)."""
        return cls._read(tag, TAG_FORM)

    def variant(self, mode: str) -> str:
        """A run's variant: ``hmv-g4-tiepos-naive``; the exact voter's is the mode alone (``naive``).

        Why no tag for the exact voter: its rows came first and every record names them by mode only.
        """
        return mode if self.kind == "mv" else f"{self.tag()}-{mode}"

    @classmethod
    def from_variant(cls, variant: str) -> tuple[VoterSpec, str] | None:
        """``(voter, mode)`` of a variant that starts with a hierarchical voter's tag; None for any other variant.

        None, not the exact voter, for an untagged variant: ``naive`` and ``baseline`` look alike by name, and
        only the record's parameters say which one has a voter.
        """
        parts = str(variant).split("-", 3)
        if len(parts) < 4 or parts[0] != "hmv" or not parts[3]:
            return None
        return cls.from_tag("-".join(parts[:3])), parts[3]

    def circuit_name(self) -> str:
        """The synthesized circuit of one output (:mod:`mvlib.hw.verilog`): ``mv``, ``hmv4_pos``, ``hmv4x2_first``."""
        return self._written(CIRCUIT_FORM)

    @classmethod
    def from_circuit(cls, name: str) -> VoterSpec:
        """The voter of a circuit name (default layer options); the counting circuits (``popcount``...) have none."""
        return cls._read(name, CIRCUIT_FORM)

    def label(self) -> str:
        """How figures and the front name it: ``MV``, ``HMV G=4 tie pos``, a tree ``tree 4x4 tie first``."""
        if self.kind == "mv":
            return "MV"
        head = f"HMV G={self.fanins[0]}" if len(self.fanins) == 1 else f"tree {self.fanin_text()}"
        return f"{head} tie {self.tie}"
