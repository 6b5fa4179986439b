"""Synthesize (or find in results/hw/cache) every circuit notebook 09 costs for the given profiles.

    python tools/fill_pareto_cache.py cpu paper [--jobs 2]

Notebook 09 does the same on a cache miss (``hw_allow_synth``); this fills the committed cache ahead of a
run, so that a study or a smoke run reads it instead of waiting for Yosys.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvlib.hw import flow  # noqa: E402
from mvlib.study.config import load_profile  # noqa: E402
from mvlib.study.pareto import profile_circuits  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--jobs", type=int, default=2, help="parallel Yosys processes")
    args = ap.parse_args(argv)
    for profile in args.profiles:
        t0 = time.perf_counter()
        cfg = load_profile(profile)
        pairs, _ = profile_circuits(cfg)
        df = flow.cost_rows(pairs, jobs=args.jobs, vectors=cfg["hw_check_vectors"])
        print(f"{profile}: {len(df)} circuits in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
