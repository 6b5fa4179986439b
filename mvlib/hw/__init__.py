"""Hardware cost of the voters by real logic synthesis (notebook 07).

* :mod:`mvlib.hw.verilog` -- Verilog generators (XNOR + popcount, + comparison,
  the majority voter, the hierarchical voter) as explicit compressor trees.
* :mod:`mvlib.hw.synth` -- Yosys + ABC flow, netlist check, cache in ``results/hw/cache``.
* :mod:`mvlib.hw.sim` -- netlist simulation and the reference check against :mod:`mvlib.voters`.
* :mod:`mvlib.hw.cost` -- gate library (Nangate45-based NAND2 equivalents), network totals.
* :mod:`mvlib.hw.flow` -- sweeps and the tables notebook 07 shows; ``python -m mvlib.hw`` fills the cache.
"""
from .verilog import build, generate, generator_hash, parse_circuit  # noqa: F401
