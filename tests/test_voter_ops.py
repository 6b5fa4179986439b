"""set_voter round trips, matched-scale calibration, BN recalibration, disagreement on activations."""
import itertools
import math

import pytest
import torch
import torch.nn as nn

from mvlib.layers import BinaryConv2d, binary_convs
from mvlib.models import build_model
from mvlib.voter_ops import (calibrate_matched_scale, recalibrate_bn, select_layers, set_voter, voter_disagreement,
                             voter_from_spec)
from mvlib.study.voter_study import naive_suffix, voter_spec
from mvlib.voters import HierarchicalVoter, MajorityVoter


class ListLoader(list):
    """A list of (images, labels) batches, as a loader."""


def small_model(name="reactnet18"):
    torch.manual_seed(0)
    model = build_model(name, width=8)
    # a few training-mode passes so BN statistics are not the identity
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 16, 16))
    return model.eval()


def loader(n=3, b=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return ListLoader((torch.randn(b, 3, 16, 16, generator=g), torch.zeros(b, dtype=torch.long)) for _ in range(n))


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "matched_scale" not in k}


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18"])
def test_set_voter_round_trip_identical(name):
    model = small_model(name)
    x = torch.randn(4, 3, 16, 16)
    before, sd = model(x), state(model)
    set_voter(model, "mv")
    assert all(isinstance(m.voter, MajorityVoter) for _, m in binary_convs(model))
    assert not torch.equal(model(x), before)
    set_voter(model, {"name": "hmv", "fanins": [2], "tie": "neg"}, layers=[0, "blocks.3.conv"])
    assert isinstance(model.blocks[3].conv.voter, HierarchicalVoter)
    set_voter(model, None)
    assert torch.equal(model(x), before)
    after = state(model)
    assert sd.keys() == after.keys() and all(torch.equal(sd[k], after[k]) for k in sd)


def test_select_layers_and_specs():
    model = small_model()
    assert len(select_layers(model)) == 16
    assert select_layers(model, [-1])[0][0] == "blocks.15.conv"
    with pytest.raises(IndexError):
        select_layers(model, [16])
    with pytest.raises(KeyError):
        select_layers(model, ["stem"])
    v = voter_from_spec(voter_spec(fanins=[4, 2], tie="first", estimator="ste"))
    assert v.fanins == (4, 2) and v.tie == "first" and v.estimator == "ste"
    assert voter_spec().variant(naive_suffix("none", False)) == "naive"
    assert voter_spec().variant(naive_suffix("matched", False)) == "naive-matched"
    assert voter_spec().variant(naive_suffix("none", True)) == "naive+recal"
    assert voter_spec(4).variant("naive") == "hmv-g4-tiepos-naive"
    assert voter_spec([4, 2], "neg").variant("retrain-approx") == "hmv-g4x2-tieneg-retrain-approx"


def test_matched_scale_equals_float_conv_mean_abs_output():
    model = small_model()
    ld = loader()
    sums, counts = {}, {}

    def hook(name):
        def fn(_m, _i, out):
            sums[name] = sums.get(name, 0) + out.abs().sum((0, 2, 3))
            counts[name] = counts.get(name, 0) + out.numel() // out.shape[1]
        return fn
    hs = [m.register_forward_hook(hook(n)) for n, m in binary_convs(model)]
    with torch.no_grad():
        for x, _ in ld:
            model(x)
    for h in hs:
        h.remove()
    set_voter(model, voter_spec(output_scale="matched"))
    scales = calibrate_matched_scale(model, ld, batches=0)
    assert len(scales) == 16
    for n, m in binary_convs(model):
        assert torch.allclose(m.voter.matched_scale, sums[n] / counts[n], rtol=1e-5)
        assert isinstance(m.voter, MajorityVoter)  # voters are back after calibration
    # the voter's output then has the same mean |output| per channel
    x = ld[0][0]
    out = model.blocks[0].conv(model.stem(x))
    assert torch.allclose(out.abs().mean((0, 2, 3)), model.blocks[0].conv.voter.matched_scale)


def test_recalibrate_bn_cumulative_average_no_parameter_change():
    model = small_model("birealnet18")
    set_voter(model, "mv")
    params = {k: v.clone() for k, v in model.named_parameters()}
    ld = loader(n=2)
    bn = model.stem[1]
    recalibrate_bn(model, ld, batches=0)
    assert not model.training
    assert all(torch.equal(params[k], v) for k, v in model.named_parameters())
    # stem BN sees the stem conv output: its running mean is the average of the two batch means
    with torch.no_grad():
        means = [model.stem[0](x).mean((0, 2, 3)) for x, _ in ld]
    assert torch.allclose(bn.running_mean, (means[0] + means[1]) / 2, atol=1e-5)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 2


def test_voter_disagreement_matches_direct_votes():
    model = small_model()
    ld = loader(n=1)
    rows = voter_disagreement(model, ld, 4, "neg", batches=1)
    assert len(rows) == 16 and all(0 <= r["disagree_rate"] <= 1 and 0 <= r["outer_tie_rate"] <= 1 for r in rows)
    conv = model.blocks[0].conv
    with torch.no_grad():
        xin = model.stem(ld[0][0])
        a = conv.act(xin)
        w = torch.where(conv.weight >= 0, 1.0, -1.0)
        one = torch.ones(conv.out_channels)
        exact = MajorityVoter()(a, w, one, 1, 1)
        hier = HierarchicalVoter(4, "neg")(a, w, one, 1, 1)
    assert rows[0]["disagree_rate"] == pytest.approx((exact != hier).float().mean().item())
    assert rows[0]["block_fanin"] == 8 * 9 // 4
    # a fan-in that does not divide the channels is reported as not applicable
    assert voter_disagreement(model, ld, 16, "pos", batches=1)[0]["disagree_rate"] is None


def _ref_tree(votes, fanins, tie):
    """(vote, outer level tied) of a nested vote over innermost ±1 votes, fan-ins from the outer level in."""
    g = fanins[0]
    size = len(votes) // g
    children = [_ref_tree(votes[i * size:(i + 1) * size], fanins[1:], tie)[0] if len(fanins) > 1 else votes[i]
                for i in range(g)]
    t = sum(children)
    if t != 0:
        return (1 if t > 0 else -1), False
    return {"pos": 1, "neg": -1, "first": children[0]}[tie], True


@pytest.mark.parametrize("fanins,cin", [((4, 2), 16), ((2, 2, 2), 16), ((2, 3), 12)])
def test_voter_disagreement_rates_match_brute_force_per_tie_rule(fanins, cin):
    """Disagreement, outer-tie and exact-tie rates of every tie rule against plain loops over a small layer."""
    torch.manual_seed(4)
    conv = BinaryConv2d(cin, 3, 3, stride=1, padding=1)
    with torch.no_grad():
        conv.weight.normal_()  # both signs (the init is all positive)
        conv.act.shift.normal_(0, 0.2)
    model = nn.Sequential(conv).eval()
    x = torch.randn(2, cin, 5, 5, generator=torch.Generator().manual_seed(5))
    ties = ["pos", "neg", "first"]
    rows = {r["tie"]: r for r in voter_disagreement(model, ListLoader([(x, torch.zeros(2))]), fanins, ties, 1)}

    with torch.no_grad():
        z = (x + conv.act.shift.view(1, -1, 1, 1)).tolist()  # the layer's own float32 addition
    w = conv.weight.tolist()
    m = math.prod(fanins)
    c = cin // m
    n = 0
    counts = {t: {"disagree": 0, "outer_tie": 0} for t in ties}
    exact_ties = 0
    for b, o, y, xx in itertools.product(range(2), range(3), range(5), range(5)):
        block_sums = [0] * m
        for ch in range(cin):
            for i in range(3):
                for j in range(3):
                    yy, xj = y - 1 + i, xx - 1 + j
                    if 0 <= yy < 5 and 0 <= xj < 5:  # padded taps left out
                        av = 1 if z[b][ch][yy][xj] >= 0 else -1
                        wv = 1 if w[o][ch][i][j] >= 0 else -1
                        block_sums[ch // c] += av * wv
        total = sum(block_sums)
        exact = 1 if total >= 0 else -1
        exact_ties += total == 0
        inner = [1 if s >= 0 else -1 for s in block_sums]
        for t in ties:
            vote, outer_tie = _ref_tree(inner, list(fanins), t)
            counts[t]["disagree"] += vote != exact
            counts[t]["outer_tie"] += outer_tie
        n += 1
    for t in ties:
        r = rows[t]
        assert r["block_fanin"] == c * 9
        assert r["disagree_rate"] == counts[t]["disagree"] / n, t
        assert r["outer_tie_rate"] == counts[t]["outer_tie"] / n, (t, r["outer_tie_rate"], counts[t]["outer_tie"] / n)
        assert r["exact_tie_rate"] == exact_ties / n
    # with an even fan-in below the outer level inner ties are frequent here and the rules' outer-tie
    # rates really differ; with odd ones (2 x 3) no level below ties and the rule cannot matter
    distinct = len({counts[t]["outer_tie"] for t in ties})
    assert distinct > 1 if any(g % 2 == 0 for g in fanins[1:]) else distinct == 1


def test_retrained_voter_model_trains():
    """A model with voters gets gradients in every binary conv weight (surrogate path works end to end)."""
    model = small_model()
    for _, m in binary_convs(model):  # trained-like weights of both signs (the init is all positive)
        m.weight.data.normal_()
    set_voter(model, voter_spec(fanins=2))
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16)), torch.arange(8) % 10)
    loss.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for _, m in binary_convs(model))


def test_a_selection_that_matches_no_layer_is_an_error():
    from mvlib.layers import BinaryConv2d
    conv = BinaryConv2d(8, 8, 1)  # a lone 1x1: the default "3x3" set matches nothing
    with pytest.raises(ValueError, match=r"selects no binary convolution.*1x1"):
        set_voter(conv, "mv")
    with pytest.raises(ValueError, match="selects no binary convolution"):
        set_voter(build_model("reactnet18", width=4), "mv", layers=[])
    set_voter(conv, "mv", "1x1")
    assert conv.voter is not None
    set_voter(conv, None)  # the bare reset clears every binary convolution
    assert conv.voter is None
    set_voter(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3)), None)  # nothing to reset: no error
