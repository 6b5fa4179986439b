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


def test_fit_trains_the_compiled_model_and_keeps_the_eager_one(monkeypatch):
    """``compile_model`` wires the compiled forward into the loop: with the op-by-op backend the run is the eager
    torch-path run, the same history and weights; evaluation and the checkpointed weights are the eager model's."""
    from mvlib.data import BatchLoader
    from mvlib.train import fit
    real_compile = torch.compile
    compiled_modules = []

    def compile_op_by_op(m, **kw):
        compiled_modules.append(m)
        return real_compile(m, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_op_by_op)
    monkeypatch.setenv("MVLIB_FUSED", "0")
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(64) % 10
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        m = build_model("reactnet18", width=8)
        train = BatchLoader(images, labels, batch_size=16, train=True, augment=False, seed=0)
        val = BatchLoader(images, labels, batch_size=32, train=False, augment=False)
        hist = fit(m, train, val, epochs=2, lr=1e-3, progress=False, log=lambda s: None, compile_model=compiled)
        assert not hasattr(m, "_orig_mod")  # the caller's model is the eager module
        timing = ("seconds", "cpu_seconds")
        runs.append(([{k: v for k, v in h.items() if k not in timing} for h in hist], m.state_dict()))
    assert len(compiled_modules) == 1  # only the compiled run compiled, once
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
