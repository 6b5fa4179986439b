"""Notebooks 02-04 under papermill with the ci profile (after notebook 01 in the same results folder)."""
import json

import pytest

NOTEBOOKS = ["02_naive_majority_voter", "03_mv_retraining", "04_hierarchical_voter"]


def execute(name, results, out_dir):
    import papermill as pm
    from mvlib import pipeline
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


def test_notebooks_02_to_04_ci(ci_results, tmp_path):
    for name in NOTEBOOKS:
        execute(name, ci_results, tmp_path)
    m02 = metrics(ci_results, "02_naive_majority_voter")
    variants = {(m["model"], m["variant"]) for m in m02}
    for model in ("reactnet18", "birealnet18"):
        for v in ("naive", "naive-alpha", "naive-matched", "naive+recal"):
            assert (model, v) in variants
    assert all(m["profile"] == "ci" and m.get("evaluation_only") for m in m02)
    m03 = {(m["model"], m["variant"]) for m in metrics(ci_results, "03_mv_retraining")}
    assert {("reactnet18", "retrain-approx"), ("reactnet18", "retrain-ste"), ("birealnet18", "retrain-approx"),
            ("birealnet18", "retrain-ste")} <= m03
    m04 = {m["variant"] for m in metrics(ci_results, "04_hierarchical_voter")}
    assert {"hmv-g4-tiepos-naive", "hmv-g2-tieneg-naive", "hmv-g2-tiefirst-naive+recal",
            "hmv-g4-tiepos-retrain-approx", "hmv-g4x2-tiepos-naive"} <= m04
    assert (ci_results / "tables" / "04_hierarchical_voter_disagreement_ci.csv").is_file()
    assert (ci_results / "tables" / "02_naive_majority_voter_sensitivity_ci.csv").is_file()
    summary = (ci_results / "summary.csv").read_text()
    assert "naive+recal" in summary and "hmv-g4-tiepos-retrain-approx" in summary
    # a second run of 02 reuses every evaluation record instead of adding rows
    before = len(metrics(ci_results, "02_naive_majority_voter"))
    execute(NOTEBOOKS[0], ci_results, tmp_path)
    assert len(metrics(ci_results, "02_naive_majority_voter")) == before
