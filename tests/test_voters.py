"""Voters against brute-force references (docs/SEMANTICS.md) and their surrogate gradients against closed forms."""
import itertools
import math

import pytest
import torch

from mvlib.binarizers import get_binarizer, surrogate_grad
from mvlib.voters import (HierarchicalVoter, MajorityVoter, _channel_std, _grouped_conv, _VoteSign, block_partial_sums,
                          build_voter, hierarchical_vote, outer_tie_mask)


def rand_pm1(*shape, gen=None):
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


# ------------------------------------------------------------- plain-Python references
def ref_dot(a, w, b, o, y, x, stride, pad, channels=None):
    """Integer dot product at one output position; padded taps are left out of the sum (and of N)."""
    _, cin, h, wd = a.shape
    k = w.shape[-1]
    s = 0
    for c in (range(cin) if channels is None else channels):
        for i in range(k):
            for j in range(k):
                yy, xx = y * stride - pad + i, x * stride - pad + j
                if 0 <= yy < h and 0 <= xx < wd:
                    s += int(a[b, c, yy, xx]) * int(w[o, c, i, j])
    return s


def ref_sign(s):
    return 1 if s >= 0 else -1


def ref_tree(votes, fanins, tie):
    """Nested vote over a flat list of innermost votes, fan-ins from the outer level in."""
    if len(fanins) == 0:
        return votes[0]
    g = fanins[0]
    size = len(votes) // g
    children = [ref_tree(votes[i * size:(i + 1) * size], fanins[1:], tie) if len(fanins) > 1 else votes[i]
                for i in range(g)]
    t = sum(children)
    if t != 0:
        return 1 if t > 0 else -1
    return {"pos": 1, "neg": -1, "first": children[0]}[tie]


def ref_hmv(a, w, fanins, tie, stride, pad):
    """Brute-force hierarchical MV of a full conv: [B, Cout, Ho, Wo] of ±1."""
    b_, cin, h, wd = a.shape
    cout, _, k, _ = w.shape
    m = math.prod(fanins)
    c = cin // m
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = torch.empty(b_, cout, ho, wo)
    for b, o, y, x in itertools.product(range(b_), range(cout), range(ho), range(wo)):
        inner = [ref_sign(ref_dot(a, w, b, o, y, x, stride, pad, range(i * c, (i + 1) * c))) for i in range(m)]
        out[b, o, y, x] = ref_tree(inner, list(fanins), tie)
    return out


def run_voter(voter, a, w, stride=1, pad=1):
    return voter(a, w, torch.ones(w.shape[0]), stride, pad)


# ------------------------------------------------------------- exact voter
@pytest.mark.parametrize("stride", [1, 2])
def test_exact_voter_is_sign_of_integer_dot_product_with_ties_and_borders(stride):
    gen = torch.Generator().manual_seed(1)
    a, w = rand_pm1(2, 4, 7, 7, gen=gen), rand_pm1(3, 4, 3, 3, gen=gen)  # N = 36 inside, 16/24 at borders
    out = run_voter(MajorityVoter(), a, w, stride, 1)
    ties = 0
    for b, o, y, x in itertools.product(*map(range, out.shape)):
        s = ref_dot(a, w, b, o, y, x, stride, 1)
        ties += s == 0
        assert out[b, o, y, x].item() == ref_sign(s), (b, o, y, x, s)
    assert ties > 0  # the tie rule (+1) is exercised
    assert set(out.unique().tolist()) <= {-1.0, 1.0}


def test_exact_voter_border_tie_from_excluded_padding():
    # all-ones input, weights +1 in the left column and -1 in the right: inside s = 0 (tie) on every
    # row; at the left border the +1 column falls on padding (left out), so s = -3 * C there.
    a = torch.ones(1, 2, 4, 4)
    w = torch.zeros(1, 2, 3, 3)
    w[..., 0], w[..., 1], w[..., 2] = 1, 1, -1
    w[..., 1] = torch.tensor([1.0, -1.0, 1.0]).view(1, 1, 3)  # middle column sums to +1 per channel
    out = run_voter(MajorityVoter(), a, w)
    for y, x in itertools.product(range(4), range(4)):
        assert out[0, 0, y, x].item() == ref_sign(ref_dot(a, w, 0, 0, y, x, 1, 1))


# ------------------------------------------------------------- hierarchical voter
@pytest.mark.parametrize("fanins,cin", [((2,), 4), ((4,), 8), ((2,), 8), ((2, 2), 8), ((4, 2), 8), ((3,), 6)])
@pytest.mark.parametrize("tie", ["pos", "neg", "first"])
def test_hierarchical_voter_exhaustive_1x1(fanins, cin, tie):
    a = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=cin))).view(-1, cin, 1, 1)  # every input
    w = rand_pm1(3, cin, 1, 1, gen=torch.Generator().manual_seed(cin))
    out = run_voter(HierarchicalVoter(fanins, tie), a, w, 1, 0)
    assert torch.equal(out, ref_hmv(a, w, fanins, tie, 1, 0))


@pytest.mark.parametrize("fanins", [(2,), (4,), (2, 2)])
@pytest.mark.parametrize("tie", ["pos", "neg", "first"])
def test_hierarchical_voter_3x3_with_padding(fanins, tie):
    gen = torch.Generator().manual_seed(7)
    a, w = rand_pm1(2, 8, 5, 5, gen=gen), rand_pm1(2, 8, 3, 3, gen=gen)
    for stride in (1, 2):
        out = run_voter(HierarchicalVoter(fanins, tie), a, w, stride, 1)
        assert torch.equal(out, ref_hmv(a, w, fanins, tie, stride, 1))


def _block_with_sum(target: int, n: int) -> torch.Tensor:
    """n products of ±1 with the given sum (target and n of equal parity)."""
    plus = (n + target) // 2
    return torch.cat([torch.ones(plus), -torch.ones(n - plus)])


@pytest.mark.parametrize("tie", ["pos", "neg", "first"])
def test_m512_as_m4_of_m128_with_forced_ties(tie):
    """The deck's M512 ~ M4(M128, M128, M128, M128): inner ties (s_m = 0 -> +1) and outer ties (2 vs 2)."""
    cases = [
        (0, 0, -2, -2),     # two inner ties (+1, +1) against two -1: outer tie
        (-2, -4, 2, 0),     # first block -1, outer tie: 'first' gives -1
        (0, -2, 0, -2),     # inner ties in blocks 1 and 3, outer tie
        (2, 2, 2, -120),    # outer 3 vs 1 -> +1 although the exact 512-sum is negative
        (0, 0, 0, 0),       # all inner ties -> +1; exact sum 0 -> +1
        (-6, 4, -2, 10),    # outer tie (first -1); exact sum +6
    ]
    w = rand_pm1(1, 512, 1, 1, gen=torch.Generator().manual_seed(3))
    a = torch.empty(len(cases), 512, 1, 1)
    for i, sums in enumerate(cases):
        prod = torch.cat([_block_with_sum(s, 128) for s in sums])
        a[i, :, 0, 0] = prod * w[0, :, 0, 0]  # a * w = the wanted products
    bs = block_partial_sums(a, w, 4, 1, 0)[:, 0, 0, 0]
    assert torch.equal(bs, torch.tensor(cases, dtype=torch.float32))
    out = run_voter(HierarchicalVoter(4, tie), a, w, 1, 0)[:, 0, 0, 0]
    ref = ref_hmv(a, w, (4,), tie, 1, 0)[:, 0, 0, 0]
    assert torch.equal(out, ref)
    assert outer_tie_mask(bs, 4, tie).tolist() == [True, True, True, False, False, True]
    expected_first = [1, -1, 1, 1, 1, -1]
    expected = {"pos": [1, 1, 1, 1, 1, 1], "neg": [-1, -1, -1, 1, 1, -1], "first": expected_first}[tie]
    assert out.tolist() == expected
    exact = run_voter(MajorityVoter(), a, w, 1, 0)[:, 0, 0, 0]
    assert exact.tolist() == [-1, -1, -1, -1, 1, 1]  # sums -4, -4, -4, -114, 0 (tie +1), +6


@pytest.mark.parametrize("tie", ["pos", "neg", "first"])
def test_nested_tree_matches_reference_on_random_sums(tie):
    gen = torch.Generator().manual_seed(5)
    bs = torch.randint(-2, 3, (500, 8), generator=gen).float()  # many inner zeros (ties)
    got = hierarchical_vote(bs, (4, 2), tie)
    want = [ref_tree([ref_sign(int(v)) for v in row], [4, 2], tie) for row in bs]
    assert got.tolist() == want


def ref_outer_tie(votes, fanins, tie):
    """Whether the outermost level of the nested vote ties: its G1 children (each a ``ref_tree``) sum to 0."""
    g = fanins[0]
    size = len(votes) // g
    children = [ref_tree(votes[i * size:(i + 1) * size], fanins[1:], tie) if len(fanins) > 1 else votes[i]
                for i in range(g)]
    return sum(children) == 0


@pytest.mark.parametrize("fanins", [(4,), (2, 2), (4, 2), (2, 3), (2, 2, 2)])
@pytest.mark.parametrize("tie", ["pos", "neg", "first"])
def test_outer_tie_mask_matches_reference_for_every_tie_rule(fanins, tie):
    """Nested fan-ins: the outer level's children are resolved with the tie rule, as in hierarchical_vote."""
    m = math.prod(fanins)
    gen = torch.Generator().manual_seed(m)
    bs = torch.randint(-2, 3, (3, 40, m), generator=gen).float()  # many inner zeros, leading axes kept
    got = outer_tie_mask(bs, fanins, tie)
    assert got.shape == (3, 40) and got.dtype == torch.bool
    want = [[ref_outer_tie([ref_sign(int(v)) for v in bs[i, j]], list(fanins), tie) for j in range(40)]
            for i in range(3)]
    assert got.tolist() == want
    assert any(map(any, want)) and not all(map(all, want))  # both cases occur


def test_outer_tie_mask_depends_on_the_tie_rule_only_when_nested():
    # fan-ins (2, 2): inner pairs (+1, -1) tie; 'pos' makes both children +1 (no outer tie),
    # 'neg' both -1 (no outer tie), 'first' +1 and -1 (an outer tie)
    bs = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    assert [outer_tie_mask(bs, (2, 2), t).item() for t in ("pos", "neg", "first")] == [False, False, True]
    assert all(outer_tie_mask(bs, 4, t).item() for t in ("pos", "neg", "first"))  # 2 vs 2: a tie under every rule
    with pytest.raises(ValueError):
        outer_tie_mask(bs, (2, 2), "zero")
    with pytest.raises(ValueError):
        outer_tie_mask(bs, (4, 2), "pos")  # 4 sums for 8 blocks


def test_voter_rejects_bad_options():
    with pytest.raises(ValueError):
        HierarchicalVoter(1)
    with pytest.raises(ValueError):
        HierarchicalVoter(4, tie="zero")
    with pytest.raises(ValueError, match="recompute"):
        HierarchicalVoter(4, recompute="yes")
    with pytest.raises(ValueError):
        build_voter("mv", norm="unknown")
    with pytest.raises(ValueError):
        run_voter(HierarchicalVoter(3), rand_pm1(1, 8, 3, 3), rand_pm1(1, 8, 3, 3))
    with pytest.raises(RuntimeError):
        run_voter(MajorityVoter(output_scale="matched"), rand_pm1(1, 2, 3, 3), rand_pm1(1, 2, 3, 3))


# ------------------------------------------------------------- surrogate gradients
@pytest.mark.parametrize("est", ["approxsign", "ste"])
@pytest.mark.parametrize("norm", ["sqrt_fanin", "fanin", "batch_std"])
def test_exact_voter_gradient_closed_form(est, norm):
    cin = 16
    a = rand_pm1(64, cin, 1, 1).requires_grad_()
    w = rand_pm1(1, cin, 1, 1)
    out = run_voter(MajorityVoter(estimator=est, norm=norm), a, w, 1, 0)
    out.sum().backward()
    s = (a.detach() * w).sum(1, keepdim=True)
    c = {"sqrt_fanin": math.sqrt(cin), "fanin": cin, "batch_std": s.std().clamp_min(1.0)}[norm]
    want = surrogate_grad(est, s / c) / c * w
    assert torch.allclose(a.grad, want)


@pytest.mark.parametrize("est", ["approxsign", "ste"])
def test_hierarchical_voter_gradient_closed_form(est):
    cin, g = 16, 4
    a = rand_pm1(64, cin, 1, 1).requires_grad_()
    w = rand_pm1(1, cin, 1, 1)
    out = run_voter(HierarchicalVoter(g, "pos", estimator=est, norm="sqrt_fanin"), a, w, 1, 0)
    out.sum().backward()
    prod = (a.detach() * w)[:, :, 0, 0].view(64, g, cin // g)
    s = prod.sum(-1)                                  # inner partial sums [B, G]
    cm = math.sqrt(cin // g)
    votes = torch.where(s >= 0, 1.0, -1.0)
    outer = surrogate_grad(est, votes.sum(-1, keepdim=True) / g) / g
    inner = surrogate_grad(est, s / cm) / cm
    want = (outer * inner).repeat_interleave(cin // g, 1) * w[:, :, 0, 0]
    assert torch.allclose(a.grad[:, :, 0, 0], want)


def test_channel_std_equals_torch_std():
    s = torch.randint(-40, 41, (16, 5, 7, 3)).float()
    want = s.transpose(0, 1).reshape(5, -1).std(1).view(1, 5, 1, 1)
    assert torch.allclose(_channel_std(s), want, rtol=1e-5)


@pytest.mark.parametrize("cin,blocks", [(16, 4), (8, 2), (64, 4)])  # narrow blocks take the channels-last path
def test_grouped_conv_layouts_agree(cin, blocks):
    a, w = rand_pm1(3, cin, 9, 7), rand_pm1(cin * blocks, cin // blocks, 3, 3)
    got = _grouped_conv(a, w, 2, 1, blocks)
    assert got.is_contiguous() and torch.equal(got, torch.nn.functional.conv2d(a, w, None, 2, 1, 1, blocks))


@pytest.mark.parametrize("est", ["approxsign", "ste"])
def test_vote_sign_equals_unfused_binarizer(est):
    """The fused sign node gives the values and gradients of ``binarizer(round(s) / c)``."""
    s = (torch.randint(-30, 31, (64, 3)).float() + 1e-4 * torch.randn(64, 3)).requires_grad_()
    c = torch.tensor([[1.0, 7.0, 30.0]])
    g = torch.randn(64, 3)
    (_VoteSign.apply(s, c, est) * g).sum().backward()
    u = torch.round(s.detach()) / c
    assert torch.equal(_VoteSign.apply(s.detach(), c, est), get_binarizer(est)(u))
    assert torch.allclose(s.grad, surrogate_grad(est, u) / c * g)


def test_batch_std_norm_uses_channel_std():
    a = rand_pm1(32, 8, 4, 4).requires_grad_()
    w = rand_pm1(2, 8, 3, 3)
    v = MajorityVoter(estimator="ste", norm="batch_std")
    v(a, w, torch.ones(2), 1, 1).sum().backward()
    assert a.grad.abs().sum() > 0


@pytest.mark.parametrize("voter", [MajorityVoter(), HierarchicalVoter(2, "pos"), HierarchicalVoter(4, "neg"),
                                   HierarchicalVoter((2, 2), "first"), HierarchicalVoter((4, 2), "first")])
def test_no_grad_fast_path_equals_autograd_path(voter):
    """Evaluation (no autograd) takes a shorter path; it must give exactly the same votes."""
    gen = torch.Generator().manual_seed(11)
    a, w = rand_pm1(3, 16, 6, 6, gen=gen), rand_pm1(4, 16, 3, 3, gen=gen)
    for x in (a, a.contiguous(memory_format=torch.channels_last)):
        slow = run_voter(voter, x, w, 1, 1)
        with torch.no_grad():
            fast = run_voter(voter, x, w, 1, 1)
        assert torch.equal(fast, slow.detach())


def _saved_bytes(voter, a, w, stride, pad):
    """Bytes the autograd graph keeps for the backward pass of one voter call (outside any recomputation)."""
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: kept.append(x.numel() * x.element_size()) or x, lambda x: x):
        out = run_voter(voter, a, w, stride, pad)
    return out, sum(kept)


@pytest.mark.parametrize("fanins,tie,stride", [((2, 2, 2), "first", 2), ((4, 2), "neg", 1), (8, "pos", 2)])
def test_recomputed_tree_gives_the_kept_trees_values_gradients_and_keeps_only_its_operands(fanins, tie, stride):
    """``recompute=True`` recomputes the tree in the backward pass: bit-identical votes and gradients, and only
    the operands are kept between the passes, not the tree's tensors (m partial sums per output, each level's)."""
    gen = torch.Generator().manual_seed(5)
    a0, w0 = rand_pm1(5, 16, 7, 9, gen=gen), rand_pm1(3, 16, 3, 3, gen=gen)  # odd sizes, borders, c = 2 per block
    g = torch.randn(5, 3, (7 + 2 - 3) // stride + 1, (9 + 2 - 3) // stride + 1, generator=gen)
    runs = {}
    for recompute in (False, True):
        a, w = a0.clone().requires_grad_(), w0.clone().requires_grad_()
        voter = HierarchicalVoter(fanins, tie, recompute=recompute, norm="batch_std")
        out, kept = _saved_bytes(voter, a, w, stride, 1)
        (out * g).sum().backward()
        runs[recompute] = out.detach(), a.grad, w.grad, kept
    (o0, ga0, gw0, kept0), (o1, ga1, gw1, kept1) = runs[False], runs[True]
    assert torch.equal(o0, o1) and torch.equal(ga0, ga1) and torch.equal(gw0, gw1)
    assert ga1.abs().sum() > 0 and gw1.abs().sum() > 0
    operands = (a0.numel() + w0.numel()) * 4
    assert kept1 == operands and kept0 >= operands + 8 * o0.numel() * 4


def test_recompute_by_default_from_the_leaf_count():
    assert HierarchicalVoter((2, 2, 2, 2, 2)).recompute and HierarchicalVoter((4, 4, 4)).recompute
    assert not HierarchicalVoter(16).recompute and not HierarchicalVoter((4, 4)).recompute
    assert not HierarchicalVoter((4, 4, 4), recompute=False).recompute
