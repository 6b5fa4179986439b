"""CPU bit kernels: bit-exact against the float simulation of mvlib.

References are mvlib's own definitions: ``integer_conv`` (round(conv) of the
±1 operands, zero padding of the binarized input), ``majority_vote`` and
``hierarchical_vote`` on ``block_partial_sums``. Every ResNet-18 CIFAR 3x3
shape runs at full size; odd channel counts, odd spatial sizes, other
strides/paddings/kernel sizes and forced ties run small.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cuda_numba import (conv_hmv, conv_hmv_cpu, conv_mv, conv_mv_cpu, conv_popcount, conv_popcount_cpu,
                        pack, pack_activations, pack_reference, prepare_cpu_weights, unpack, unpack_reference)
from cuda_numba.bitops import popc
from cuda_numba.ops import BitConvWeights, scaled_bits, scaled_sums
from mvlib.binarizers import sign_pm1
from mvlib.voters import block_partial_sums, hierarchical_vote, integer_conv, majority_vote

# (Cin, Cout, input size, stride): the 3x3 layers of the CIFAR ResNet-18 and its stride-2 transitions
RESNET18_SHAPES = [(64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (128, 256, 16, 2),
                   (256, 256, 8, 1), (256, 512, 8, 2), (512, 512, 4, 1)]


def _operands(b, cin, cout, h, w=None, k=3, seed=0, shift=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cin, h, w or h, generator=g)
    sh = torch.randn(cin, generator=g) * 0.3 if shift else None
    wt = torch.randn(cout, cin, k, k, generator=g)
    a = sign_pm1(x + (0 if sh is None else sh.view(1, -1, 1, 1)))
    return x, sh, wt, a, sign_pm1(wt)


def _bits_to_pm1(bits: np.ndarray, channels: int) -> torch.Tensor:
    return torch.from_numpy(unpack_reference(bits, channels))


def _check_all(x, sh, wt, a, wb, stride, pad, hmv_cases=()):
    """Popcount, MV and the given (fanins, tie) HMVs against the float simulation."""
    cout, cin = wt.shape[:2]
    s_ref = integer_conv(a, wb, stride, pad)
    xb = pack_activations(x.numpy(), None if sh is None else sh.numpy())
    w1 = prepare_cpu_weights(wt.numpy())
    s = conv_popcount_cpu(xb, w1, stride, pad)
    assert torch.equal(torch.from_numpy(s.astype(np.float32)).permute(0, 3, 1, 2), s_ref)
    assert torch.equal(_bits_to_pm1(conv_mv_cpu(xb, w1, stride, pad), cout), majority_vote(s_ref))
    for fanins, tie in hmv_cases:
        m = int(np.prod(fanins))
        ref = hierarchical_vote(block_partial_sums(a, wb, m, stride, pad), fanins, tie)
        got = conv_hmv_cpu(xb, prepare_cpu_weights(wt.numpy(), m), stride, pad, fanins, tie)
        assert torch.equal(_bits_to_pm1(got, cout), ref), (fanins, tie)
    return s_ref


def test_layout_bit_order_and_packing():
    # channel c is bit c % 64 of word c // 64, bit 1 = +1 (x + shift >= 0, also for x + shift == 0)
    x = -torch.ones(1, 70, 1, 1)
    x[0, [0, 5, 64, 69], 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    bits = pack_activations(x.numpy())
    assert bits.shape == (1, 1, 1, 2)
    assert int(bits[0, 0, 0, 0]) == (1 << 0) | (1 << 5) and int(bits[0, 0, 0, 1]) == (1 << 0) | (1 << 5)
    x, sh, _, a, _ = _operands(3, 70, 2, 5, 7)
    ref = pack_reference(a.numpy())
    assert np.array_equal(pack_activations(x.numpy(), sh.numpy()), ref)
    assert np.array_equal(pack_activations(x.permute(0, 2, 3, 1).numpy(), sh.numpy(), channels_last=True), ref)
    padded = pack_activations(x.numpy(), sh.numpy(), pad=2)
    assert np.array_equal(padded[:, 2:-2, 2:-2], ref) and not padded[:, :2].any() and not padded[:, :, -2:].any()
    assert torch.equal(unpack(pack(x, sh), 70), a)  # torch operators, both ways
    assert torch.equal(unpack(pack(x.contiguous(memory_format=torch.channels_last), sh), 70), a)


@pytest.mark.parametrize("c,h,w", [(70, 9, 11), (128, 4, 4), (64, 32, 32), (3, 1, 17), (130, 8, 8)])
def test_nchw_packer_blocks_and_tails(c, h, w):
    """The NCHW packer works 64 pixels at a time (16-lane compares + a bit transpose): tails and ties included."""
    g = torch.Generator().manual_seed(c * h * w)
    x = torch.randint(-3, 4, (3, c, h, w), generator=g).float()  # many exact zeros: x + 0 >= 0 -> bit 1
    sh = torch.where(torch.rand(c, generator=g) < 0.5, 0.0, 0.5)
    ref = pack_reference(torch.where(x + sh.view(1, -1, 1, 1) >= 0, 1.0, -1.0).numpy())
    assert np.array_equal(pack_activations(x.numpy(), sh.numpy()), ref)
    assert np.array_equal(pack_activations(x.numpy(), sh.numpy(), pad=1)[:, 1:-1, 1:-1], ref)


def test_transpose64_against_numpy():
    from cuda_numba.bitops import transpose64
    from numba import njit

    m = np.random.default_rng(0).integers(0, 2**63, 64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    bits = (m[:, None] >> np.arange(64, dtype=np.uint64)[None, :]) & np.uint64(1)  # [row, col]
    t = njit(lambda a: transpose64(a))(m.copy())
    assert np.array_equal((t[:, None] >> np.arange(64, dtype=np.uint64)[None, :]) & np.uint64(1), bits.T)


def test_llvm_popcount_intrinsic():
    from numba import njit

    @njit
    def count(v):
        return popc(v)

    for v in (0, 1, 2**63, 2**64 - 1, 0x5555_5555_5555_5555, 12345678901234567):
        assert count(np.uint64(v)) == bin(v).count("1")


@pytest.mark.parametrize("fanins", [(4,), (2,), (3,), (2, 2), (4, 2, 2), (3, 5), (64,)])
def test_vote_trees_match_mvlib(fanins):
    from numba import njit

    from cuda_numba.bitops import TIE_CODES, tree_vote_masks, tree_vote_py

    masks = njit(lambda v, n, f, t, p: tree_vote_masks(v, n, f, t, p))
    m = int(np.prod(fanins))
    g = torch.Generator().manual_seed(m)
    sums = torch.randint(-1, 2, (64, m), generator=g).float()  # many exact ties at every level
    fan = np.asarray(fanins, np.int64)
    bits = (sums >= 0).numpy()
    for tie, code in TIE_CODES.items():
        ref = hierarchical_vote(sums, fanins, tie).numpy() > 0
        words = [sum(int(b) << i for i, b in enumerate(row)) for row in bits]
        assert [bool(tree_vote_py(np.uint64(w), m, fan, code)) for w in words] == list(ref)
        per_block = np.array([sum(int(bits[j, i]) << j for j in range(64)) for i in range(m)], np.uint64)
        got = int(masks(per_block, m, fan, code, np.zeros(8, np.uint64)))
        assert [bool(got >> j & 1) for j in range(64)] == list(ref), tie


@pytest.mark.parametrize("cin,cout,h,stride", RESNET18_SHAPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_resnet18_layer_shapes_full_size(cin, cout, h, stride, batch):
    x, sh, wt, a, wb = _operands(batch, cin, cout, h, seed=cin + stride + batch)
    hmv = [((4,), "pos")] if batch == 1 else [((4,), "first"), ((2, 2), "neg")]
    _check_all(x, sh, wt, a, wb, stride, 1, hmv)


@pytest.mark.parametrize("cin,cout,h,w,k,stride,pad,hmv", [
    (33, 17, 5, 7, 3, 1, 1, [((3,), "pos"), ((11,), "first")]),
    (70, 40, 7, 5, 3, 2, 1, [((2,), "neg"), ((5, 7), "first")]),
    (130, 20, 6, 6, 3, 2, 1, [((2,), "first"), ((13,), "pos")]),
    (1, 3, 4, 4, 3, 1, 1, []),
    (96, 16, 9, 9, 3, 1, 1, [((4, 3), "pos"), ((6,), "first")]),  # blocks of 8 and 16 bits, not words
    (64, 33, 8, 8, 3, 1, 0, [((4,), "pos")]),  # no padding
    (128, 64, 7, 7, 3, 2, 2, [((2,), "first")]),  # padding 2, odd size, stride 2
    (64, 48, 9, 9, 5, 1, 2, [((4,), "neg")]),  # 5x5 kernel
    (200, 24, 5, 5, 1, 1, 0, [((8,), "first")]),  # 1x1 kernel
])
def test_odd_shapes(cin, cout, h, w, k, stride, pad, hmv):
    x, sh, wt, a, wb = _operands(2, cin, cout, h, w, k, seed=cin * 7 + cout)
    _check_all(x, sh, wt, a, wb, stride, pad, hmv)


def test_in_pad_input_matches_unpadded():
    x, sh, wt, a, wb = _operands(2, 128, 64, 8)
    w1 = prepare_cpu_weights(wt.numpy())
    ref = conv_popcount_cpu(pack_activations(x.numpy(), sh.numpy()), w1, 1, 1)
    for pad in (1, 2):
        xp = pack_activations(x.numpy(), sh.numpy(), pad=pad)
        assert np.array_equal(conv_popcount_cpu(xp, w1, 1, 1, in_pad=pad), ref)
        assert np.array_equal(conv_mv_cpu(xp, w1, 1, 1, in_pad=pad),
                              conv_mv_cpu(pack_activations(x.numpy(), sh.numpy()), w1, 1, 1))


def test_forced_ties_mv_and_every_tie_rule():
    # pairs of channels cancel: s == 0 everywhere (also at the borders) -> the MV votes +1 everywhere
    x, _, wt, _, _ = _operands(2, 64, 32, 6, shift=False)
    x[:, 1::2] = -x[:, 0::2]
    wt[:, 1::2] = wt[:, 0::2]
    a, wb = sign_pm1(x), sign_pm1(wt)
    s_ref = _check_all(x, None, wt, a, wb, 1, 1, [((4,), "neg"), ((4,), "first")])
    assert (s_ref == 0).all()
    # HMV outer ties: all activations +1, blocks 0-1 of the weights -1, blocks 2-3 +1 -> 2:2 at every pixel
    x = torch.rand(1, 64, 5, 5) + 0.1
    wt = torch.ones(8, 64, 3, 3)
    wt[:, :32] = -1
    xb, w4 = pack_activations(x.numpy()), prepare_cpu_weights(wt.numpy(), 4)
    for tie, want in (("pos", 1.0), ("neg", -1.0), ("first", -1.0)):
        got = _bits_to_pm1(conv_hmv_cpu(xb, w4, 1, 1, 4, tie), 8)
        assert (got == want).all(), tie
    # small fan-in: ties occur naturally (N = 18 at interior pixels, fewer at borders)
    x, sh, wt, a, wb = _operands(4, 2, 24, 7, seed=3)
    s_ref = _check_all(x, sh, wt, a, wb, 1, 1, [((2,), "first"), ((2,), "neg")])
    assert (s_ref == 0).float().mean() > 0.05


def test_int32_sums_for_large_fanin():
    # kh*kw*Ci > 32767: the popcount kernel switches from int16 to int32 outputs
    x, sh, wt, a, wb = _operands(1, 3712, 16, 3, seed=5)
    s = conv_popcount_cpu(pack_activations(x.numpy(), sh.numpy()), prepare_cpu_weights(wt.numpy()), 1, 1)
    assert s.dtype == np.int32
    assert torch.equal(torch.from_numpy(s.astype(np.float32)).permute(0, 3, 1, 2), integer_conv(a, wb, 1, 1))


def test_torch_operators():
    x, sh, wt, a, wb = _operands(2, 128, 40, 6, seed=9)
    weights = BitConvWeights(wt)
    s_ref = integer_conv(a, wb, 2, 1)
    assert torch.equal(conv_popcount(pack(x, sh), weights, 2, 1).float(), s_ref)
    assert torch.equal(conv_popcount(pack(x, sh, pad=1), weights, 2, 1, in_pad=1).float(), s_ref)
    assert torch.equal(unpack(conv_mv(pack(x, sh), weights, 2, 1), 40), majority_vote(s_ref))
    ref = hierarchical_vote(block_partial_sums(a, wb, 8, 2, 1), (2, 4), "first")
    assert torch.equal(unpack(conv_hmv(pack(x, sh), weights, 2, 1, (2, 4), "first"), 40), ref)
    # back to float, NCHW or channels-last memory: the same float32 products as torch
    alpha = torch.rand(40)
    s = conv_popcount(pack(x, sh), weights, 2, 1)
    bits = conv_mv(pack(x, sh), weights, 2, 1)
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        y = scaled_sums(s, alpha, cl)
        assert y.is_contiguous(memory_format=fmt) and torch.equal(y, s_ref * alpha.view(1, -1, 1, 1))
        v = scaled_bits(bits, alpha, cl)
        assert v.is_contiguous(memory_format=fmt) and torch.equal(v, majority_vote(s_ref) * alpha.view(1, -1, 1, 1))


def test_stale_numba_cache_is_dropped_when_a_source_changes(tmp_path):
    from cuda_numba._cache_guard import STAMP, drop_stale_kernel_cache, sources_hash

    (tmp_path / "cpu_kernels._conv_kernel-1.py311.nbi").write_text("old index")
    (tmp_path / "cpu_kernels._conv_kernel-1.py311.1.nbc").write_text("old code")
    (tmp_path / STAMP).write_text("hash of older sources\n")
    assert drop_stale_kernel_cache(tmp_path)                    # stamp differs: cache files go
    assert not list(tmp_path.glob("*.nb?")) and (tmp_path / STAMP).read_text().strip() == sources_hash()
    (tmp_path / "kept.nbi").write_text("index")
    assert not drop_stale_kernel_cache(tmp_path) and (tmp_path / "kept.nbi").is_file()  # same sources: kept
