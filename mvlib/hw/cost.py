"""Cost model: the gate library synthesis maps to, NAND2-equivalent areas, network totals.

Gate library. ABC maps every circuit onto the single-output cells in :data:`CELLS`
(a Liberty file is written from this table, :func:`liberty_text`). The areas are
those of the X1 (smallest) drive of the same cells in the *Nangate 45 nm Open
Cell Library* (Nangate/Si2, PDKv1_3_v2010_12, ``NangateOpenCellLibrary_typical.lib``,
``area`` attribute in um^2), divided by ``NAND2_X1`` = 0.798 um^2 to give
NAND2 equivalents (GE), the usual unit of logic area. E.g. INV 0.532 um^2 =
0.667 GE, XOR2 1.596 um^2 = 2 GE, MUX2 1.862 um^2 = 2.333 GE. The same numbers
go into the Liberty file, so ABC's area recovery optimizes the area reported.
Pin names are simplified (A, B, C, D, S -> Y); functions are the Nangate ones.

What this area is: combinational standard-cell area before placement (no wires,
no registers, no drive sizing). Depth is the number of cells on the longest
input-to-output path (every cell one level, inverters included).

Network totals. In ReActNet-18 for CIFAR (:mod:`mvlib.models.resnet18`) the 16 binary 3x3
convolutions are four per stage, widths w, 2w, 4w, 8w, spatial 32, 16, 8, 4
(the first layer of stages 2-4 has stride 2 and the previous stage's width as
C_in). Layer i needs one voter of fan-in ``C_in * 9`` per output, ``C_out * H * W``
outputs per image. ``area x outputs`` summed over layers is the gate-equivalent
work per image (GE-evaluations), a proxy for logic energy of an unrolled or
time-multiplexed datapath; it is *not* a chip area (hardware reuses circuits).
"""
from __future__ import annotations

import math

import numpy as np

NAND2_UM2 = 0.798  # Nangate45 NAND2_X1 area, the unit of a gate equivalent

# name: (Nangate X1 area um^2, input pins, Liberty function, numpy function of the pins)
CELLS: dict[str, tuple[float, tuple[str, ...], str, object]] = {
    "BUF": (0.798, ("A",), "A", lambda A: A),
    "INV": (0.532, ("A",), "!A", lambda A: ~A),
    "NAND2": (0.798, ("A", "B"), "!(A&B)", lambda A, B: ~(A & B)),
    "NOR2": (0.798, ("A", "B"), "!(A|B)", lambda A, B: ~(A | B)),
    "AND2": (1.064, ("A", "B"), "(A&B)", lambda A, B: A & B),
    "OR2": (1.064, ("A", "B"), "(A|B)", lambda A, B: A | B),
    "NAND3": (1.064, ("A", "B", "C"), "!(A&B&C)", lambda A, B, C: ~(A & B & C)),
    "NOR3": (1.064, ("A", "B", "C"), "!(A|B|C)", lambda A, B, C: ~(A | B | C)),
    "AND3": (1.330, ("A", "B", "C"), "(A&B&C)", lambda A, B, C: A & B & C),
    "OR3": (1.330, ("A", "B", "C"), "(A|B|C)", lambda A, B, C: A | B | C),
    "XOR2": (1.596, ("A", "B"), "(A^B)", lambda A, B: A ^ B),
    "XNOR2": (1.596, ("A", "B"), "!(A^B)", lambda A, B: ~(A ^ B)),
    "AOI21": (1.064, ("A", "B", "C"), "!((A&B)|C)", lambda A, B, C: ~((A & B) | C)),
    "OAI21": (1.064, ("A", "B", "C"), "!((A|B)&C)", lambda A, B, C: ~((A | B) & C)),
    "AOI22": (1.330, ("A", "B", "C", "D"), "!((A&B)|(C&D))", lambda A, B, C, D: ~((A & B) | (C & D))),
    "OAI22": (1.330, ("A", "B", "C", "D"), "!((A|B)&(C|D))", lambda A, B, C, D: ~((A | B) & (C | D))),
    "MUX2": (1.862, ("A", "B", "S"), "((A&!S)|(B&S))", lambda A, B, S: (A & ~S) | (B & S)),
}


def ge(cell: str) -> float:
    """Area of one cell in NAND2 equivalents."""
    return CELLS[cell][0] / NAND2_UM2


def area_ge(cells: dict[str, int]) -> float:
    """Total NAND2-equivalent area of a cell-count dict."""
    unknown = set(cells) - set(CELLS)
    if unknown:
        raise KeyError(f"cells outside the library: {sorted(unknown)}")
    return float(sum(ge(c) * k for c, k in cells.items()))


def liberty_text() -> str:
    """A minimal Liberty library of :data:`CELLS`, areas in NAND2 equivalents."""
    out = ["library(mvlib_ge) {", "  /* areas: Nangate45 X1 um^2 / NAND2_X1 0.798 um^2 (mvlib.hw.cost) */"]
    for name, (um2, pins, func, _) in CELLS.items():
        body = " ".join(f"pin({p}) {{ direction: input; }}" for p in pins)
        out.append(f"  cell({name}) {{ area: {um2 / NAND2_UM2:.4f}; {body} "
                   f"pin(Y) {{ direction: output; function: \"{func}\"; }} }}")
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------
def reactnet18_layers(width: int, image: int = 32, kernel: int = 3) -> list[dict]:
    """The 16 binary 3x3 convolutions of ReActNet-18 (CIFAR stem): fan-in and outputs per image."""
    layers, cin, hw = [], width, image
    for stage in range(4):
        cout = width * 2 ** stage
        for i in range(4):
            if stage > 0 and i == 0:
                hw //= 2  # stride-2 first layer of stages 2-4
            layers.append({"layer": 4 * stage + i + 1, "stage": stage + 1, "cin": cin, "cout": cout,
                           "hw": hw, "fanin": cin * kernel * kernel, "outputs": cout * hw * hw})
            cin = cout
    return layers


def fanins(widths: list[int]) -> list[int]:
    """Distinct voter fan-ins of ReActNet-18 at the given widths, ascending."""
    return sorted({layer["fanin"] for w in widths for layer in reactnet18_layers(w)})


def network_totals(costs, width: int, circuits: list[str]):
    """Per-circuit totals over the 16 layers: GE-evaluations per image and the deepest layer.

    ``costs`` is a DataFrame with columns circuit, n, area_ge, n_cells, depth. A circuit
    missing at some fan-in (e.g. G does not divide C_in) gives NaN.
    """
    import pandas as pd

    idx = costs.set_index(["circuit", "n"])
    rows = []
    for c in circuits:
        work, depth, cells = 0.0, 0, 0.0
        for layer in reactnet18_layers(width):
            key = (c, layer["fanin"])
            if key not in idx.index:
                work, cells, depth = math.nan, math.nan, math.nan
                break
            r = idx.loc[key]
            work += float(r["area_ge"]) * layer["outputs"]
            cells += float(r["n_cells"]) * layer["outputs"]
            depth = max(depth, int(r["depth"]))
        rows.append({"circuit": c, "width": width, "ge_evals_per_image": work,
                     "cell_evals_per_image": cells, "max_depth": depth})
    return pd.DataFrame(rows)


def compose_hierarchical(inner: dict, outer: dict, g: int) -> dict:
    """Cost of an HMV built as ``g`` separately synthesized inner voters + one outer vote.

    Area and cell counts add; depth is inner + outer (the path goes through one
    inner voter and the outer vote). Exact up to optimization across the
    boundary, which the flat synthesis of the same circuit measures.
    """
    return compose_tree(inner, [outer], (1, g))


def compose_tree(leaf: dict, levels: list[dict], used: tuple[int, ...]) -> dict:
    """Cost of a nested voter tree built from separately synthesized parts.

    ``levels[i]`` is the vote entry of tree level i (outer first, one
    ``vote<G_i>_<tie>`` per node), ``leaf`` the leaf ``mv``; ``used[i]`` is how
    many nodes of level i the output depends on and ``used[-1]`` how many leaves
    (``mvlib.hw.flow.tree_support``). Cells and area add over those nodes; depth
    is the leaf's plus every level's (a path crosses each level once).
    """
    if len(used) != len(levels) + 1:
        raise ValueError(f"need one count per level plus the leaves, got {used} for {len(levels)} levels")
    parts = [(used[-1], leaf)] + list(zip(used, levels))
    names = sorted(set().union(*(e["cells"] for _, e in parts)))  # sorted: same float sum every run
    cells = {k: sum(u * e["cells"].get(k, 0) for u, e in parts) for k in names}
    return {"cells": cells, "area_ge": round(area_ge(cells), 3),
            "depth": leaf["depth"] + sum(e["depth"] for e in levels), "n_cells": int(sum(cells.values()))}


def saving(base: np.ndarray | float, other: np.ndarray | float):
    """Relative saving of ``other`` versus ``base`` (0.1 = 10 % smaller)."""
    return 1.0 - np.asarray(other, float) / np.asarray(base, float)
