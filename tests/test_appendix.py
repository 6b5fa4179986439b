"""Notebook 06's comparison (mvlib.study.appendix) on synthetic run records, and notebook 06 under papermill."""
import json
import math

import pytest

from mvlib.study import appendix
from mvlib.study.config import load_profile
from mvlib.study.deck import deck_numbers
from mvlib.study.records import write_json

MODELS = ["xnornet18", "birealnet18", "reactnet18", "reactneta"]
VARIANTS = ["bn", "nobn", "bnfree"]


def _record(results, model, dataset, variant, top1, stamp="20260101-000000", profile="cpu", n=10000, width=8):
    """A finished run folder of step 06_bn_free as train_run would leave it (metrics + params)."""
    run_id = f"{stamp}-{model}-{variant}-{abs(hash((model, dataset, variant, stamp, profile))) % 10**10:010d}"
    d = results / "runs" / appendix.STEP / run_id
    write_json(d / "params.json", {"model": model, "variant": variant, "dataset": dataset, "width": width,
                                   "profile": profile})
    write_json(d / "metrics.json", {"model": model, "variant": variant, "dataset": dataset, "profile": profile,
                                    "top1": top1, "top5": min(100.0, top1 + 20), "seconds": 1.0, "epochs": 3,
                                    "test_images": n, "train_images": 1000, "step": appendix.STEP,
                                    "run_id": run_id})
    return run_id


def _deck_like(results, dataset="cifar10", shift=-40.0, **kw):
    """Records that are the deck's numbers moved by ``shift`` (the deck's pattern, lower)."""
    for r in deck_numbers("appendix").query("dataset == @dataset").itertuples():
        _record(results, r.model, r.dataset, r.variant, r.top1 + shift, **kw)


def test_table_has_the_decks_layout_and_differences(tmp_path):
    _deck_like(tmp_path, "cifar10", shift=-40.0)
    table = appendix.appendix_table(tmp_path, "cpu")
    assert list(table.index) == ["XNORNet-18", "Bi-RealNet-18", "ReActNet-18", "ReActNet-A"]
    assert list(table.columns[:3]) == [("CIFAR-10", "BN", "deck"), ("CIFAR-10", "BN", "ours"), ("CIFAR-10", "BN", "Δ")]
    assert [c[1] for c in table.columns[::3]][:3] == ["BN", "w/o BN", "BN-Free"]
    assert table.loc["XNORNet-18", ("CIFAR-10", "w/o BN", "deck")] == pytest.approx(71.75)
    assert table.loc["XNORNet-18", ("CIFAR-10", "w/o BN", "ours")] == pytest.approx(31.75)
    assert table.loc["ReActNet-A", ("CIFAR-10", "BN-Free", "Δ")] == pytest.approx(-40.0)
    # CIFAR-100 has no runs: the deck's numbers stay, ours are NaN
    assert table.loc["ReActNet-18", ("CIFAR-100", "BN", "deck")] == pytest.approx(68.78)
    assert math.isnan(table.loc["ReActNet-18", ("CIFAR-100", "BN", "ours")])


def test_latest_run_per_cell_wins_and_profile_filters(tmp_path):
    _record(tmp_path, "reactnet18", "cifar10", "bn", 30.0, stamp="20260101-000000")
    _record(tmp_path, "reactnet18", "cifar10", "bn", 35.0, stamp="20260102-000000")
    _record(tmp_path, "reactnet18", "cifar10", "bn", 99.0, stamp="20260103-000000", profile="ci")
    res = appendix.appendix_results(tmp_path, "cpu").set_index(["model", "dataset", "variant"])
    row = res.loc[("reactnet18", "cifar10", "bn")]
    assert row.top1 == 35.0 and row.run_id.startswith("20260102")
    assert row.se == pytest.approx(100 * math.sqrt(0.35 * 0.65 / 10000))
    assert row.width == 8
    assert appendix.appendix_results(tmp_path, "ci").set_index(["model", "dataset", "variant"]).loc[
        ("reactnet18", "cifar10", "bn")].top1 == 99.0
    assert len(res) == 24 and res.top1.notna().sum() == 1  # the deck's grid, ours where run


def test_empty_results_dir(tmp_path):
    res = appendix.appendix_results(tmp_path / "nothing", "cpu")
    assert len(res) == 24 and res.top1.isna().all()
    assert "nothing to compare" in appendix.pattern_statement(res)


def test_pattern_statement_recognizes_the_decks_pattern(tmp_path):
    _deck_like(tmp_path, "cifar10", shift=-40.0)
    res = appendix.appendix_results(tmp_path, "cpu")
    s = appendix.pattern_summary(res).set_index("model")
    assert s.loc["xnornet18", "drop"] == pytest.approx(90.21 - 71.75)
    assert s.loc["xnornet18", "deck_drop"] == pytest.approx(90.21 - 71.75)
    assert s.loc["reactnet18", "recovered"] == pytest.approx((92.08 - 90.33) / (92.31 - 90.33))
    assert s.loc["xnornet18", "drop_clear"] and s.loc["xnornet18", "gain_clear"]
    text = appendix.pattern_statement(res)
    assert "CIFAR-10" in text and "CIFAR-100" not in text  # no CIFAR-100 runs: not judged
    assert "the deck's pattern appears:" in text
    assert "BN-Free beats w/o BN clearly for 4 of 4 networks" in text


def test_pattern_statement_says_when_the_pattern_is_absent_or_noise(tmp_path):
    # ReActNet-18 loses most without BN: the opposite of the deck
    for model, tops in {"xnornet18": (30, 29, 29.5), "birealnet18": (30, 29, 29.5),
                        "reactnet18": (40, 20, 25), "reactneta": (30, 30, 30)}.items():
        for v, t in zip(VARIANTS, tops):
            _record(tmp_path, model, "cifar10", v, float(t))
    text = appendix.pattern_statement(appendix.appendix_results(tmp_path, "cpu"))
    assert "does not appear" in text
    # the same differences on 100 test images are noise
    small = tmp_path / "small"
    for model, tops in {"xnornet18": (30, 27, 28), "birealnet18": (30, 27, 28),
                        "reactnet18": (30, 29, 29), "reactneta": (30, 30, 30)}.items():
        for v, t in zip(VARIANTS, tops):
            _record(small, model, "cifar10", v, float(t), n=100)
    text = appendix.pattern_statement(appendix.appendix_results(small, "cpu"))
    assert "within noise" in text and "only weakly" in text and "clearly for 0 of 4" in text


def test_cell_settings_and_missing_data(tmp_path):
    cfg = load_profile("cpu", {"data_dir": str(tmp_path)})
    s10, s100 = appendix.cell_settings(cfg, "cifar10"), appendix.cell_settings(cfg, "cifar100")
    assert s10["train_file"] == "train.npz" and s100["train_file"] == cfg["cifar100_train_file"]
    assert s10["train_per_class"] == cfg["appendix_train_per_class"]
    assert s100["test_per_class"] == cfg["appendix_cifar100_test_per_class"]
    assert s100["val_per_class"] == cfg["cifar100_val_per_class"] and s10["val_per_class"] == cfg["val_per_class"]
    assert s10["batch_size"] == (cfg["appendix_batch_size"] or cfg["batch_size"]) and cfg["batch_size"] == 128
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "test.npz").write_bytes(b"")
    why = appendix.data_missing(cfg, "cifar100")
    assert why is not None and "train_subset.npz" in why and "test.npz" not in why
    assert "holds neither" in appendix.data_missing(cfg, "cifar10")  # no cifar10/ and no npz at the root


def test_notebook06_ci(tmp_path, data_root, monkeypatch):
    """Notebook 06 end to end under papermill at the ci profile: 24 records, the table, the statement."""
    import papermill as pm
    from mvlib.study import pipeline
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    results = tmp_path / "results"
    out = tmp_path / "06.ipynb"
    pm.execute_notebook(str(pipeline.NOTEBOOK_DIR / "06_bn_free.ipynb"), str(out),
                        parameters={"profile": "ci", "results_dir": str(results), "progress": False},
                        kernel_name="mvlib", progress_bar=False, cwd=str(pipeline.REPO_ROOT))
    metrics = [json.loads(p.read_text()) for p in results.glob(f"runs/{appendix.STEP}/*/metrics.json")]
    have_c100 = (data_root / "cifar100" / "train_subset.npz").is_file()
    datasets = ["cifar10", "cifar100"] if have_c100 else ["cifar10"]
    assert sorted((m["model"], m["variant"], m["dataset"]) for m in metrics) == sorted(
        (m, v, d) for m in MODELS for v in VARIANTS for d in datasets)
    assert all(m["profile"] == "ci" for m in metrics)
    params = [json.loads(p.read_text())["identity"]["params"]
              for p in results.glob(f"runs/{appendix.STEP}/*bnfree*/params.json")]
    params = {p["model"]: p for p in params}
    assert params["reactneta"]["width"] == 2 and params["reactnet18"]["width"] == 4  # relative widths recorded
    assert params["reactnet18"]["agc_clip"] == 0.02
    text = out.read_text()
    assert "XNORNet-18" in text and "Top-1 lost without BN" in text and "image/png" in text
