"""Compare this checkout's run records with another commit's: which runs give the same numbers.

    python tools/compare_runs.py e8dd1a3 [--profile cpu]

Pairs the rows of ``results/runs.csv`` with those of the same file at the given commit by
(step, model, variant, seed, dataset) and reports how many have the same test and validation
top-1, listing the rest. Used to show that a change of code that should not move any number
(e.g. evaluating through the bit-exact inference engine) did not.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
KEY = ["step", "model", "variant", "seed", "dataset"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit whose results/runs.csv is the reference")
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    old_text = subprocess.run(["git", "show", f"{args.rev}:results/runs.csv"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    old, new = pd.read_csv(io.StringIO(old_text)), pd.read_csv(ROOT / "results" / "runs.csv")
    old, new = old[old.profile == args.profile], new[new.profile == args.profile]
    j = new.merge(old, on=KEY, suffixes=("", "_old"), how="left", indicator=True)
    paired = j[j["_merge"] == "both"]

    def same(a, b):
        return (a == b) | (a.isna() & b.isna())
    ok = same(paired.top1, paired.top1_old) & same(paired.val_top1, paired.val_top1_old)
    print(f"{len(new)} runs of profile {args.profile} here ({new.code_hash.unique().tolist()}), {len(paired)} with a "
          f"twin at {args.rev} ({old.code_hash.unique().tolist()}): {int(ok.sum())} give the same test and "
          f"validation top-1, {int((~ok).sum())} differ; {len(new) - len(paired)} are new")
    if (~ok).any():
        print(paired.loc[~ok, KEY + ["top1", "top1_old", "val_top1", "val_top1_old"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
