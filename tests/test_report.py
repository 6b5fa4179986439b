"""The report: tables from records only, rendered self-contained, opened in headless Chromium."""
import shutil
import subprocess

import pytest

from mvlib.study import pipeline, records, report
from mvlib.study.config import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _fake_runs(results):
    """Two models' main rows written through the real record path (numbers are test fixtures)."""
    for model, variant, top1 in [("reactnet18", "baseline", 60.0), ("reactnet18", "naive", 30.0),
                                 ("reactnet18", "retrain-approx", 58.0), ("birealnet18", "baseline", 55.0),
                                 ("reactnet18", "retrain-ste", 57.0), ("reactnet18", "hmv-g4-tiepos-naive", 25.0)]:
        step = {"baseline": "01_baseline", "retrain-approx": "03_mv_retraining", "retrain-ste": "03_mv_retraining"}.get(variant, "02_naive_majority_voter" if not variant.startswith("hmv") else "04_hierarchical_voter")
        run = records.open_run(step, model, variant, {"profile": "ci", "seed": 0}, results)
        run.write_history([{"epoch": 1, "train_loss": 2.0, "test_top1": top1 - 5},
                           {"epoch": 2, "train_loss": 1.5, "test_top1": top1}])
        run.finish({"model": model, "variant": variant, "profile": "ci", "dataset": "cifar10", "top1": top1,
                    "top5": 90.0, "seconds": 1.0, "test_images": 1000})


def test_main_table_from_records(tmp_path):
    results = tmp_path / "results"
    _fake_runs(results)
    t = report.main_table(results, "ci")
    assert list(t["variant"][:6]) == ["baseline", "naive", "retrain-approx", "baseline", "naive", "retrain-approx"]
    r = t[(t.model == "reactnet18") & (t.variant == "baseline")].iloc[0]
    assert r["deck top1"] == 93.38 and r["ours top1"] == 60.0 and r["Δ top1"] == pytest.approx(-33.38)
    assert r["± (s.e. or std)"] == pytest.approx(1.55, abs=0.01)  # sqrt(.6*.4/1000)
    assert "retrain-ste" in set(t["variant"])
    assert report.hmv_table(results, "ci")["G"].tolist() == ["4"]


def test_report_renders_and_opens_in_chromium(tmp_path):
    results = tmp_path / "results"
    _fake_runs(results)
    out = results / "notebooks" / "ci"
    out.mkdir(parents=True)
    pipeline.run_step("99_report", "ci", {"results_dir": str(results)}, out, log=lambda s: None)
    html = out / "99_report.html"
    text = html.read_text()
    assert "<table" in text and "deck top1" in text and "data:image/png;base64" in text
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    _check_in_chromium(html)


def _check_in_chromium(html):
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run", "--dump-dom",
                          f"file://{html}"], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") >= 2, "tables missing from the rendered DOM"
    assert "deck top1" in dom and "ours top1" in dom


@pytest.mark.skipif(not (REPO_ROOT / "results" / "report.html").is_file(), reason="no committed report yet")
def test_committed_report_opens_in_chromium():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    _check_in_chromium(REPO_ROOT / "results" / "report.html")
