"""Notebook 01 under papermill (ci profile) and the pipeline's failure handling."""
import json
import time

import nbformat
import pytest

from mvlib.study import pipeline


def test_notebook01_ci_via_pipeline(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    results = tmp_path / "results"
    logs = []
    done = pipeline.run_pipeline("ci", only=["01"], overrides={"results_dir": str(results)}, log=logs.append)
    assert [d["step"] for d in done] == ["01_baseline"]
    out = results / "notebooks" / "ci"
    assert (out / "01_baseline.ipynb").is_file() and (out / "01_baseline.html").is_file()
    html = (out / "01_baseline.html").read_text()
    assert "data:image/png;base64" in html  # curves embedded: self-contained
    metrics = [json.loads(p.read_text()) for p in results.glob("runs/01_baseline/*/metrics.json")]
    assert sorted((m["model"], m["seed"]) for m in metrics) == [("birealnet18", 0), ("birealnet18", 1),
                                                                ("reactnet18", 0), ("reactnet18", 1)]
    assert all(m["profile"] == "ci" and m["variant"] == "baseline" for m in metrics)
    # live progress: one line per epoch of every run, streamed from the kernel
    assert any(line.startswith("[01_baseline]") and "reactnet18 seed 1: epoch 1/1" in line and "elapsed" in line
               for line in logs)
    # rerun: the step is skipped, nothing recomputed
    logs.clear()
    pipeline.run_pipeline("ci", only=["01"], overrides={"results_dir": str(results)}, log=logs.append)
    assert any("skipped" in line for line in logs)
    # other code: the step runs again (and its runs are new: their identity holds the code hash)
    logs.clear()
    monkeypatch.setattr(pipeline, "code_hash", lambda: "feedfacefeedface")
    assert pipeline.step_key(pipeline.NOTEBOOK_DIR / "01_baseline.ipynb", {"profile": "ci"}) != json.loads(
        (out / "01_baseline.done.json").read_text())["hash"]
    monkeypatch.undo()
    # a record an earlier step wrote changed: the later step's inputs changed
    before = pipeline.upstream_digest(results, "02_naive_majority_voter")
    m = next(results.glob("runs/01_baseline/*/metrics.json"))
    m.write_text(m.read_text().replace('"profile"', '"profile" ', 1))
    assert pipeline.upstream_digest(results, "02_naive_majority_voter") != before
    assert pipeline.upstream_digest(results, "01_baseline") == pipeline.upstream_digest(results, "01_x")


def test_unknown_parameter_rejected_before_work(tmp_path):
    with pytest.raises(KeyError, match="unknown configuration key 'epoks'"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path), "epoks": 1})
    assert not any(tmp_path.iterdir())
    with pytest.raises(TypeError, match="must be int"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path), "width": "8"})


def test_injected_unknown_parameter_fails_in_notebook(tmp_path, data_root, monkeypatch):
    # papermill itself only warns; the notebook's config cell must stop it
    import papermill as pm
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    with pytest.raises(pm.PapermillExecutionError, match="epoks"):
        pm.execute_notebook(str(pipeline.NOTEBOOK_DIR / "01_baseline.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "ci", "epoks": 1, "results_dir": str(tmp_path)},
                            kernel_name=pipeline.KERNEL_NAME, progress_bar=False, cwd=str(pipeline.REPO_ROOT))


def test_failed_step_names_notebook_and_cell_and_keeps_earlier_steps(tmp_path, monkeypatch, tiny_notebooks):
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1", "02_bad": "raise RuntimeError('boom in step two')"})
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    results = tmp_path / "results"
    with pytest.raises(pipeline.StepFailed, match=r"step 02_bad failed in cell In \[3\] \(.raise RuntimeError.*\): RuntimeError: boom in step two"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, log=lambda s: None)
    out = results / "notebooks" / "ci"
    assert (out / "01_ok.done.json").is_file() and (out / "02_bad.failed.ipynb").is_file()
    assert not (out / "02_bad.ipynb").exists()
    # fixed, the rerun continues from the failed step
    nb = nbformat.read(nbdir / "02_bad.ipynb", as_version=4)
    nb.cells[1].source = "y = 2"
    nbformat.write(nb, nbdir / "02_bad.ipynb")
    logs = []
    pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, log=logs.append)
    assert any("[01_ok] unchanged" in line and "skipped" in line for line in logs)
    assert (out / "02_bad.ipynb").is_file() and not (out / "02_bad.failed.ipynb").exists()


def _timed_notebooks(write, nbdir, stamps, sources):
    write(nbdir, {name: f"import os, time, json\nt0 = time.time()\n{src}\n"
                        f"open({str(stamps)!r} + '/{name}.json', 'w').write(json.dumps("
                        f"[t0, time.time(), os.environ.get('MVLIB_THREADS_FILE')]))"
                  for name, src in sources.items()})


def test_parallel_steps_follow_reads_and_timing_step_runs_alone(tmp_path, monkeypatch, tiny_notebooks):
    # 01 and 06 read nothing: they overlap; 02 reads 01; 05 (timing) runs alone on every core; the report last
    nbdir, stamps = tmp_path / "notebooks", tmp_path / "stamps"
    stamps.mkdir()
    _timed_notebooks(tiny_notebooks, nbdir, stamps, {"01_a": "time.sleep(4)", "02_b": "time.sleep(1)",
                                                     "05_t": "time.sleep(1)", "06_c": "time.sleep(4)",
                                                     "99_report": "pass"})
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    results = tmp_path / "results"
    logs = []

    def log(line):  # kept for the assertions, printed for a failure's report
        logs.append(line)
        print(line)
    done = pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, jobs=2, log=log)
    assert [d["step"] for d in done] == ["01_a", "02_b", "06_c", "05_t", "99_report"]
    t = {p.stem: json.loads(p.read_text()) for p in stamps.glob("*.json")}
    assert t["06_c"][0] < t["01_a"][1] and t["01_a"][0] < t["06_c"][1]  # ran at the same time
    assert t["02_b"][0] >= t["01_a"][1]  # after what it reads
    others = [v for k, v in t.items() if k != "05_t"]
    assert all(v[1] <= t["05_t"][0] or v[0] >= t["05_t"][1] for v in others)  # alone
    assert t["99_report"][0] >= max(v[1] for k, v in t.items() if k != "99_report")
    # the notebooks beside others follow a thread budget; the timing step keeps every core
    assert t["01_a"][2] and t["06_c"][2] and t["05_t"][2] is None
    last = json.loads((results / "notebooks" / "ci" / "pipeline_last.json").read_text())
    assert last["jobs"] == 2 and set(last["step_seconds"]) == set(t)
    assert all("started_utc" in d for d in done)
    # a failing step: nothing new starts, the running ones finish, the error names it
    nb = nbformat.read(nbdir / "02_b.ipynb", as_version=4)
    nb.cells[1].source = "raise RuntimeError('boom')"
    nbformat.write(nb, nbdir / "02_b.ipynb")
    logs.clear()
    with pytest.raises(pipeline.StepFailed, match=r"02_b"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, jobs=2, force=True, log=log)
    assert any("boom" in line for line in logs)


def test_a_step_that_takes_a_finished_steps_place_leaves_the_survivors_budget_alone(tmp_path, monkeypatch,
                                                                                   tiny_notebooks):
    # 2 cores, 2 jobs: when 01 ends, 02 takes its slot in the same round; 06 must keep its 1 thread throughout
    # (re-splitting before 02 started handed 06 both cores until its next epoch, beside 02: a 65 s epoch
    # instead of 8 s in a smoke run). Once 02 ends and nothing is left to start, 06 gets both cores.
    nbdir, stamps = tmp_path / "notebooks", tmp_path / "stamps"
    stamps.mkdir()
    watch = (f"import os, time, json\nf, seen, t_end = os.environ['MVLIB_THREADS_FILE'], [], time.time() + 60\n"
             f"while time.time() < t_end and not (seen and seen[-1][1] == '2' and os.path.exists("
             f"{str(stamps)!r} + '/02_b.json')):\n"
             f"    seen.append((time.time(), open(f).read().strip()))\n    time.sleep(0.05)\n"
             f"open({str(stamps)!r} + '/06_c.seen.json', 'w').write(json.dumps(seen))")
    _timed_notebooks(tiny_notebooks, nbdir, stamps, {"01_a": "time.sleep(1)", "02_b": "time.sleep(1)"})
    tiny_notebooks(nbdir, {"06_c": watch})
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(pipeline, "_cores", lambda: 2)
    write = pipeline._write_budget

    def slow_disk(path, threads):  # each budget write takes 0.3 s, as when its sync queued behind checkpoints
        write(path, threads)
        time.sleep(0.3)
    monkeypatch.setattr(pipeline, "_write_budget", slow_disk)
    pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "results")}, jobs=2, log=lambda s: None)
    t = {name: json.loads((stamps / f"{name}.json").read_text()) for name in ("01_a", "02_b")}
    seen = json.loads((stamps / "06_c.seen.json").read_text())
    between = [v for when, v in seen if t["01_a"][1] < when < t["02_b"][0]]
    assert between and set(between) == {"1"}, between  # 01's end to 02's start: no re-split in between
    assert {v for when, v in seen if when < t["02_b"][1]} == {"1"}
    assert seen[-1][1] == "2"  # alone at last: every core


def test_notebook_09_waits_for_03_and_04_only_when_it_reuses_their_runs(tmp_path):
    from mvlib.study.config import load_profile
    cpu, paper = load_profile("cpu"), load_profile("paper")
    assert pipeline.reads("09_voter_pareto", cfg=cpu) == ["01"]  # its own recipe and splits: starts after 01
    assert pipeline.reads("09_voter_pareto", cfg=paper) == ["01", "03", "04"]  # 03/04's runs are its points
    assert pipeline.reads("09_voter_pareto") == ["01"]
    # and what it read decides whether an executed notebook is still current
    runs = tmp_path / "runs" / "04_hierarchical_voter" / "r"
    runs.mkdir(parents=True)
    before = pipeline.upstream_digest(tmp_path, "09_voter_pareto", paper)
    (runs / "metrics.json").write_text("{}")
    assert pipeline.upstream_digest(tmp_path, "09_voter_pareto", paper) != before
    assert pipeline.upstream_digest(tmp_path, "09_voter_pareto", cpu) == pipeline.upstream_digest(
        tmp_path, "09_voter_pareto")
