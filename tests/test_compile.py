"""The binary layers under ``torch.compile``: traced on the torch path, the same function as without it."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mvlib.models import build_model


def _model_and_batch(name):
    torch.manual_seed(0)
    m = build_model(name, width=8).to(memory_format=torch.channels_last)
    x = torch.randn(6, 3, 32, 32).to(memory_format=torch.channels_last)
    return m, x, torch.randint(0, 10, (6,))


@pytest.mark.parametrize("name", ["reactnet18", "birealnet18"])
def test_a_traced_model_computes_what_the_eager_one_does(name, monkeypatch):
    m, x, y = _model_and_batch(name)
    # "eager" runs the traced graph op by op: any difference would come from the trace, not from code generation
    traced = torch.compile(copy.deepcopy(m), backend="eager")
    m.eval(), traced.eval()
    assert torch.equal(m(x), traced(x))  # the numba forward equals the torch path bit for bit
    m.train(), traced.train()
    monkeypatch.setenv("MVLIB_FUSED", "0")  # the numba backward sums per channel in another order
    grads = []
    for net in (m, traced):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) and all(torch.equal(a, b) for a, b in zip(*grads))


def test_tracing_turns_the_numba_kernels_off_and_only_then():
    from mvlib import fused
    seen = []

    def f(t):
        seen.append(fused.kernels_enabled())
        return t + 1

    torch.compile(f, backend="eager")(torch.ones(2))
    assert seen == [False]
    assert fused.kernels_enabled() == (fused.numba is not None)
