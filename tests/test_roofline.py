"""The arithmetic peaks' micro-kernels: they do the work they are counted for (closed-form results)."""
import pytest

from cuda_numba import roofline as rl


@pytest.mark.parametrize("lanes", [8])
def test_fma_streams_each_return_chains_x_lanes_x_iters(lanes):
    out = rl.fma_kernel(lanes)(3, 1000)
    assert out.tolist() == [float(rl.FMA_CHAINS * lanes * 1000)] * 3  # acc = fma(acc, 1, 1), 1000 times


def test_int8_streams_each_return_their_dot_products():
    path = "avx2"  # every x86-64 CPU with AVX2 runs it; the VNNI paths only where the CPU has them
    if "avx2" not in rl.host_features():
        pytest.skip("no AVX2 on this CPU")
    out = rl.int8_kernel(path)(2, 500)
    assert out.tolist() == [rl.INT8_CHAINS[path] * 8 * 4 * 500] * 2  # 4 MACs of ones per int32 lane and step


def test_the_paths_follow_the_cpu_features():
    assert rl.fp32_lanes({"avx2", "fma"}) == 8 and rl.fp32_lanes({"avx512f"}) == 16
    assert rl.int8_path({"avx2"}) == "avx2"
    assert rl.int8_path({"avx2", "avxvnni"}) == "vnni256"
    assert rl.int8_path({"avx512f", "avx512vnni", "avx512vl"}) == "vnni512"
    path = rl.int8_path()
    if path != "avx2":  # a VNNI machine also checks its own path's closed form
        width = 16 if path == "vnni512" else 8
        assert rl.int8_kernel(path)(1, 100).tolist() == [rl.INT8_CHAINS[path] * width * 4 * 100]


def test_peaks_are_positive_and_name_their_paths():
    from cuda_numba.bench_machine import set_threads
    set_threads(1)
    p = rl.arithmetic_peaks(1, reps=1)
    assert p["fp32_peak_gmacs"] > 0 and p["int8_peak_gmacs"] > 0
    assert p["int8_path"] == rl.int8_path() and p["fp32_lanes"] == rl.fp32_lanes()
