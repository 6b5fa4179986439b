"""The paper profile's machinery: per-network recipes, ResNet teachers, best-on-validation pick, deadlines,
the estimate and the smoke run."""
import json
import shutil

import pytest
import torch

from mvlib.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from mvlib.models import build_model, build_teacher, count_parameters
from mvlib.study import pipeline
from mvlib.study.config import load_profile, recipe_for
from mvlib.study.estimate import count, disk_gb, measure, measure_batch, state_bytes
from mvlib.study.experiment import TeacherTooWeak, train_baseline, train_run
from mvlib.study.progress import DEADLINE_ENV
from mvlib.train import DeadlineReached, fit, make_optimizer


def test_paper_recipes_follow_the_official_code():
    cfg = load_profile("paper")
    react, bireal = recipe_for(cfg, "reactnet18"), recipe_for(cfg, "birealnet18")
    assert (react["two_step"], react["epochs"], react["distill"], react["teacher_model"]) == (True, 512, True, "resnet34")
    assert (react["optimizer"], react["lr"], react["batch_size"], react["step2_weight_decay"]) == ("adam-l2", 5e-4, 256, 0.0)
    assert (bireal["two_step"], bireal["epochs"], bireal["distill"], bireal["label_smoothing"]) == (False, 256, False, 0.1)
    assert (bireal["lr"], bireal["batch_size"], bireal["weight_decay"]) == (1e-3, 512, 0.0)
    assert cfg["checkpoint_pick"] == "best_val" and cfg["appendix_two_step"] and cfg["appendix_distill"]


@pytest.mark.parametrize("recipes,match", [
    ({"resnet50": {"lr": 0.1}}, "unknown model"),
    ({"birealnet18": {"seeds": [0]}}, "not a training key"),
    ({"birealnet18": {"seed": 3}}, "not a training key"),
    ({"birealnet18": {"lr": -1.0}}, "must be > 0"),
    ({"birealnet18": {"two_step": True, "epochs": 1}}, "two_step needs epochs >= 2"),
])
def test_model_recipes_are_checked_before_any_work(recipes, match):
    with pytest.raises((KeyError, TypeError, ValueError), match=match):
        load_profile("ci", {"model_recipes": recipes})


def test_resnet_teachers():
    assert abs(count_parameters(build_teacher("resnet34")) - 21.28e6) < 0.01e6  # the standard CIFAR ResNet-34
    assert build_teacher("resnet18", num_classes=100, width=8)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(ValueError, match="unknown teacher"):
        build_teacher("vgg16")


def test_adam_l2_is_torch_adam_with_coupled_decay():
    m = build_model("reactnet18", width=4)
    opt = make_optimizer(m, "adam-l2", 1e-3, 1e-5)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 1e-5
    assert type(make_optimizer(m, "adam", 1e-3, 1e-5)) is torch.optim.AdamW


def _tiny_loaders():
    from mvlib.data import BatchLoader
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    return (BatchLoader(x, y, 16, train=True, augment=False, device="cpu", seed=0),
            BatchLoader(x[:16], y[:16], 16, train=False, augment=False, device="cpu"))


def test_best_val_pick_keeps_the_best_epoch_and_survives_resume(tmp_path):
    tr, va = _tiny_loaders()
    torch.manual_seed(0)
    m = build_model("reactnet18", width=4)
    ck = tmp_path / "last.pt"
    hist = fit(m, tr, va, epochs=4, lr=0.05, pick="best_val", checkpoint_path=ck, progress=False, log=lambda s: None)
    best = max(range(4), key=lambda i: (hist[i]["val_top1"], -i))  # the first epoch with the best top-1
    state = load_checkpoint(ck)
    assert state["epoch"] == 4 and state["pick"]["epoch"] == best + 1
    assert "optimizer" not in state and "model" not in state["pick"]  # finished: the kept weights only
    for k, v in m.state_dict().items():  # fit returns the picked weights
        assert torch.equal(v, state["model"][k]), k
    other = build_model("reactnet18", width=4)
    load_model_weights(other, ck)  # what later notebooks load
    assert all(torch.equal(v, state["model"][k]) for k, v in other.state_dict().items())
    again = build_model("reactnet18", width=4)  # resuming a finished run trains nothing, keeps the pick
    fit(again, tr, va, epochs=4, lr=0.05, pick="best_val", checkpoint_path=ck, progress=False, log=lambda s: None)
    assert all(torch.equal(v, state["model"][k]) for k, v in again.state_dict().items())
    with pytest.raises(CheckpointError, match="cannot be trained on"):
        fit(again, tr, va, epochs=5, lr=0.05, pick="best_val", checkpoint_path=ck, progress=False, log=lambda s: None)


def test_a_run_stopped_mid_way_ends_on_the_same_pick(tmp_path):
    # a checkpoint in training keeps the optimizer and the best epoch's weights; resumed, the run ends where
    # an uninterrupted one ends, and its final checkpoint is the slim one
    tr, va = _tiny_loaders()
    kw = dict(epochs=3, lr=0.05, pick="best_val", progress=False, log=lambda s: None)
    torch.manual_seed(0)
    whole = build_model("reactnet18", width=4)
    fit(whole, tr, va, checkpoint_path=tmp_path / "a.pt", **kw)
    torch.manual_seed(0)
    with pytest.raises(DeadlineReached):  # a deadline long past: stops after epoch 1's checkpoint
        fit(build_model("reactnet18", width=4), tr, va, checkpoint_path=tmp_path / "b.pt", deadline=1.0, **kw)
    mid = load_checkpoint(tmp_path / "b.pt")
    assert mid["epoch"] == 1 and "optimizer" in mid and "model" in mid["pick"]
    resumed = build_model("reactnet18", width=4)
    fit(resumed, tr, va, checkpoint_path=tmp_path / "b.pt", **kw)
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert a["pick"] == b["pick"] and "optimizer" not in b
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_deadline_stops_after_a_checkpointed_epoch_and_a_rerun_resumes(tmp_path, monkeypatch):
    tr, va = _tiny_loaders()
    ck = tmp_path / "last.pt"
    monkeypatch.setenv(DEADLINE_ENV, "1")  # the pipeline's variable, long past: fit itself does not read it
    assert len(fit(build_model("birealnet18", width=4), tr, va, epochs=2, progress=False, log=lambda s: None)) == 2
    with pytest.raises(DeadlineReached, match="after epoch 1/3"):
        fit(build_model("birealnet18", width=4), tr, va, epochs=3, checkpoint_path=ck, progress=False,
            log=lambda s: None, deadline=1.0)  # long past
    assert load_checkpoint(ck)["epoch"] == 1
    hist = fit(build_model("birealnet18", width=4), tr, va, epochs=3, checkpoint_path=ck, progress=False,
               log=lambda s: None)
    assert len(hist) == 3 and load_checkpoint(ck)["epoch"] == 3


def test_a_recorded_run_stops_at_the_pipeline_deadline_and_resumes(tmp_path, data_root, monkeypatch):
    # the study reads the pipeline's deadline and passes it to fit
    cfg = load_profile("ci", {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False,
                              "width": 4, "train_per_class": 5, "test_per_class": 2, "epochs": 2})
    monkeypatch.setenv(DEADLINE_ENV, "1")  # long past
    with pytest.raises(DeadlineReached, match="after epoch 1/2"):
        train_baseline(cfg, "birealnet18")
    monkeypatch.delenv(DEADLINE_ENV)
    lines = []
    _, run = train_baseline(cfg, "birealnet18", log=lines.append)
    assert any(line.startswith("resumed from") for line in lines) and run.metrics["epochs"] == 2


def test_resnet_teacher_trains_first_and_a_weak_one_stops_the_study(tmp_path, data_root):
    cfg = load_profile("ci", {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False,
                              "width": 4, "train_per_class": 5, "test_per_class": 2, "epochs": 2, "two_step": True,
                              "distill": True, "teacher_model": "resnet18", "teacher_width": 4, "teacher_epochs": 1,
                              "teacher_batch_size": 50, "checkpoint_pick": "best_val", "vd_train_epochs": 2})
    model, run = train_baseline(cfg, "reactnet18")
    runs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "01_baseline").glob("*/metrics.json")]
    assert sorted(r["variant"] for r in runs) == ["baseline", "step1-binact", "teacher-resnet18"]
    teacher = next(r for r in runs if r["variant"] == "teacher-resnet18")
    assert teacher["model"] == "resnet18" and run.params["teacher_run"] == teacher["run_id"]
    assert "picked_epoch" in run.metrics
    # the second student of the seed reuses the same teacher run
    train_baseline(cfg, "birealnet18")
    assert sum(p.name.endswith(teacher["run_id"]) for p in (tmp_path / "results" / "runs" / "01_baseline").iterdir()) == 1
    with pytest.raises(TeacherTooWeak, match="below teacher_min_val_top1"):
        train_baseline({**cfg, "teacher_min_val_top1": 99.9}, "reactnet18")


def test_estimate_counts_the_notebooks_loops():
    cfg = load_profile("cpu")
    rows = count(cfg).rows
    trained = sum(n for (s, k, *_), n in rows.items() if s == "01_baseline" and k == "train")
    assert trained == len(cfg["seeds"]) * len(cfg["models"]) * cfg["epochs"] * 10 * cfg["train_per_class"]
    runs = count(cfg).runs  # one checkpoint per trained run, the size of its weights
    assert sum(n for (s, *_), n in runs.items() if s == "01_baseline") == len(cfg["seeds"]) * len(cfg["models"])
    assert disk_gb(count(cfg))["01_baseline"] == pytest.approx(
        len(cfg["seeds"]) * sum(state_bytes(m, cfg["width"]) for m in cfg["models"]) / 1e9)
    paper = count(load_profile("paper")).rows
    assert any(net == "resnet34" for (_, _, net, _, _) in paper)  # the teacher is counted
    tr, ev = measure("reactnet18", 4, "mv", 4, "cpu", seconds=0.05)
    assert tr > 0 and ev > tr / 10
    # a CPU measures at a smaller batch than a GPU (the 64-leaf tree's memory), never above the profile's
    assert (measure_batch(512, "cpu"), measure_batch(512, "cuda:1"), measure_batch(32, "cuda")) == (64, 256, 32)


def test_max_hours_stops_before_the_next_step(tmp_path, monkeypatch, tiny_notebooks):
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_slow": "import time; time.sleep(3)", "02_next": "x = 1"})
    monkeypatch.setenv(DEADLINE_ENV, "")  # run_pipeline sets it; monkeypatch takes it away afterwards
    with pytest.raises(pipeline.StoppedAtDeadline, match="before 02_next"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "r")}, max_hours=1 / 3600,
                              log=lambda s: None, notebook_dir=nbdir)
    assert (tmp_path / "r" / "notebooks" / "ci" / "01_slow.done.json").is_file()


def test_a_smoke_run_shares_the_machine_with_the_timing_notebook(tmp_path, data_root, monkeypatch):
    # a smoke run's timings are read by nobody: notebook 05 takes a slot like any step, its benchmark on one thread
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    seen = {}

    class Capture:  # the scheduler a parallel run builds: what it would run, and how
        def __init__(self, alone, launch, **kw):
            seen[launch.profile] = (alone, launch.overrides.get("kernel_threads"))

        def run(self):
            return []
    for smoke in (True, False):
        pipeline.run_pipeline("paper", only=["01", "05"], smoke=smoke, overrides={"results_dir": str(tmp_path)},
                              log=lambda s: None, record=False, estimate_first=False, jobs=2, make_scheduler=Capture)
        assert seen.pop("paper") == (((), 1) if smoke else (pipeline.ALONE, None))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_paper_smoke_runs_every_notebook(tmp_path, data_root, monkeypatch):
    """``make study PROFILE=paper SMOKE=1``: the paper code path end to end at a few images (<= 10 min on 2 cores)."""
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    results = tmp_path / "results"
    done = pipeline.run_pipeline("paper", smoke=True, overrides={"results_dir": str(results)}, log=print)
    assert [d["step"] for d in done] == pipeline.steps() or sorted(d["step"] for d in done) == sorted(pipeline.steps())
    variants = {json.loads(p.read_text())["variant"] for p in results.glob("runs/01_baseline/*/metrics.json")}
    assert {"teacher-resnet34", "step1-binact", "baseline"} <= variants
    assert (results / "report-paper.html").is_file()
    shutil.rmtree(results)  # a few GB of paper-width checkpoints: not kept among pytest's last three tmp folders


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_run_on_two_ranks_records_what_one_process_trains(tmp_path, data_root):
    """``ddp_procs=2``: train_run hands fit to torchrun (gloo, 2 CPU ranks); same record and checkpoint.

    A real-valued network (the teacher), two epochs: its checkpoints agree to float order (1.2e-7 measured).
    Why not a binary student here: a binary network amplifies float-order noise, because an activation or
    weight within rounding of 0 flips its sign. One process with 2 threads instead of 1 (no DDP at all)
    moves Bi-RealNet-18's stem weights by 6.5e-4 after two SGD steps on this data, and two ranks move them
    by the same 6.5e-4; the binary path under DDP is checked step by step in
    ``test_torchrun_two_ranks_train_what_one_process_trains`` (tests/test_train.py), where no sign flips."""
    base = {"data_dir": str(data_root), "progress": False, "width": 4, "train_per_class": 4, "test_per_class": 2,
            "epochs": 2, "batch_size": 20, "threads": 1, "optimizer": "sgd", "lr": 0.01}
    states, records = [], []
    for procs in (1, 2):
        cfg = load_profile("ci", {**base, "results_dir": str(tmp_path / f"r{procs}"), "ddp_procs": procs})
        _, run = train_run(cfg, "01", "resnet18", "teacher")
        assert run.metrics["epochs"] == 2 and len(run.history()) == 2
        states.append(load_checkpoint(run.checkpoint)["model"])
        records.append(run.metrics)
    for k in states[0]:
        assert torch.allclose(states[0][k].float(), states[1][k].float(), rtol=1e-5, atol=1e-6), k
    assert records[0]["val_top1"] == records[1]["val_top1"] and records[0]["top1"] == records[1]["top1"]
