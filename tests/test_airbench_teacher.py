"""The airbench distillation teacher of the study (teacher_model: airbench) and the kd_weight loss mixture.

Small throughout: random images for the loop's resume, a width-4 teacher on
1,030 real images (its batch is 1,024) for the recorded runs.
"""
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from mvlib.models import build_teacher
from mvlib.study.airbench_run import VARIANT, airbench_config, airbench_recipe
from mvlib.study.config import load_profile
from mvlib.study.experiment import TeacherTooWeak, teacher_config, train_recipe, train_run
from mvlib.study.progress import DEADLINE_ENV
from mvlib.study.run_setup import build_from_params, load_run_model
from mvlib.teacher import TeacherNet, train_teacher
from mvlib.train import DeadlineReached, distillation_loss, fit, kd_mixture


# ----------------------------------------------------------------- kd_weight
def _closed_form(s, t, y, w, eps):
    """w * sum_c -p_t log p_s + (1 - w) * (-(1 - eps) log p_s[y] - eps / C sum_c log p_s), batch mean, by hand."""
    out = 0.0
    for si, ti, yi in zip(s.tolist(), t.tolist(), y.tolist()):
        log_zs = math.log(sum(math.exp(v) for v in si))
        log_ps = [v - log_zs for v in si]
        zt = sum(math.exp(v) for v in ti)
        kd = -sum(math.exp(v) / zt * lp for v, lp in zip(ti, log_ps))
        ce = -(1 - eps) * log_ps[yi] - eps / len(si) * sum(log_ps)
        out += w * kd + (1 - w) * ce
    return out / len(y)


@pytest.mark.parametrize("w,eps", [(0.0, 0.0), (0.3, 0.1), (0.75, 0.0), (1.0, 0.1)])
def test_kd_mixture_matches_its_closed_form(w, eps):
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -2.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0, -1.0], [-0.5, 2.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    got = kd_mixture(s, t, y, w, torch.nn.CrossEntropyLoss(label_smoothing=eps))
    assert got.item() == pytest.approx(_closed_form(s, t, y, w, eps), rel=1e-12)


def test_kd_weight_one_computes_the_distillation_loss_alone():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))

    def no_cross_entropy(*_):
        raise AssertionError("kd_weight = 1 must not compute a cross-entropy")
    assert torch.equal(kd_mixture(s, t, y, 1.0, no_cross_entropy), distillation_loss(s, t))
    with pytest.raises(ValueError, match="kd_weight in"):
        fit(torch.nn.Linear(2, 2), [], [], epochs=1, kd_weight=1.5)


def test_config_accepts_airbench_and_names_a_wrong_teacher_or_weight():
    cfg = load_profile("ci", {"teacher_model": "airbench", "kd_weight": 0.5})
    assert (cfg["teacher_model"], cfg["kd_weight"]) == ("airbench", 0.5)
    with pytest.raises(ValueError, match=r"'teacher_model' = 'airbnch'.*'airbench'"):
        load_profile("ci", {"teacher_model": "airbnch"})
    with pytest.raises(ValueError, match=r"'kd_weight' = 1.5: must lie in \[0, 1\]"):
        load_profile("ci", {"kd_weight": 1.5})


# ----------------------------------------------------------------- wiring
def test_one_teacher_configuration_for_every_student_of_a_seed():
    base = load_profile("ci", {"distill": True, "teacher_model": "airbench", "teacher_epochs": 3, "teacher_width": 4})
    other = {**base, "lr": 0.01, "kd_weight": 0.5, "two_step": True, "label_smoothing": 0.1, "teacher_lr": 0.3,
             "teacher_batch_size": 7, "width": 16, "teacher_min_val_top1": 50.0}
    name, t_cfg, opts = teacher_config(base)
    assert (name, opts) == ("airbench", {}) and teacher_config(other)[1] == t_cfg
    assert not t_cfg["distill"] and (t_cfg["epochs"], t_cfg["width"], t_cfg["kd_weight"]) == (3, 4, 1.0)
    assert teacher_config({**base, "seed": 1})[1] != t_cfg  # one teacher per seed
    recipe = airbench_recipe(t_cfg)
    assert (recipe.epochs, recipe.width_scale, recipe.batch_size, recipe.lr) == (3.0, 4 / 64, 1024, 1.5)
    assert airbench_config(base) == t_cfg


def test_the_registered_teacher_averages_the_mirror_view_in_eval_mode_only():
    model = build_from_params({"model": "airbench", "num_classes": 10, "width": 4})
    assert isinstance(model, TeacherNet) and [b.conv2.out_channels for b in model.blocks] == [4, 16, 16]
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    assert torch.allclose(model(x), 0.5 * (model(x, tta=False) + model(x.flip(-1), tta=False)))
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), model(x, tta=False))
    with pytest.raises(ValueError, match="its own recipe"):
        train_run(load_profile("ci"), "01_baseline", "airbench", "teacher-airbench")


def _through_bytes(state: dict) -> dict:
    """A state as a checkpoint holds it: saved and loaded back with weights_only (tensors and literals)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_a_resumed_loop_ends_on_the_bits_of_an_uninterrupted_one():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (48,), generator=g)
    kw = dict(width_scale=0.125, batch_size=16, epochs=3, whiten_bias_epochs=1, lookahead_every=2, seed=3, tta=True)
    straight, _ = train_teacher(images, labels, **kw)
    states = []
    train_teacher(images, labels, **kw, on_epoch=lambda s: states.append(_through_bytes(s)))
    assert [s["epoch"] for s in states] == [1, 2, 3]
    for saved in states[:2]:
        resumed, history = train_teacher(images, labels, **kw, resume=saved)
        assert len(history["epochs"]) == 3 and resumed.tta
        for k, v in straight.state_dict().items():
            assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(ValueError, match="recipe"):
        train_teacher(images, labels, **{**kw, "seed": 4}, resume=states[0])


# ----------------------------------------------------------------- recorded runs on real images
def _runs(tmp_path, step="01_baseline"):
    return [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / step).glob("*/metrics.json")]


@pytest.mark.slow
def test_airbench_teacher_run_serves_the_students_of_its_seed(tmp_path, data_root, monkeypatch):
    # 103 images per class: 1,030 training images, one batch of 1,024 per teacher epoch
    cfg = load_profile("ci", {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False,
                              "width": 4, "train_per_class": 103, "test_per_class": 2, "distill": True,
                              "teacher_model": "airbench", "teacher_width": 4, "teacher_epochs": 2})
    monkeypatch.setenv(DEADLINE_ENV, "1")  # long past: the teacher stops after its first, checkpointed epoch
    with pytest.raises(DeadlineReached, match="after epoch 1/2 of the airbench teacher"):
        train_recipe(cfg, "01_baseline", "reactnet18")
    monkeypatch.delenv(DEADLINE_ENV)
    lines = []
    _, run = train_recipe(cfg, "01_baseline", "reactnet18", log=lines.append)
    assert any(line.startswith("resumed from") for line in lines)
    teacher = next(r for r in _runs(tmp_path) if r["variant"] == VARIANT)
    assert run.params["teacher_run"] == teacher["run_id"] and teacher["forward"] == "flip TTA"
    assert teacher["train_images"] == 1030 and teacher["epochs"] == 2 and "top1" in teacher
    t_run = next(p for p in (tmp_path / "results" / "runs" / "01_baseline").iterdir() if VARIANT in p.name)
    params = json.loads((t_run / "params.json").read_text())["identity"]
    assert params["data"]["train"] == run.identity["data"]["train"]  # the student's training split, exactly
    # what later steps load is what was measured: the TTA forward's top-1 on the same loader
    from mvlib.study.records import run_from_dir
    from mvlib.study.run_setup import loaders
    from mvlib.train import evaluate
    loaded = load_run_model(run_from_dir(t_run))
    assert evaluate(loaded, loaders(cfg)[1])["top1"] == teacher["val_top1"]
    # a second student of the seed reuses the teacher; a threshold above it stops the study
    train_recipe({**cfg, "kd_weight": 0.5}, "01_baseline", "birealnet18")
    assert sum(r["variant"] == VARIANT for r in _runs(tmp_path)) == 1
    with pytest.raises(TeacherTooWeak, match="below teacher_min_val_top1"):
        train_recipe({**cfg, "teacher_min_val_top1": 99.9}, "01_baseline", "reactnet18")
    assert sum(r["variant"] == VARIANT for r in _runs(tmp_path)) == 1  # the threshold is no part of its identity
    assert isinstance(build_teacher("airbench", width=4), TeacherNet)
