"""Training: real-data learning, kill -9 and resume, torchrun + DDP, run records."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mvlib.checkpoint import CheckpointError, IncompatibleCheckpoint, load_checkpoint, load_model_weights
from mvlib.study.config import load_profile
from mvlib.study.experiment import train_baseline, find_baseline
from mvlib.train import lr_factor, param_groups
from mvlib.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(tmp_path, data_root, **kw):
    base = {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False,
            "models": ["reactnet18"]}
    return load_profile("ci", {**base, **kw})


@pytest.mark.slow
def test_short_training_improves_accuracy(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, width=8, train_per_class=100, test_per_class=50, epochs=3, batch_size=50, lr=0.005)
    model, run = train_baseline(cfg, "reactnet18")
    hist = run.history()
    assert len(hist) == 3 and "val_top1" in hist[0] and not any(k.startswith("test") for k in hist[0])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert run.metrics["top1"] > 15.0  # 10 classes: chance is 10 %
    assert run.metrics["val_images"] == 100 and run.metrics["test_images"] == 500
    # records: params (identity: parameters, data, code), env, history, metrics, summaries
    for f in ("params.json", "env.json", "history.csv", "metrics.json"):
        assert (run.dir / f).is_file()
    saved = json.loads((run.dir / "params.json").read_text())["identity"]
    assert saved["data"]["val"]["val_per_class"] == 10 and saved["data"]["val"]["images"] == 100
    assert len(saved["code_hash"]) == 16 and saved["params"]["norm"] == "bn"
    env = json.loads((run.dir / "env.json").read_text())
    assert {"git_commit", "git_dirty", "code_hash", "torch", "device"} <= set(env)
    summary = (tmp_path / "results" / "summary.csv").read_text().splitlines()
    assert {"seeds", "top1_std", "top1_ci95", "top5_std", "top5_ci95"} <= set(summary[0].split(","))
    assert len(summary) == 2
    # a finished run of the same configuration is reused, not recomputed; found by lookup
    _, again = train_baseline(cfg, "reactnet18")
    assert again.run_id == run.run_id
    assert find_baseline(cfg, "reactnet18").run_id == run.run_id
    # forced: a new run folder, the old one untouched
    _, forced = train_baseline({**cfg, "force": True}, "reactnet18")
    assert forced.run_id != run.run_id and (run.dir / "metrics.json").is_file()


def _train_cli(results, data_root, kill_after_epoch=None):
    env = {**os.environ, "MVLIB_DATA": str(data_root), "PYTHONPATH": REPO}
    # the kill comes from a test-only wrapper of the same command (tests/kill_during_training.py)
    start = ([os.path.join(REPO, "tests", "kill_during_training.py"), "epoch", str(kill_after_epoch)]
             if kill_after_epoch else ["-m", "mvlib.study.train"])
    cmd = [sys.executable, *start, "--profile", "ci", "--model", "birealnet18",
           f"results_dir={results}", "epochs=3", "train_per_class=30", "test_per_class=5", "progress=false"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill9_and_resume_gives_identical_parameters(tmp_path, data_root):
    ref = _train_cli(tmp_path / "a" / "results", data_root)
    assert ref.returncode == 0, ref.stderr
    killed = _train_cli(tmp_path / "b" / "results", data_root, kill_after_epoch=2)
    assert killed.returncode == -9
    resumed = _train_cli(tmp_path / "b" / "results", data_root)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    cks = [next((tmp_path / d).rglob("last.pt")) for d in ("a", "b")]
    sa, sb = (load_checkpoint(c) for c in cks)
    assert sa["epoch"] == sb["epoch"] == 3
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    ma, mb = (json.loads(next((tmp_path / d / "results").rglob("metrics.json")).read_text()) for d in ("a", "b"))
    assert (ma["top1"], ma["top5"]) == (mb["top1"], mb["top5"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_ddp_keeps_ranks_identical(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from mvlib.data import BatchLoader
        from mvlib.models import build_model
        from mvlib.train import close_distributed, fit
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (64,), generator=g)
        tr = BatchLoader(x, y, 16, train=True, augment=True, device="cpu", seed=0)
        te = BatchLoader(x[:16], y[:16], 16, train=False, augment=False, device="cpu")
        m = build_model("reactnet18", width=4)
        fit(m, tr, te, epochs=1, progress=False, log=lambda s: None)
        flat = torch.cat([p.detach().flatten() for p in m.parameters()])
        torch.save(flat, r"{tmp_path}/rank" + os.environ["RANK"] + ".pt")
        close_distributed()  # as the data-parallel worker does: no gloo thread left at interpreter exit
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29533", str(script)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(p0, p1)
    assert not torch.equal(p0, torch.cat([p.detach().flatten() for p in build_model("reactnet18", width=4).parameters()]))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_ranks_train_what_one_process_trains(tmp_path):
    # BatchNorm over the global batch (mvlib.sync_bn) and averaged gradients: 2 ranks x 8 images = 1 x 16
    # (SGD: see test_a_run_on_two_ranks_records_what_one_process_trains for why not Adam)
    script = tmp_path / "same.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from mvlib.data import BatchLoader
        from mvlib.models import build_model
        from mvlib.train import close_distributed, fit
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        tr = BatchLoader(x, y, 16, train=True, augment=True, device="cpu", seed=0)
        te = BatchLoader(x[:16], y[:16], 16, train=False, augment=False, device="cpu")
        m = build_model("birealnet18", width=4)
        fit(m, tr, te, epochs=1, optimizer="sgd", lr=0.01, progress=False, log=lambda s: None)
        torch.save(m.state_dict(), r"{tmp_path}/" + os.environ.get("RANK", "single") + ".pt")
        close_distributed()
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    r = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29534", str(script)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "0.pt")
    assert one.keys() == two.keys()
    for k in one:  # parameters and BN running statistics
        assert torch.allclose(one[k].float(), two[k].float(), rtol=1e-4, atol=1e-5), k


def test_global_batchnorm_is_batchnorm_outside_a_process_group():
    from mvlib.sync_bn import GlobalBatchNorm2d, use_global_batchnorm
    m = build_model("reactnet18", width=4)
    ref = build_model("reactnet18", width=4)
    ref.load_state_dict(m.state_dict())
    assert use_global_batchnorm(m) > 0
    assert any(type(b) is GlobalBatchNorm2d for b in m.modules())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(m.train()(x), ref.train()(x))
    assert m.state_dict().keys() == ref.state_dict().keys()


def test_checkpoint_errors(tmp_path):
    m = build_model("reactnet18", width=4)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match=f"{bad} is corrupt .*delete it"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    from mvlib.checkpoint import save_checkpoint
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": m.state_dict(), "arch": {"model": "reactnet18", "width": 4}})
    other = build_model("birealnet18", width=4)
    with pytest.raises(IncompatibleCheckpoint, match="another architecture"):
        load_model_weights(other, good, {"model": "birealnet18", "width": 4})
    with pytest.raises(IncompatibleCheckpoint, match="does not fit"):
        load_model_weights(build_model("reactnet18", width=8), good)
    # a pickled object that would execute code is refused (weights_only loading)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "arch": {}, "x": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="more than tensors.*could run code. Delete it") as err:
        load_checkpoint(evil)
    assert "weights_only" not in str(err.value)  # torch's advice to load it unsafely is not repeated


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_weight_decay_on_conv_weights_only():
    m = build_model("reactnet18", width=4)
    decay, rest = param_groups(m, 1e-4)
    ids = {id(p) for p in decay["params"]}
    assert all(id(p) not in ids for n, p in m.named_parameters() if not n.endswith("weight") or "classifier" in n or ".norm" in n)
    assert len(decay["params"]) == 16 + 1 + 3  # binary convs, stem, 1x1 shortcuts


def test_lr_schedules():
    assert lr_factor(0, 100) == 1.0 and abs(lr_factor(100, 100)) < 1e-12
    assert abs(lr_factor(50, 100, schedule="linear") - 0.5) < 1e-12
    assert lr_factor(0, 100, warmup=10) == 0.1


def test_two_step_and_distillation_recipe(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, width=4, train_per_class=10, test_per_class=5, epochs=2, batch_size=50,
               two_step=True, distill=True, teacher_epochs=1, vd_train_epochs=2)
    model, run = train_baseline(cfg, "birealnet18")
    variants = sorted(p.name.split("-")[3] for p in (tmp_path / "results" / "runs" / "01_baseline").iterdir()
                      if p.is_dir())
    assert variants == ["baseline", "step1", "teacher"]
    assert run.params["init_run"] is not None and run.params["distill"] is True
    assert all(c.binary_weights and c.binary_activations for _, c in __import__("mvlib.layers", fromlist=["x"]).binary_convs(model))
    assert find_baseline(cfg, "birealnet18").run_id == run.run_id


def test_training_step_benchmark_through_voters():
    from mvlib.bench.train_throughput import bench_one

    for voter in ("none", "mv", "hmv4"):
        row = bench_one("reactnet18", 8, 4, torch.device("cpu"), steps=1, warmup=0, reference=True, voter=voter)
        assert row["voter"] == voter and row["mvlib_img_s"] > 0
        assert ("unfused_img_s" in row) == (voter == "none")  # the references exist for the popcount network only


@pytest.mark.parametrize("name,voter", [("reactnet18", None), ("reactnet18", {"name": "hmv", "fanins": [2, 3], "tie": "first"}),
                                        ("birealnet18", {"name": "mv"}), ("birealnet18", {"name": "hmv", "fanins": [3],
                                                                                          "tie": "neg"})])
def test_engine_evaluation_equals_the_float_model(name, voter):
    """eval_engine is an exec key (not in a run's identity) because every metric it gives is the float model's."""
    from mvlib.study.run_setup import engine_evaluate
    from mvlib.train import evaluate
    from mvlib.voter_ops import set_voter
    torch.manual_seed(1)
    model = build_model(name, width=6)  # 6, 12, 24, 48 channels: odd block sizes for G = 2 x 3
    if voter is not None:
        set_voter(model, voter)
    model.train()
    with torch.no_grad():  # BN statistics of something other than their initial values
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    batches = [(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))) for n in (13, 7)]
    from cuda_numba.engine import compile_engine
    compile_engine(model)  # the engine path is taken, not the float fallback
    assert engine_evaluate(model, batches) == evaluate(model, batches)
    assert model.training  # evaluation restores the mode


def test_engine_evaluation_falls_back_only_for_what_the_engine_refuses(monkeypatch, capsys):
    import cuda_numba.engine
    from mvlib.models import build_teacher
    from mvlib.study import run_setup
    from mvlib.train import evaluate
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    teacher = build_teacher("resnet18", width=4)  # refused: evaluated as a float model, and said so
    run_setup._say_float_fallback.cache_clear()
    assert run_setup.engine_evaluate(teacher, batches) == evaluate(teacher, batches)
    said = capsys.readouterr().out
    assert "RealResNet evaluated as a float model (the engine compiles mvlib's BinaryResNet18" in said

    def broken(model):
        raise ValueError("not a refusal")
    monkeypatch.setattr(cuda_numba.engine, "compile_engine", broken)
    with pytest.raises(ValueError, match="not a refusal"):  # any other error surfaces
        run_setup.engine_evaluate(build_model("reactnet18", width=4), batches)
