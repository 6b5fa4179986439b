"""Intervals over seeds, paired and Welch differences, verdicts; summary rows over seeds."""
import math

import pytest
from scipy import stats as st

from mvlib.study.stats import Interval, UNRESOLVED, contains, paired, t_interval, verdict, welch
from mvlib.study.summary import select, summary_rows


def test_t_interval_matches_the_closed_form():
    iv = t_interval([50.0, 52.0, 54.0])
    assert iv.mean == 52.0 and iv.std == pytest.approx(2.0) and iv.n == 3
    assert iv.half == pytest.approx(st.t.ppf(0.975, 2) * 2.0 / math.sqrt(3))  # 4.303 * 2 / sqrt(3) = 4.97
    one = t_interval([50.0])
    assert one.mean == 50.0 and math.isnan(one.half) and verdict(one) == UNRESOLVED


def test_paired_uses_common_seeds_only():
    base = {0: 55.0, 1: 56.0, 2: 54.0}
    naive = {0: 20.0, 1: 22.0, 3: 99.0}
    iv = paired(base, naive)
    assert iv.n == 2 and iv.mean == pytest.approx(34.5)


def test_welch_against_scipy():
    a, b = [10.0, 12.0, 11.0, 13.0], [5.0, 9.0, 7.0]
    iv = welch(a, b)
    res = st.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert iv.lo == pytest.approx(ci.low) and iv.hi == pytest.approx(ci.high)


def test_verdicts():
    assert verdict(t_interval([3.0, 4.0, 5.0])) == "yes"
    assert verdict(t_interval([-3.0, -4.0, -5.0])) == "no"
    assert verdict(t_interval([-1.0, 1.0, 0.5])) == UNRESOLVED
    assert contains(t_interval([3.0, 4.0, 5.0]), 1.0) == "below"
    assert contains(t_interval([3.0, 4.0, 5.0]), 4.2) == "inside"


def _row(run_id, seed, top1, group="g1", **kw):
    return {"step": "01_baseline", "run_id": run_id, "model": "reactnet18", "variant": "baseline", "profile": "ci",
            "dataset": "cifar10", "seed": seed, "top1": top1, "top5": 90.0, "val_top1": top1 - 1, "group": group,
            "code_hash": "c", "test_images": 1000, "seconds": 1.0, **kw}


def test_summary_rows_average_the_latest_run_of_each_seed():
    rows = [_row("20260101-a", 0, 50.0), _row("20260101-b", 1, 52.0), _row("20260101-c", 2, 54.0),
            _row("20260102-a", 0, 56.0),  # a forced rerun of seed 0: the latest counts
            _row("20260101-z", 0, 10.0, group="g2")]
    out = {r["group"]: r for r in summary_rows(rows)}
    g1 = out["g1"]
    assert g1["seeds"] == 3 and g1["seed_list"] == "0 1 2" and g1["top1"] == pytest.approx(54.0)
    assert g1["top1_std"] == pytest.approx(2.0) and g1["top1_ci95"] == pytest.approx(4.9683, abs=1e-3)
    assert out["g2"]["seeds"] == 1 and out["g2"]["top1_ci95"] is None and out["g2"]["top1_se_test"] > 0
    # select: the newest matching group only, never a mix of configurations
    assert {r["group"] for r in select(rows, step="01", model="reactnet18", variant="baseline", profile="ci",
                                       code=None)} == {"g1"}


def test_p_value_and_holm_against_the_closed_form():
    from scipy import stats as st
    from mvlib.study.stats import holm, p_value
    a = t_interval([1.0, 2.0, 3.0])
    assert p_value(a) == pytest.approx(st.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue)
    w = welch([5.0, 6.0, 7.5], [1.0, 2.0, 2.5])
    assert p_value(w) == pytest.approx(st.ttest_ind([5.0, 6.0, 7.5], [1.0, 2.0, 2.5], equal_var=False).pvalue)
    # Holm: p = .001, .02, .04 with m = 3 -> .001 <= .05/3 (yes), .02 <= .05/2 (yes), .04 <= .05 (yes);
    # p = .001, .03, .04 -> the second fails .025, so it and the third are not resolved
    def iv_with_p(p, sign=1.0):
        z = st.norm.isf(p / 2)
        return Interval(sign * z, 1.0, st.norm.ppf(0.975), 10)  # se 1, normal: p-value p
    assert holm([iv_with_p(.001), iv_with_p(.02, -1), iv_with_p(.04)]) == ["yes", "no", "yes"]
    assert holm([iv_with_p(.001), iv_with_p(.03), iv_with_p(.04)]) == ["yes", UNRESOLVED, UNRESOLVED]
    assert holm([None, Interval(1.0, math.nan, math.nan, 1)]) == [UNRESOLVED, UNRESOLVED]


def test_the_floor_rule():
    from mvlib.study.stats import FLOOR_MARGIN, at_floor
    assert at_floor(10.0) and at_floor(10.0 + FLOOR_MARGIN) and not at_floor(12.5)
    assert at_floor(2.5, classes=100) and not at_floor(3.5, classes=100)
