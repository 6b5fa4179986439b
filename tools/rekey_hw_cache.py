"""Re-key synthesis cache entries whose circuit the generator still writes identically.

Until commit "hw cache keyed per circuit", an entry's key was a hash of the whole
generator's source, so any edit of ``mvlib/hw/verilog.py`` invalidated all of
them. Now the key is the circuit's own Verilog (:func:`mvlib.hw.synth.input_hash`).
This tool moves old entries to the new key only where that is provably the same
input to Yosys: it rebuilds each entry's Verilog with the generator of ``--rev``
(the revision that made the entry; its flow hash must match the entry's) and
with today's generator, and re-keys the entry when the two texts (comments
dropped) are equal and the Yosys script and Liberty text are unchanged.
Anything else stays stale and is re-synthesized on the next use.

    python tools/rekey_hw_cache.py --rev e8dd1a3 [--dry-run]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvlib.hw import synth  # noqa: E402


def _old_module(rev: str, rel: str, name: str, tmp: Path):
    src = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = tmp / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod, src


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="the commit whose generator made the old entries")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old, old_src = _old_module(args.rev, "mvlib/hw/verilog.py", "old_verilog", Path(tmp))
        old_gen = hashlib.sha256(old_src.encode()).hexdigest()[:16]
        old_flow = hashlib.sha256()
        for part in (old_gen, synth.FLOW, synth.ABC_MAP, synth.liberty_text()):
            old_flow.update(part.encode())
        old_flow = old_flow.hexdigest()[:16]
        moved = kept = 0
        for p in sorted(synth.CACHE_DIR.glob("*.json")):
            e = json.loads(p.read_text())
            if e.get("input_hash") == synth.input_hash(e["circuit"], e["n"]):
                continue
            strip = lambda text: "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("//"))  # noqa: E731
            same = (e.get("flow_hash") == old_flow
                    and strip(old.build(e["circuit"], e["n"]).to_verilog()) == synth.verilog_for_key(e["circuit"], e["n"]))
            if not same:
                kept += 1
                print(f"stale: {p.name}")
                continue
            e.pop("flow_hash", None)
            e["input_hash"] = synth.input_hash(e["circuit"], e["n"])
            if not args.dry_run:
                p.write_text(json.dumps(e, indent=1, sort_keys=True) + "\n")
            moved += 1
        print(f"re-keyed {moved} entries (identical Verilog, flow and library); {kept} left stale")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
