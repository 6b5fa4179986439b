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


@pytest.mark.parametrize("kind", ["qword", "byte"])
@pytest.mark.parametrize("iters", [1, 2, 7])
def test_binary_streams_count_every_bit_they_flip(kind, iters):
    import math
    bits = 256  # every AVX2 CPU; the 512-bit form where the CPU has AVX-512 BW (below)
    if "avx2" not in rl.host_features():
        pytest.skip("no AVX2 on this CPU")
    out = rl.binary_kernel(kind, bits)(3, iters)
    steps = rl.binary_steps(kind, iters)  # s ^= ones: all ones on odd steps, zero on even ones
    assert out.tolist() == [rl.BINARY_CHAINS[kind] * bits * math.ceil(steps / 2)] * 3
    if rl.binary_bits() == 512:
        assert rl.binary_kernel(kind, 512)(1, iters).tolist() == [rl.BINARY_CHAINS[kind] * 512 * math.ceil(steps / 2)]


def test_the_byte_sums_flush_before_they_can_wrap():
    assert rl.BYTE_BLOCK * 8 <= 255  # a byte holds BYTE_BLOCK steps of 8 set bits
    assert rl.binary_bits({"avx2"}) == 256 and rl.binary_bits({"avx512f", "avx512bw"}) == 512


def test_the_binary_peak_is_the_fastest_of_its_kernels():
    from cuda_numba.bench_machine import peak_rates, set_threads
    set_threads(1)
    p = peak_rates(1, reps=1)
    assert p["binary_tmacs"] == max(p["binary_tile_tmacs"], *p["binary_register_tmacs"].values())
    assert set(p["binary_register_tmacs"]) == {"qword", "byte"} and p["binary_bits"] in (256, 512)


def test_a_run_keeps_the_highest_of_its_peak_measurements():
    from cuda_numba.bench_machine import max_peaks
    a = {"binary_tmacs": 0.5, "binary_tile_tmacs": 0.5, "binary_register_tmacs": {"qword": 0.4, "byte": 0.3},
         "fp32_gmacs": 50.0, "int8_gmacs": 200.0, "torch_mm_gmacs": 60.0, "ceiling": 10.0, "int8_path": "avx2"}
    b = {**a, "binary_tmacs": 0.7, "binary_register_tmacs": {"qword": 0.3, "byte": 0.7}, "fp32_gmacs": 100.0,
         "int8_gmacs": 100.0}
    m = max_peaks(a, b)
    assert m["binary_tmacs"] == 0.7 and m["fp32_gmacs"] == 100.0 and m["int8_gmacs"] == 200.0
    assert m["binary_register_tmacs"] == {"qword": 0.4, "byte": 0.7} and m["int8_path"] == "avx2"
    assert m["ceiling"] == 0.7e3 / 100.0 and m["measurements"] == 2
