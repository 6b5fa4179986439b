# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: mvlib (.venv)
#     language: python
#     name: mvlib
# ---

# %% [markdown]
# # 05 · Real bit kernels: XNOR + popcount, majority voter, hierarchical voter
#
# **Reproduces** the deck's three plans on real bits instead of float simulation: (1) XNOR + popcount run for
# real from PyTorch, (2) XNOR + majority voter (MV) as a convolution operator, (3) the hierarchical voter
# (HMV, M576 ≈ M4(M144 × 4) on a 64-channel layer, G = 4). The kernels live in `cuda_numba/` (Numba: CPU
# `njit(parallel=True)` with an LLVM `ctpop` micro-kernel, and `numba.cuda`); this notebook checks that they are
# bit-exact with the float simulation (docs/SEMANTICS.md: bit 1 = +1, padded taps left out of the popcount and of N,
# ties vote +1), times them against torch fp32 `conv2d` per ResNet-18 layer shape, and runs a whole ReActNet-18
# on them.
#
# **Hardware.** Profile `cpu`: a 2-core x86-64 virtual machine shared with other jobs (its CPU model is printed
# below and recorded in every file of `results/bench/`; the popcount runs on AVX-512 VPOPCNTDQ where the CPU has
# it, on AVX2 otherwise): both cores, wall time, best of 30 calls whose variants are interleaved (torch,
# packing, XNOR, MV, HMV, torch, ...) so that a burst of foreign load cannot fall on one side of a ratio only.
# The GPU half (`python -m cuda_numba.gpu_check --out results/bench/gpu`) needs a CUDA card and was not run
# here; its CUDA kernels are checked bit-exact under Numba's CUDA simulator in the tests.
#
# **Result.** Every number below is measured by this run and printed where it is computed: bit-exactness of every
# kernel, the per-layer speed-up against torch fp32 `conv2d` (kernel only and with the packing of fp32
# activations), the roofline that bounds it (the XOR-popcount micro-kernel's peak on L1-resident data against
# the fp32 FMA and int8 multiply-add micro-kernels' peaks, `cuda_numba/roofline.py`, measured in the same process), a whole ReActNet-18 layer by layer and on the fused inference engine
# against mvlib's float path, torch's fp32 / bf16 / int8 paths and (where installed) Larq Compute Engine, and the
# trained models' predictions on the bit kernels against the float simulation (0 differing expected). The
# README's kernel and engine blocks are generated from the files this notebook writes (`results/bench/`).

# %%
import json

import pandas as pd
from IPython.display import Image, display

from cuda_numba import bench
from cuda_numba.bench_machine import binary_peak_text
from mvlib.study.config import notebook_config
from mvlib.study.records import resolve_results_dir
from mvlib.study.report import show
_names_before_parameters = set(globals())

# %% tags=["parameters"]
profile = "cpu"        # ci | cpu | paper
kernel_reps = None     # timed calls per measurement (best reported) (None: the profile's)
kernel_threads = None  # threads for torch and Numba, 0 for all logical CPUs (None: the profile's)
results_dir = None     # where results go (None: results/)

# %%
cfg = notebook_config(globals(), _names_before_parameters)
out_dir = resolve_results_dir(cfg["results_dir"]) / "bench"
suffix = "" if cfg["profile"] in ("cpu", "paper") else "_" + cfg["profile"]  # ci runs do not overwrite results
show(pd.Series({k: str(v) for k, v in cfg.items() if k.startswith("kernel_") or k in ("profile", "results_dir")},
               name="value").to_frame())

# %% [markdown]
# ## Layout and semantics
#
# Packed activations are `[B, H, W, NW]` unsigned 64-bit words, channel `c` at bit `c % 64` of word `c // 64`,
# bit 1 = +1 (`x + shift >= 0`, ReActNet's RSign shift fused into the packing); weights the same along input
# channels; MV/HMV outputs come back in the activation layout. Kernels count disagreements
# `popcount(a XOR w)`, so zero bits (channel padding, padded taps) drop out, and `s = N − 2·count` with `N` the
# number of valid terms. The CPU kernel is a GEMM over packed rows: 4 pixels × 16 output channels per call of
# an LLVM-IR micro-kernel that keeps its accumulators in AVX-512 registers (`llvm.ctpop.v8i64` → VPOPCNTQ).
#
# ### Bit-exactness on every ResNet-18 3×3 shape (random inputs, batch 2)

# %%
exact = pd.DataFrame(bench.verify_layers(batch=2))
assert exact[["xnor_exact", "mv_exact", "hmv_exact"]].all().all(), exact
show(exact)

# %% [markdown]
# ## Per-layer benchmark against torch fp32 `conv2d`
#
# Ratios are torch time / kernel time (best of `kernel_reps` calls, same thread count for both); "pack" adds
# the binarization and packing of the fp32 input. torch is timed on NCHW tensors (the stated baseline) and on
# channels-last ones (`*_ratio_best_torch` uses the faster of the two). Results are written to
# `results/bench/` under a name that carries the CPU model and the thread count.

# %%
result = bench.run(batches=tuple(cfg["kernel_batches"]), reps=cfg["kernel_reps"], threads=cfg["kernel_threads"],
                   network=True, net_width=cfg["kernel_network_width"], net_batch=cfg["kernel_network_batch"],
                   net_reps=cfg["kernel_reps"],
                   out_dir=out_dir, suffix=suffix, clock=cfg["kernel_clock"], log=lambda *a: None)
result["machine"]

# %%
peak = result["peak"]  # measured in the same run: the micro-kernels of cuda_numba.roofline, torch's matmul beside
print(f"peaks: binary {binary_peak_text(peak)}, fp32 FMA {peak['fp32_gmacs']:.0f} GMAC/s, "
      f"int8 {peak['int8_gmacs']:.0f} GMAC/s ({peak['int8_path']}), torch fp32 matmul {peak['torch_mm_gmacs']:.0f} "
      f"GMAC/s -> a kernel at the binary peak is {peak['ceiling']:.1f}x a convolution at the fp32 peak; above "
      f"their peak: {peak['exceeded_by'] or 'nothing'}")
summary = pd.DataFrame(result["summary"]).T.rename_axis("batch")
show(summary)

# %%
layers = pd.DataFrame(result["layers"])
for k in ("torch", "torch_cl", "pack", "xnor", "mv", "hmv"):
    layers[f"{k}_ms"] = 1e3 * layers[f"{k}_s"]
cols = ["shape", "batch", "torch_ms", "torch_cl_ms", "pack_ms", "xnor_ms", "mv_ms", "hmv_ms", "xnor_ratio",
        "xnor_pack_ratio", "xnor_ratio_best_torch", "mv_ratio", "hmv_ratio", "mv_vs_xnor", "xnor_tmacs", "mv_tmacs", "torch_frac_peak", "xnor_frac_peak"]
show(layers[cols])

# %%
display(Image(filename=result["files"]["png"]))

# %% [markdown]
# ## Whole network, layer by layer: ReActNet-18 (width 64) with its binary convolutions converted
#
# `cuda_numba.convert_model` replaces every binary 3×3 convolution by its bit-kernel twin; everything else
# (stem, BN, RPReLU, shortcuts, classifier) stays in torch. Per-layer times come from forward hooks around each
# binary convolution: most of the time goes to what surrounds the kernels.

# %%
net = result["network"]
print(f"float simulation {net['float_images_per_s']:.0f} img/s, bit kernels {net['bit_images_per_s']:.0f} img/s: "
      f"{net['speedup']:.2f}x; identical logits: {net['identical_logits']}")
show(pd.DataFrame(net["layers"]))

# %% [markdown]
# ## Whole network, fused: the inference engine (`cuda_numba.compile_engine`)
#
# The engine runs each binary block as one Numba call that reads packed bits and writes both the float residual
# stream and the next layer's packed bits: α·s (or the voter's ±1 with BN folded into two levels per channel), BN,
# residual add, RPReLU, the next layer's sign and bit packing in one pass over each output tile; no fp32
# convolution output is materialized. Its benchmark runs in its own process (it sets Numba's OpenMP layer with a
# short spin before any parallel kernel), interleaving the engine (popcount, MV, HMV G = 4), mvlib's float path,
# the layer-by-layer conversion, a plain torch fp32 network, torch bf16 and int8, and Larq Compute Engine when an
# interpreter with it is named (`engine_lce_python`); the roofline is measured in the same run. Logits of every
# engine variant are compared with its float model's.

# %%
import subprocess
import sys
args = [sys.executable, "-m", "cuda_numba.bench", "--network", "--out", str(out_dir), "--threads", str(cfg["kernel_threads"])]
args += ["--quick"] if cfg["engine_quick"] else ["--width", str(cfg["kernel_network_width"])]
if cfg["engine_lce_python"]:
    args += ["--lce-python", cfg["engine_lce_python"]]
done = subprocess.run(args, capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-2000:]
engine_files = sorted(out_dir.glob("network_*.json"), key=lambda p: p.stat().st_mtime)
engine = json.loads(engine_files[-1].read_text())
from cuda_numba.bench_network import summary_text
print(summary_text(engine))
show(pd.DataFrame(engine["summary"]).T.rename_axis("batch")[
    ["engine_popcount", "engine_mv", "engine_hmv4", "mvlib_float", "mvlib_converted", "torch_fp32", "torch_bf16",
     "torch_int8"] + (["lce"] if "lce" in engine["summary"][next(iter(engine["summary"]))] else [])
    + ["engine_vs_mvlib_float", "engine_vs_best_torch", "mv_vs_popcount", "roofline_fraction"]], index=True)
display(Image(filename=str(engine_files[-1].with_suffix(".png"))))

# %% [markdown]
# Where the engine's time goes (seconds per stage of one forward pass at each batch; "binary convs alone" is the
# 16 layer kernels on ready packed input, so the stages' excess over it is what the fused epilogue costs), and
# each stage's share of the binary peak (its binary MACs per second over the roofline's rate).

# %%
per_batch = {}
for b, by_engine in engine["stages_s"].items():
    st = dict(by_engine["engine_popcount"])
    conv_only = st.pop("conv_only", {})
    per_batch[f"batch {b}"] = {**{k: 1e3 * v for k, v in st.items()},
                               **{f"{k}: binary convs alone": 1e3 * v for k, v in conv_only.items()}}
show(pd.DataFrame(per_batch).rename_axis("ms per forward (popcount engine)"), digits=3, index=True)
# each stage's binary MACs per second against the binary peak: the fused blocks, and their convolutions alone ("conv_")
show(pd.DataFrame({f"batch {b}": s["stage_roofline"] for b, s in engine["summary"].items() if "stage_roofline" in s})
     .rename_axis("fraction of the binary peak"), digits=2, index=True)

# %% [markdown]
# ## GPU (plan 1 on a card)
#
# `python -m cuda_numba.gpu_check --out results/bench/gpu` checks every CUDA kernel bit-exact on the card
# (all ResNet-18 shapes, odd sizes, ties, converted models) and times them against cuDNN fp32 with TF32 off,
# TF32 and bf16. Its results are shown here when present.
#
# ## Trained models
#
# End to end on the test set, `cuda_numba.prediction_agreement(model, convert_model(model), test_batches)`
# counts the differing predictions of a trained ReActNet-18 / Bi-RealNet-18 (with and without the voter)
# on the bit kernels; the logits are bit-identical by construction (checked on random models in
# `tests/test_kernels_convert.py`), so the count is expected to be 0.

# %%
gpu_report = out_dir / "gpu" / "gpu_check.json"
if gpu_report.is_file():
    gpu = json.loads(gpu_report.read_text())
    checks = pd.DataFrame(gpu["checks"])
    print(gpu["device"], f"{checks.ok.sum()}/{len(checks)} checks bit-exact")
    show(pd.DataFrame(gpu["bench"]), digits=3)
else:
    print("no GPU results in results/bench/gpu: run `python -m cuda_numba.gpu_check --out results/bench/gpu` "
          "on a CUDA machine")

# %%
from mvlib.study.trained_check import trained_agreement
agreement = trained_agreement(cfg)
show(agreement, digits=4)
