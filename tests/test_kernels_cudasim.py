"""CUDA bit kernels under the CUDA simulator (issue 4), small sizes.

The simulator must be enabled before ``numba.cuda`` is first imported, so the
checks run in a subprocess: ``python -m cuda_numba.gpu_check --simulate``,
the same script that checks a real card.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cuda_kernels_bit_exact_under_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "cuda_numba.gpu_check", "--simulate", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["simulated"] and report["checks"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, failed
    kinds = {c["kernel"] for c in report["checks"]}
    assert {"pack", "unpack", "popcount", "mv", "hmv"} <= kinds
