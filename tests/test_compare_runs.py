"""tools/compare_runs.py: pairing across codes and why a pair differs."""
import importlib.util
import json

import pandas as pd

from mvlib.environment import REPO_ROOT

spec = importlib.util.spec_from_file_location("compare_runs", REPO_ROOT / "tools" / "compare_runs.py")
cr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cr)


def _rows(*rows):
    return pd.DataFrame([dict(zip(("key", "run_id", "source", "threads", "top1", "val_top1"), r)) for r in rows])


def test_a_difference_is_own_on_the_same_threads_else_threads_or_upstream():
    new = _rows(("a", "A", None, 1, 50.0, 49.0), ("b", "B", None, 1, 40.0, 41.0), ("c", "C", "B", 1, 30.0, 31.0),
                ("d", "D", None, 1, 20.0, 21.0), ("e", "E", None, 2, 10.0, 11.0))
    old = _rows(("a", "A0", None, 1, 50.0, 49.0), ("b", "B0", None, 2, 40.5, 41.0), ("c", "C0", "B0", 1, 29.0, 31.0),
                ("d", "D0", None, 1, 20.0, 21.5), ("z", "Z0", None, 1, 1.0, 1.0))
    j = cr.compare(new, old).set_index("run_id")
    assert list(j.index) == ["A", "B", "C", "D"]  # E has no twin
    assert j.loc["A", "same"] and j.loc["A", "why"] == ""
    assert j.loc["B", "why"] == "threads"    # 2 threads then, 1 now: another float order
    assert j.loc["C", "why"] == "upstream"   # starts from B, which differs
    assert j.loc["D", "why"] == "own"        # same threads, same start: the run itself moved


def test_keys_new_since_the_reference_pair_only_at_their_defaults(tmp_path):
    def write(root, name, params):
        d = root / "01_baseline" / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({"identity": {"params": {"profile": "cpu", **params}}}))
    new, old = tmp_path / "new", tmp_path / "old"
    write(old, "r0", {"lr": 0.001})
    write(new, "r1", {"lr": 0.001, "compile": False, "kd_weight": 1.0})
    assert cr.new_default_keys(new, old, "cpu") == {"compile", "kd_weight"}
    write(new, "r2", {"lr": 0.001, "compile": True, "kd_weight": 1.0})  # one run off its default: kept in the key
    assert cr.new_default_keys(new, old, "cpu") == {"kd_weight"}
    ident = {"params": {"lr": 0.001, "compile": False, "init_run": "20261207-163138-reactnet18-baseline-46caeb1a1d"}}
    assert cr._key(ident, frozenset({"compile"})) == cr._key(
        {"params": {"lr": 0.001, "init_run": "20261207-223013-reactnet18-baseline-7eac357410"}})
