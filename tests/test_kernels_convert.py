"""``convert_model`` (issue 4): mvlib models on the bit kernels give the float simulation's outputs.

Randomly initialized models (trained checkpoints are checked in notebook 05);
BN statistics and RSign shifts are randomized so that signs are not trivial.
"""
from __future__ import annotations

import pytest
import torch

from cuda_numba import bit_convs, convert_model
from mvlib.layers import binary_convs
from mvlib.models import build_model
from mvlib.voters import HierarchicalVoter, MajorityVoter


def _random_model(name, voter, width=8, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, width=width, voter=voter)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
        for n, p in model.named_parameters():
            if n.endswith("shift"):
                p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18", "xnornet18"])
@pytest.mark.parametrize("voter", [None, "mv", "hmv"])
def test_converted_model_matches_float_simulation(name, voter):
    if voter == "hmv":
        voter = HierarchicalVoter(fanins=4, tie="first")
    elif voter == "mv":
        voter = MajorityVoter(output_scale="alpha")
    model = _random_model(name, voter)
    bit_model = convert_model(model)
    assert len(bit_convs(bit_model)) == len(binary_convs(model)) == 16
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x), bit_model(x)
    assert torch.equal(ref, got)  # bit-identical logits, so 0 differing predictions


def test_converted_model_width64_stage_layers():
    # width 64: every binary conv takes the direct (in-place taps) path of the CPU kernels
    model = _random_model("reactnet18", None, width=64)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, got = model(x), convert_model(model)(x)
    assert torch.equal(ref, got)


def test_channels_last_option_same_predictions():
    model = _random_model("birealnet18", MajorityVoter(), width=64)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, got = model(x), convert_model(model, channels_last=True)(x)
    assert torch.equal(ref.argmax(1), got.argmax(1)) and torch.allclose(ref, got, atol=1e-4)
