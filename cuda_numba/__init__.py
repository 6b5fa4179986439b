"""Real bit kernels for binary convolutions: XNOR + popcount, majority voter (MV)
and hierarchical majority voter (HMV), on the CPU (``numba.njit(parallel=True)``)
and the GPU (``numba.cuda``), bit-exact with the float simulation of
:mod:`mvlib` (docs/SEMANTICS.md: bit 1 = +1, padded taps left out of the count and
of ``N``, ties vote +1, HMV over contiguous channel blocks).

Modules:

* :mod:`cuda_numba.layout` - the packed layout (uint64 words, channel ``c`` at
  bit ``c % 64`` of word ``c // 64``, NHWC) and packing kernels;
* :mod:`cuda_numba.bitops` - LLVM ``ctpop`` intrinsics, the register-blocked
  XOR-popcount micro-kernel, the hierarchical vote;
* :mod:`cuda_numba.cpu_kernels` - CPU convolutions (GEMM over packed rows; the convolution of a chunk of
  output pixels, shared with the engine: :mod:`cuda_numba.chunk_conv`);
* :mod:`cuda_numba.cuda_kernels` - CUDA convolutions and packing (imported
  lazily: ``numba.cuda`` is only loaded when a GPU path or the simulator is used);
* :mod:`cuda_numba.ops` - torch operators for CPU and CUDA tensors;
* :mod:`cuda_numba.convert` - ``convert_model``: an mvlib model on bit kernels, layer by layer;
* :mod:`cuda_numba.engine` - ``compile_engine``: a binary ResNet-18 on fused block kernels
  (:mod:`cuda_numba.engine_plan`, :mod:`cuda_numba.engine_kernels`, :mod:`cuda_numba.simd`), bit-identical
  to the float model;
* :mod:`cuda_numba.bench` - ``python -m cuda_numba.bench`` (``--network``: :mod:`cuda_numba.bench_network`;
  the machine, its clock and its roofline for both: :mod:`cuda_numba.bench_machine`);
* :mod:`cuda_numba.gpu_check` - bit-exactness and benchmark on a real GPU
  (``--simulate`` runs it under the CUDA simulator).
"""
from ._cache_guard import drop_stale_kernel_cache

drop_stale_kernel_cache()  # before any njit(cache=True) function of this package is loaded

# isort: off
from .convert import BitConv2d, bit_convs, convert_model, prediction_agreement  # noqa: E402
from .engine import BinaryEngine, EngineUnsupported, compile_engine, configure_threads  # noqa: E402
from .cpu_kernels import (CpuWeights, conv_hmv_cpu, conv_mv_cpu, conv_popcount_cpu, pad_packed,  # noqa: E402
                          prepare_cpu_weights)
from .layout import (WORD_BITS, n_words, pack_activations, pack_reference, unpack_activations,  # noqa: E402
                     unpack_reference)
from .ops import BitConvWeights, conv_hmv, conv_mv, conv_popcount, pack, unpack  # noqa: E402
# isort: on

__all__ = [
    "BinaryEngine", "BitConv2d", "BitConvWeights", "CpuWeights", "EngineUnsupported", "WORD_BITS", "bit_convs",
    "compile_engine", "configure_threads", "conv_hmv", "conv_hmv_cpu", "conv_mv", "conv_mv_cpu", "conv_popcount",
    "conv_popcount_cpu", "convert_model", "n_words", "pack", "pack_activations", "pack_reference", "pad_packed",
    "prediction_agreement", "prepare_cpu_weights", "unpack", "unpack_activations", "unpack_reference",
]
