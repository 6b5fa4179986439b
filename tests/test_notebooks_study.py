"""The study notebooks under papermill with the ci profile (after notebook 01 in the same results folder)."""
import json

import pytest

NOTEBOOKS = ["02_naive_majority_voter", "03_mv_retraining", "04_hierarchical_voter"]


def execute(name, results, out_dir):
    import papermill as pm
    from mvlib.study import pipeline
    pm.execute_notebook(str(pipeline.NOTEBOOK_DIR / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                        parameters={"profile": "ci", "results_dir": str(results), "progress": False},
                        kernel_name=pipeline.KERNEL_NAME, progress_bar=False, cwd=str(pipeline.REPO_ROOT))


@pytest.fixture(scope="session")
def ci_results(tmp_path_factory, data_root):
    """A results folder holding notebook 01's ci baselines (run once per session)."""
    import os
    os.environ["MVLIB_DATA"] = str(data_root)  # the kernel inherits it
    root = tmp_path_factory.mktemp("voters_ci")
    results = root / "results"
    execute("01_baseline", results, root)
    return results


def metrics(results, step):
    return [json.loads(p.read_text()) for p in results.glob(f"runs/{step}/*/metrics.json")]


@pytest.mark.slow
def test_notebooks_02_to_04_ci(ci_results, tmp_path):
    for name in NOTEBOOKS:
        execute(name, ci_results, tmp_path)
    m02 = metrics(ci_results, "02_naive_majority_voter")
    variants = {(m["model"], m["variant"]) for m in m02}
    for model in ("reactnet18", "birealnet18"):
        for v in ("naive", "naive-alpha", "naive-matched", "naive+recal"):
            assert (model, v) in variants
    assert all(m["profile"] == "ci" and m.get("evaluation_only") for m in m02)
    # main rows on every seed of the profile (ci: 0 and 1), with validation and test numbers
    assert {m["seed"] for m in m02 if m["variant"] == "naive+recal"} == {0, 1}
    assert all("val_top1" in m and "top1" in m for m in m02)
    m03 = {(m["model"], m["variant"]) for m in metrics(ci_results, "03_mv_retraining")}
    assert {("reactnet18", "retrain-approx"), ("reactnet18", "retrain-ste"), ("birealnet18", "retrain-approx"),
            ("birealnet18", "retrain-ste")} <= m03
    seeds03 = {(m["variant"], m["seed"]) for m in metrics(ci_results, "03_mv_retraining")}
    assert {("retrain-approx", 0), ("retrain-approx", 1), ("retrain-ste", 0)} <= seeds03
    assert ("retrain-ste", 1) not in seeds03  # ablations on sweep_seeds only
    sweep = [m for m in metrics(ci_results, "04_hierarchical_voter") if m["variant"].endswith("naive")]
    assert sweep and all("top1" not in m and m["val_images"] == 50 for m in sweep)  # sweeps: validation only
    m04 = {m["variant"] for m in metrics(ci_results, "04_hierarchical_voter")}
    assert {"hmv-g4-tiepos-naive", "hmv-g2-tieneg-naive", "hmv-g2-tiefirst-naive+recal",
            "hmv-g4-tiepos-retrain-approx", "hmv-g4x2-tiepos-naive"} <= m04
    assert (ci_results / "tables" / "04_hierarchical_voter_disagreement_ci.csv").is_file()
    assert (ci_results / "tables" / "02_naive_majority_voter_sensitivity_ci.csv").is_file()
    summary = (ci_results / "summary.csv").read_text()
    assert "naive+recal" in summary and "hmv-g4-tiepos-retrain-approx" in summary
    header = summary.splitlines()[0].split(",")
    assert {"seeds", "top1_std", "top1_ci95", "top5_std", "top5_ci95"} <= set(header)
    # a second run of 02 reuses every evaluation record instead of adding rows
    before = len(metrics(ci_results, "02_naive_majority_voter"))
    execute(NOTEBOOKS[0], ci_results, tmp_path)
    assert len(metrics(ci_results, "02_naive_majority_voter")) == before


@pytest.mark.slow
def test_notebooks_05_07_and_report_ci(ci_results, tmp_path):
    """Kernels (incl. the trained-model agreement), hardware cost from the cache, then the report."""
    import nbformat
    for name in ("05_kernels", "07_hardware_cost", "09_voter_pareto", "99_report"):
        execute(name, ci_results, tmp_path)
    nb = nbformat.read(tmp_path / "05_kernels.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") if o.get("output_type") == "stream" else json.dumps(o.get("data", {}))
                     for c in nb.cells for o in c.get("outputs", []))
    assert "0 of 100 predictions differ" in text  # ci test subset: 100 images, bit kernels == float simulation
    assert (ci_results / "hw" / "ci" / "deck_m512.csv").is_file()
    report = nbformat.read(tmp_path / "99_report.ipynb", as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in report.cells], ensure_ascii=False)
    # the report's tables: human headers, the deck beside ours, a verdict per section
    assert "Deck top-1 (%)" in shown and "Design (N = 512 inputs)" in shown and "ReActNet-18" in shown
    assert "Verdict" in shown
    from mvlib.environment import code_hash
    if any(m.get("code_hash") == code_hash() and m.get("variant") == "naive"
           for m in metrics(ci_results, "02_naive_majority_voter")):
        # notebook 02 ran on this code first (the report shows the records of the running code only)
        assert "substitution costs accuracy" in shown
    if any(m.get("code_hash") == code_hash() for m in metrics(ci_results, "03_mv_retraining")):
        assert "retrained through the voter" in shown and "G = 4" in shown
    # notebook 09: every point on every seed (ci: 0 and 1), trees and the control width, and its report section
    import pandas as pd
    runs = pd.read_csv(ci_results / "tables" / "09_voter_pareto_runs_ci.csv")
    assert set(runs.seed) == {0, 1} and {"popcount w8", "popcount w4", "MV", "MV w4"} <= set(runs.point)
    assert any(p.startswith("tree 2x2 tie") for p in runs.point) and (runs.kind == "hmv").sum() == 2 * 2 * 2
    m09 = metrics(ci_results, "09_voter_pareto")
    assert {m["variant"] for m in m09} >= {"baseline-w4", "w4-retrain-approx", "popcount-w8"}
    assert "Does an approximate voter beat the narrower popcount network at equal cost?" in shown
