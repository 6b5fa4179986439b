"""The long profile (configs/long.yaml), its estimate and the rules of its recipe probe (tools/probe_long.py)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from mvlib.environment import REPO_ROOT
from mvlib.study.config import load_profile, recipe_for
from mvlib.study.estimate import calibration, count, in_study, read_anchor
from mvlib.study.pipeline import profile_steps
from mvlib.study.steps import StepGraph

spec = importlib.util.spec_from_file_location("probe_long", REPO_ROOT / "tools" / "probe_long.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_long_profile_validates_and_names_known_steps():
    cfg = load_profile("long")
    steps = profile_steps(StepGraph(), cfg["study_steps"])  # raises on an unknown step
    assert [s[:2] for s in steps] == ["01", "02", "03", "04", "99"]
    assert (cfg["width"], cfg["train_per_class"], cfg["val_per_class"], cfg["test_per_class"]) == (32, 0, 500, 0)
    assert cfg["artifacts"] and cfg["study_jobs"] == 1
    assert (cfg["hmv_groups"], cfg["hmv_retrain_groups"], cfg["hmv_nested"]) == ([4], [4], [])
    react, bireal = recipe_for(cfg, "reactnet18"), recipe_for(cfg, "birealnet18")
    assert (react["two_step"], react["distill"], react["teacher_model"], react["batch_size"]) == (
        True, True, "airbench", 256)
    assert (bireal["two_step"], bireal["distill"], bireal["batch_size"], bireal["label_smoothing"]) == (
        False, False, 512, 0.1)
    assert bireal["lr"] == pytest.approx(probe.bireal_lr(react["lr"], cfg))  # rule (d) holds in the profile


def test_the_estimate_counts_the_profiles_steps_and_the_teachers_forward():
    cfg = load_profile("long")
    rows = count(cfg).rows
    assert {s for (s, *_) in rows} == {"01_baseline", "02_naive_majority_voter", "03_mv_retraining",
                                       "04_hierarchical_voter"}
    assert not in_study(cfg, "08_voter_drop") and in_study(load_profile("cpu"), "08_voter_drop")
    n = 45000 * recipe_for(cfg, "reactnet18")["epochs"]  # the distilled student's images, each through the teacher
    assert rows[("01_baseline", "eval", "airbench", 64, "none")] == n
    assert rows[("01_baseline", "train", "airbench", 64, "none")] == 10 * 45000


def test_calibration_scales_to_the_recorded_idle_rate(tmp_path):
    path = tmp_path / "anchor.json"
    assert read_anchor(path) is None
    path.write_text(json.dumps({"anchors": [{"cpu": "X", "cpus": 2, "threads": 2, "train_img_s": 120.0}]}))
    anchor = read_anchor(path, cpu="X", cpus=2)
    assert anchor["train_img_s"] == 120.0 and read_anchor(path, cpu="X", cpus=4) is None
    assert calibration(anchor, [30.0, 50.0]) == pytest.approx(3.0)
    committed = read_anchor(cpu="AMD EPYC", cpus=2)  # the 2-core VM's idle ReActNet-18, width 64, batch 128
    assert (committed["model"], committed["width"], committed["batch"], committed["threads"]) == (
        "reactnet18", 64, 128, 2) and committed["train_img_s"] > 0


def test_probe_help_runs():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "probe_long.py"), "--help"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "--max-hours" in out.stdout and "--stages" in out.stdout


def test_choose_lr_takes_the_best_then_the_profiles_then_the_smaller():
    rows = [{"factor": f, "lr": 1e-3 * f, "val_top1": v} for f, v in ((0.5, 80.0), (1.0, 81.0), (2.0, 82.5))]
    assert probe.choose_lr(rows)["factor"] == 2.0
    rows[2]["val_top1"] = 81.0  # a tie with the profile's own lr
    assert probe.choose_lr(rows)["factor"] == 1.0
    rows[1]["val_top1"] = 70.0  # a tie without it: the smaller
    rows[0]["val_top1"] = 81.0
    assert probe.choose_lr(rows)["factor"] == 0.5


def test_choose_kd_a_tie_keeps_cross_entropy():
    assert probe.choose_kd(85.2, 85.1) and not probe.choose_kd(85.1, 85.2) and not probe.choose_kd(85.0, 85.0)


def test_validation_noise_and_curve_reading():
    assert probe.validation_noise(85.0, 85.0, 5000) == pytest.approx(100 * 1.96 * (2 * 0.85 * 0.15 / 5000) ** 0.5)
    curve = [(100.0, 50.0), (200.0, 60.0), (400.0, 70.0)]
    assert probe.value_at(curve, 50.0) == 50.0 and probe.value_at(curve, 300.0) == 65.0
    assert probe.value_at(curve, 900.0) == 70.0
    # last quarter: 300 -> 400 CPU s, 65 -> 70 points: 5 points per 100 s = 180 points per CPU hour
    assert probe.end_slope(curve) == pytest.approx(180.0)


def _curve(points, seconds=3600.0):
    """Evenly spaced epochs over ``seconds`` CPU seconds."""
    return [(seconds * (i + 1) / len(points), v) for i, v in enumerate(points)]


def test_choose_width_keeps_64_unless_32_is_ahead_beyond_noise_and_still_climbing():
    w64 = _curve([70.0, 78.0, 82.0, 84.0])
    noise = probe.validation_noise(84.0, 86.0, 5000)  # ~1.4 points
    # ahead by 2 points and climbing faster at the end: 32
    w32 = _curve([60.0, 70.0, 75.0, 78.0, 80.0, 81.0, 82.0, 83.0, 84.0, 84.5, 85.2, 86.0])
    r = probe.choose_width(w64, w32, 5000)
    assert r["top1_32"] - r["top1_64"] > noise and r["climbing"] and r["width"] == 32
    # ahead by less than the noise: 64
    w32_close = _curve([60.0, 70.0, 75.0, 78.0, 80.0, 81.0, 82.0, 83.0, 83.5, 84.0, 84.4, 85.0])
    r = probe.choose_width(w64, w32_close, 5000)
    assert not r["ahead"] and r["width"] == 64
    # ahead beyond the noise but flat at the end while 64 still climbs: 64
    w32_flat = _curve([80.0, 84.0, 86.0, 86.0, 86.0, 86.0, 86.0, 86.0])
    r = probe.choose_width(w64, w32_flat, 5000)
    assert r["ahead"] and not r["climbing"] and r["width"] == 64
    # the same end slope counts as climbing as fast (a tie), and 32 ahead: 32
    w32_same = [(c, v + 3.0) for c, v in w64]
    r = probe.choose_width(w64, w32_same, 5000)
    assert r["slope_32"] == pytest.approx(r["slope_64"]) and r["width"] == 32
    # level with 64 (no gain at all) is not ahead: 64
    w32_edge = [(c, v) for c, v in w64]
    r = probe.choose_width(w64, w32_edge, 5000)
    assert r["top1_32"] == r["top1_64"] and r["width"] == 64
    # a width-32 run that ended before the width-64 budget is read at its end
    r = probe.choose_width(w64, _curve([80.0, 86.0], seconds=1800.0), 5000)
    assert r["top1_32"] == 86.0
