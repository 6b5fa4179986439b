"""CUDA bit kernels under the CUDA simulator, small sizes.

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

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
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


# Run under the simulator (a subprocess, see above): MV / HMV outputs written into a buffer prefilled
# with all-ones garbage must equal, word for word, the CPU kernels' output and the layout reference
# (pack_reference of the float votes, whose bits above C_out are 0): every word fully written.
_FULL_WORDS_SCRIPT = r"""
import json, sys
import numpy as np
import torch
from numba import cuda
from cuda_numba import cuda_kernels as ck
from cuda_numba.cpu_kernels import conv_hmv_cpu, conv_mv_cpu, prepare_cpu_weights
from cuda_numba.layout import n_words, pack_reference
from mvlib.binarizers import sign_pm1
from mvlib.voters import block_partial_sums, hierarchical_vote, integer_conv, majority_vote

results = []
ci, fanins, tie = 4, (2,), "neg"
for co in json.loads(sys.argv[1]):
    g = torch.Generator().manual_seed(co)
    x, wt = torch.randn(1, ci, 2, 2, generator=g), torch.randn(co, ci, 3, 3, generator=g)
    a, wb = sign_pm1(x), sign_pm1(wt)
    xb = pack_reference(a.numpy())
    d_x, d_w = cuda.to_device(xb), ck.prepare_cuda_weights(wt.numpy())
    refs = {"mv": pack_reference(majority_vote(integer_conv(a, wb, 1, 1)).numpy()),
            "hmv": pack_reference(hierarchical_vote(block_partial_sums(a, wb, 2, 1, 1), fanins, tie).numpy())}
    cpu = {"mv": conv_mv_cpu(xb, prepare_cpu_weights(wt.numpy()), 1, 1),
           "hmv": conv_hmv_cpu(xb, prepare_cpu_weights(wt.numpy(), 2), 1, 1, fanins, tie)}
    for kind in ("mv", "hmv"):
        garbage = np.full((1, 2, 2, n_words(co)), np.iinfo(np.uint64).max, np.uint64)
        d_out = cuda.to_device(garbage)
        if kind == "mv":
            ck.conv_mv_cuda(d_x, d_w, ci, 3, 3, 1, 1, out=d_out)
        else:
            ck.conv_hmv_cuda(d_x, d_w, ci, 3, 3, 1, 1, fanins, tie, out=d_out)
        got = d_out.copy_to_host()
        results.append({"co": co, "kernel": kind, "equal_reference": bool(np.array_equal(got, refs[kind])),
                        "equal_cpu": bool(np.array_equal(got, cpu[kind])),
                        "got_last_word": hex(int(got[0, 0, 0, -1])),
                        "want_last_word": hex(int(refs[kind][0, 0, 0, -1]))})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_cuda_voter_outputs_write_every_word_under_simulator():
    """C_out mod 64 in 1..32 included: the upper half of the last word is written (0 above C_out), not left stale."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    cos = [1, 31, 32, 33, 63, 65, 96]
    proc = subprocess.run([sys.executable, "-c", _FULL_WORDS_SCRIPT, json.dumps(cos)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted({r["co"] for r in results}) == cos and len(results) == 2 * len(cos)
    failed = [(r["co"], r["kernel"], "got", r["got_last_word"], "want", r["want_last_word"])
              for r in results if not (r["equal_reference"] and r["equal_cpu"])]
    assert not failed, failed
