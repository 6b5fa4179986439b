"""Notebook 06's comparison (mvlib.study.appendix) on synthetic run records, and notebook 06 under papermill."""
import json
import math

import pytest

from mvlib.study import appendix, appendix_report, records
from mvlib.study.config import load_profile
from mvlib.study.deck import deck_numbers
from mvlib.study.report import records_of
from mvlib.study.stats import AT_FLOOR
from mvlib.study.summary import binomial_se
from scipy import stats as st

MODELS = ["xnornet18", "birealnet18", "reactnet18", "reactneta"]
VARIANTS = ["bn", "nobn", "bnfree"]


def _record(results, model, dataset, variant, top1, seed=0, profile="cpu", n=10000, epochs=3):
    """A finished record of step 06_bn_free written through the real record path (numbers are fixtures)."""
    params = {"profile": profile, "seed": seed, "dataset": dataset, "epochs": epochs}
    with records.claim_run(appendix.STEP, model, variant, params, {}, results) as run:
        run.finish({"model": model, "variant": variant, "dataset": dataset, "profile": profile, "top1": top1,
                    "top5": min(100.0, top1 + 20), "val_top1": top1, "seconds": 1.0, "epochs": epochs,
                    "test_images": n, "train_images": 1000})


def _deck_like(results, dataset="cifar10", shift=-40.0, seeds=(0,), jitter=0.5, **kw):
    """Records that are the deck's numbers moved by ``shift`` (the deck's pattern, lower), one per seed."""
    for r in deck_numbers("appendix").query("dataset == @dataset").itertuples():
        for seed in seeds:
            _record(results, r.model, r.dataset, r.variant, r.top1 + shift + jitter * seed, seed=seed, **kw)


def _results(results, profile="cpu"):
    return appendix_report.appendix_results(records_of(results, profile), profile)


def test_table_has_the_decks_layout_and_differences(tmp_path):
    _deck_like(tmp_path, "cifar10", shift=-40.0)
    table = appendix_report.appendix_table(_results(tmp_path))
    assert list(table.index) == ["XNORNet-18", "Bi-RealNet-18", "ReActNet-18", "ReActNet-A"]
    assert list(table.columns[:4]) == [("CIFAR-10", "BN", "deck"), ("CIFAR-10", "BN", "ours"),
                                       ("CIFAR-10", "BN", "± 95 %"), ("CIFAR-10", "BN", "Δ")]
    assert table.loc["XNORNet-18", ("CIFAR-10", "w/o BN", "deck")] == pytest.approx(71.75)
    assert table.loc["XNORNet-18", ("CIFAR-10", "w/o BN", "ours")] == pytest.approx(31.75)
    assert table.loc["ReActNet-A", ("CIFAR-10", "BN-Free", "Δ")] == pytest.approx(-40.0)
    # one seed: the interval is the test set's (1.96 binomial s.e.)
    assert table.loc["XNORNet-18", ("CIFAR-10", "w/o BN", "± 95 %")] == pytest.approx(
        1.959964 * 100 * math.sqrt(0.3175 * 0.6825 / 10000), rel=1e-4)
    assert math.isnan(table.loc["ReActNet-18", ("CIFAR-100", "BN", "ours")])


def test_latest_run_per_seed_wins_and_profile_filters(tmp_path):
    _record(tmp_path, "reactnet18", "cifar10", "bn", 30.0, seed=0)
    _record(tmp_path, "reactnet18", "cifar10", "bn", 99.0, seed=0, profile="ci")
    res = _results(tmp_path).set_index(["model", "dataset", "variant"])
    assert res.loc[("reactnet18", "cifar10", "bn")].top1 == 30.0
    assert _results(tmp_path, "ci").set_index(["model", "dataset", "variant"]).loc[
        ("reactnet18", "cifar10", "bn")].top1 == 99.0
    assert len(res) == 24 and res.top1.notna().sum() == 1  # the deck's grid, ours where run


def test_empty_results_dir(tmp_path):
    res = _results(tmp_path / "nothing")
    assert len(res) == 24 and res.top1.isna().all()
    assert "nothing to compare" in appendix_report.pattern_statement(res)


def test_pattern_recognized_with_seeds(tmp_path):
    _deck_like(tmp_path, "cifar10", shift=-40.0, seeds=(0, 1, 2))
    res = _results(tmp_path)
    s = appendix_report.pattern_summary(res).set_index("model")
    assert s.loc["xnornet18", "drop"] == pytest.approx(90.21 - 71.75)
    assert s.loc["xnornet18", "seeds"] == 3 and s.loc["xnornet18", "drop_verdict"] == "yes"
    assert s.loc["reactnet18", "gain_verdict"] == "yes"
    iv = appendix_report.contrast(appendix_report.pattern_summary(res), "cifar10", "birealnet18")
    assert iv.mean == pytest.approx((89.12 - 71.30) - (92.31 - 90.33))
    text = appendix_report.pattern_statement(res)
    assert "CIFAR-10" in text and "CIFAR-100" not in text  # no CIFAR-100 runs: not judged
    assert "at this scale: **yes**" in text


def test_pattern_says_no_and_not_resolved(tmp_path):
    # ReActNet-18 loses most without BN, the opposite of the deck, on three seeds with small spread
    for seed in (0, 1, 2):
        for model, tops in {"xnornet18": (30, 29, 29.5), "birealnet18": (30, 29, 29.5),
                            "reactnet18": (40, 20, 25), "reactneta": (30, 30, 30)}.items():
            for v, t in zip(VARIANTS, tops):
                _record(tmp_path, model, "cifar10", v, float(t) + 0.3 * seed * (v == "bn"), seed=seed)
    text = appendix_report.pattern_statement(_results(tmp_path))
    assert "at this scale: **no**" in text
    # one seed on 100 test images: every difference is inside the test set's noise
    small = tmp_path / "small"
    for model, tops in {"xnornet18": (30, 27, 28), "birealnet18": (30, 27, 28),
                        "reactnet18": (30, 29, 29), "reactneta": (30, 30, 30)}.items():
        for v, t in zip(VARIANTS, tops):
            _record(small, model, "cifar10", v, float(t), n=100)
    text = appendix_report.pattern_statement(_results(small))
    assert "1 seed: test sampling only" in text and "not resolved at 95 %" in text


def test_floor_margin_is_reported(tmp_path):
    for v, t in zip(VARIANTS, (40.0, 20.0, 30.0)):
        _record(tmp_path, "reactnet18", "cifar10", v, t)
    _record(tmp_path, "reactnet18", "cifar10", appendix.FLOOR, 25.0)
    s = appendix_report.pattern_summary(_results(tmp_path)).set_index("model")
    assert s.loc["reactnet18", "floor_margin"] == pytest.approx(-5.0)
    assert "at or below the floor" in appendix_report.pattern_statement(_results(tmp_path))


def test_cell_settings_cells_and_missing_data(tmp_path):
    cfg = load_profile("cpu", {"data_dir": str(tmp_path)})
    s10, s100 = appendix.cell_settings(cfg, "cifar10"), appendix.cell_settings(cfg, "cifar100")
    assert s10["train_file"] == "train.npz" and s100["train_file"] == cfg["cifar100_train_file"]
    assert s10["train_per_class"] == cfg["appendix_train_per_class"]
    assert s100["test_per_class"] == cfg["appendix_cifar100_test_per_class"]
    assert s100["val_per_class"] == cfg["cifar100_val_per_class"] and s10["val_per_class"] == cfg["val_per_class"]
    assert s10["batch_size"] == (cfg["appendix_batch_size"] or cfg["batch_size"]) and cfg["batch_size"] == 128
    grid = appendix.cells(cfg)
    assert len(grid) == 24
    seeds = {(m, n, d): s for m, n, d, s in grid}
    assert seeds[("reactnet18", "none", "cifar10")] == cfg["appendix_seeds"]
    assert seeds[("reactnet18", "none", "cifar100")] == cfg["appendix_seeds"][:1]
    assert seeds[("xnornet18", "bn", "cifar10")] == cfg["appendix_seeds"][:1]
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "test.npz").write_bytes(b"")
    why = appendix.data_missing(cfg, "cifar100")
    assert why is not None and "train_subset.npz" in why and "test.npz" not in why
    assert "holds neither" in appendix.data_missing(cfg, "cifar10")  # no cifar10/ and no npz at the root


@pytest.mark.slow
def test_notebook06_ci(tmp_path, data_root, monkeypatch):
    """Notebook 06 end to end under papermill at the ci profile: every cell and seed, the floors, the statement."""
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
    cells = {(m["model"], m["variant"], m["dataset"], m["seed"]) for m in metrics}
    for m in MODELS:
        for d in datasets:
            assert (m, appendix.FLOOR, d, 0) in cells
            for v in VARIANTS:
                assert (m, v, d, 0) in cells
    assert ("reactnet18", "nobn", "cifar10", 1) in cells and ("xnornet18", "nobn", "cifar10", 1) not in cells
    assert all(m["profile"] == "ci" for m in metrics)
    params = [json.loads(p.read_text())["identity"]["params"]
              for p in results.glob(f"runs/{appendix.STEP}/*bnfree*/params.json")]
    params = {p["model"]: p for p in params}
    assert params["reactneta"]["width"] == 2 and params["reactnet18"]["width"] == 4  # relative widths recorded
    assert params["reactnet18"]["agc_clip"] == 0.02
    assert (results / "tables" / "06_bn_free_branch_ratios_ci.csv").is_file()
    text = out.read_text()
    assert "XNORNet-18" in text and "loses" in text and "image/png" in text


def test_one_common_seed_is_compared_on_that_seed_and_borrows_the_seed_spread(tmp_path):
    a = [{"seed": 0, "top1": 50.0, "test_images": 10000}, {"seed": 2, "top1": 70.0, "test_images": 10000}]
    b = [{"seed": 2, "top1": 60.0, "test_images": 10000}]
    d = appendix_report.difference(a, b)
    assert d.mean == pytest.approx(10.0)  # seed 2 against seed 2, not the first run listed
    assert d.half == pytest.approx(1.959964 * math.hypot(binomial_se(70.0, 10000), binomial_se(60.0, 10000)), rel=1e-5)
    wide = appendix_report.difference(a, b, seed_var=(1.0, 4))
    assert wide.half == pytest.approx(st.t.ppf(0.975, 4) * math.sqrt(1.0 + d.std ** 2)) and wide.df == 4
    pairs = [([{"seed": s, "top1": x} for s, x in enumerate(xs)], [{"seed": s, "top1": 0.0} for s in range(3)])
             for xs in ((1.0, 2.0, 3.0), (5.0, 5.0, 8.0))]
    var, df = appendix_report.pooled_seed_variance(pairs)
    assert df == 4 and var == pytest.approx((2 * 1.0 + 2 * 3.0) / 4)


def test_a_contrast_at_chance_says_nothing(tmp_path):
    # w/o BN at chance for Bi-RealNet-18 and XNORNet-18: "loses more than ReActNet-18" cannot be judged
    for seed in (0, 1, 2):
        for model, tops in {"xnornet18": (40, 10.5, 30), "birealnet18": (40, 10.2, 30),
                            "reactnet18": (40, 30, 35), "reactneta": (30, 30, 30)}.items():
            for v, t in zip(VARIANTS, tops):
                _record(tmp_path, model, "cifar10", v, float(t) + 0.3 * seed, seed=seed)
    summary = appendix_report.pattern_summary(_results(tmp_path))
    verdicts = appendix_report.contrast_verdicts(summary)
    assert verdicts[("cifar10", "birealnet18")][1] == AT_FLOOR and verdicts[("cifar10", "xnornet18")][1] == AT_FLOOR
    assert f"at this scale: **{AT_FLOOR}**" in appendix_report.pattern_statement(_results(tmp_path))


def test_the_appendix_downsample_key_builds_the_official_shortcut():
    from mvlib.models import build_model
    from mvlib.models.resnet18 import BinaryWeightConv2d
    cfg = load_profile("ci")
    assert appendix.downsample_options(cfg, "reactnet18") == {}           # real: the parameters of before
    paper = load_profile("paper")
    assert paper["appendix_downsample"] == "weights"
    opts = appendix.downsample_options(paper, "birealnet18")
    assert opts == {"binary_downsample": "weights"} and appendix.downsample_options(paper, "reactneta") == {}
    net = build_model("birealnet18", width=8, **opts)
    assert any(isinstance(m, BinaryWeightConv2d) for m in net.modules())
    with pytest.raises(ValueError, match="appendix_downsample"):
        load_profile("ci", {"appendix_downsample": "float"})
