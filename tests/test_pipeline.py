"""Notebook 01 under papermill (ci profile) and the pipeline's failure handling."""
import json
import os
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
    m.write_text(m.read_text().replace('"profile" ', '"profile"', 1))


@pytest.mark.slow
def test_a_fresh_clone_reruns_nothing_or_exactly_the_weights_it_needs(tmp_path, data_root, monkeypatch):
    """A current study executes nothing and writes nothing; a step that must run brings back the weights it
    reads (a clone has the records, not the checkpoints) by re-executing the step that trained them."""
    import shutil

    from mvlib.study import records
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    results = tmp_path / "results"
    over = {"results_dir": str(results)}
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=lambda s: None)
    out = results / "notebooks" / "ci"
    step02 = "02_naive_majority_voter"
    trained = sorted(p.parent.name for p in results.glob("runs/01_baseline/*/metrics.json"))
    assert pipeline.runs_without_weights(results, "01") == []
    # an older study's record (another code hash) is read by no step: deleting it changes no digest
    old = results / "runs" / "01_baseline" / "20000101-000000-reactnet18-baseline-0123456789"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({"code_hash": "0" * 16, "top1": 1.0}))
    digest = pipeline.upstream_digest(results, step02)
    shutil.rmtree(old)
    assert pipeline.upstream_digest(results, step02) == digest
    # nothing changed: nothing executes, the timing record is not rewritten
    pipeline_last = out / "pipeline_last.json"
    pipeline_last.write_text("{}")
    logs = []
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=logs.append)
    assert pipeline_last.read_text() == "{}" and any("nothing to run" in line for line in logs)
    # the weights are gone (a fresh clone): a step that reads them puts their step first in the plan
    shutil.rmtree(results / "checkpoints")
    assert pipeline.runs_without_weights(results, "01") == trained
    chosen, restore = pipeline.plan_steps([step02], "ci", over, out, all_steps=pipeline.steps())
    assert chosen == ["01_baseline", step02] and restore == {"01_baseline": trained}
    # current steps need nothing: the same plan without a step that executes adds nothing
    assert pipeline.plan_steps(["01_baseline"], "ci", over, out) == (["01_baseline"], {})
    # --rerun trains exactly the runs without weights again; the older records stay
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=lambda s: None, rerun=True)
    assert pipeline.runs_without_weights(results, "01") == []
    assert len(list(results.glob("runs/01_baseline/*/metrics.json"))) == 2 * len(trained)
    rows = (results / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + len({records.run_from_dir(results / "runs" / "01_baseline" / r).identity["params"]
                                 ["model"] for r in trained})  # one row per configuration: the latest per seed


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    (runs / "metrics.json").write_text(json.dumps({"code_hash": pipeline.code_hash()}))
    assert pipeline.upstream_digest(tmp_path, "09_voter_pareto", paper) != before
    assert pipeline.upstream_digest(tmp_path, "09_voter_pareto", cpu) == pipeline.upstream_digest(
        tmp_path, "09_voter_pareto")


def test_a_second_pipeline_on_the_same_results_is_refused(tmp_path, monkeypatch, tiny_notebooks):
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1"}))
    out = tmp_path / "results" / "notebooks" / "ci"
    out.mkdir(parents=True)
    with pipeline._results_lock(out):
        with pytest.raises(pipeline.PipelineBusy, match=rf"another pipeline \(pid {os.getpid()} since .*\) is "
                                                          rf"running on {out}"):
            pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "results")}, log=lambda s: None)
    assert not (out / "01_ok.done.json").exists()


@pytest.mark.slow
def test_killing_a_parallel_pipeline_stops_its_steps_and_their_kernels(tmp_path, tiny_notebooks):
    # kill -9 of the parent (no cleanup can run there): each child step gets SIGTERM from the kernel
    # (PR_SET_PDEATHSIG) and stops its notebook's kernel; the next pipeline starts at once and removes the
    # killed one's scratch files
    import signal
    import subprocess
    import sys

    import psutil
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_a": "import time\ntime.sleep(300)",
                                                    "06_b": "import time\ntime.sleep(300)"})
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "mvlib.study.pipeline", "--profile", "ci", "--jobs", "2", "--notebook-dir",
           str(nbdir), "--set", f"results_dir={results}"]
    parent = subprocess.Popen(cmd, cwd=str(pipeline.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(parent.pid)
    deadline = time.time() + 120
    while time.time() < deadline:  # two children, each with its kernel
        family = proc.children(recursive=True)
        if sum("ipykernel" in " ".join(p.cmdline()) for p in family if p.is_running()) == 2:
            break
        time.sleep(0.5)
    else:
        parent.kill()
        pytest.fail("the two steps' kernels did not start")
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(family, timeout=60)
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
    out = results / "notebooks" / "ci"
    assert list(out.glob(".threads-*"))  # left by the killed parent
    with pipeline._results_lock(out):  # the lock is free at once, and taking it removes the leftovers
        assert not list(out.glob(".threads-*")) and not list(out.glob(".*.progress.log"))


def test_a_results_folder_that_is_a_file_is_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "results"
    bad.write_text("not a folder")
    assert pipeline.main(["--profile", "ci", "--set", f"results_dir={bad}", "--only", "07"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Not a directory: ") and str(bad) in err and len(err.splitlines()) == 1
