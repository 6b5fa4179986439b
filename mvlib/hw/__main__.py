"""Fill the synthesis cache for the hardware-cost study: ``python -m mvlib.hw [--widths 16 64] [--jobs 2]``.

Synthesizes (or reads from ``results/hw/cache``) every circuit at every
ReActNet-18 fan-in of the given widths plus the deck's 512, the composed
hierarchical voters, and prints the area table; ``--out DIR`` also writes the
summary CSVs (notebook 07 writes them under ``results/hw/<profile>/``).
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from . import flow, synth


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64], help="ReActNet-18 base widths")
    ap.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8, 16], help="HMV outer fan-ins G")
    ap.add_argument("--jobs", type=int, default=2, help="parallel Yosys processes")
    ap.add_argument("--vectors", type=int, default=2000, help="random vectors per check (plus forced ties)")
    ap.add_argument("--no-deck", action="store_true", help="leave out the deck's N=512")
    ap.add_argument("--out", default="", help="folder for the summary CSVs (default: none written)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ns = flow.study_fanins(args.widths, deck=not args.no_deck)
    kw = dict(jobs=args.jobs, vectors=args.vectors)
    df = flow.sweep(ns, flow.circuits(args.groups), **kw)
    comp = flow.composed(ns, groups=args.groups, **kw)
    tables = {"composed": comp, "network_totals": flow.network_table(df, args.widths)}
    if not args.no_deck:
        tables["deck_m512"] = flow.deck_table(jobs=args.jobs)
    if args.out:
        for p in flow.write_tables(df, args.out, **tables):
            print("wrote", p)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(flow.pivot(df).round(0))
    stale = synth.stale_entries()
    if stale:
        print(f"{len(stale)} stale cache files (other generator/flow), e.g. {stale[0].name}")
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
