"""Notebook 01 under papermill (ci profile), the pipeline's failure handling, and its scheduler."""
import json
import os
import time
from functools import partial

import nbformat
import pytest

from mvlib.environment import REPO_ROOT
from mvlib.study import pipeline, runner, scheduler
from mvlib.study.scheduler import Scheduler, StepStatus
from mvlib.study.steps import StepGraph


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
    graph = StepGraph()
    assert StepGraph(code_hash=lambda: "feedfacefeedface").step_key(graph.notebook("01_baseline"), {"profile": "ci"}) \
        != json.loads((out / "01_baseline.done.json").read_text())["hash"]
    # a record an earlier step wrote changed: the later step's inputs changed
    before = graph.upstream_digest(results, "02_naive_majority_voter")
    m = next(results.glob("runs/01_baseline/*/metrics.json"))
    m.write_text(m.read_text().replace('"profile"', '"profile" ', 1))
    assert graph.upstream_digest(results, "02_naive_majority_voter") != before
    assert graph.upstream_digest(results, "01_baseline") == graph.upstream_digest(results, "01_x")
    m.write_text(m.read_text().replace('"profile" ', '"profile"', 1))


@pytest.mark.slow
def test_a_fresh_clone_reruns_nothing_or_exactly_the_weights_it_needs(tmp_path, data_root, monkeypatch):
    """A current study executes nothing and writes nothing; a step that must run brings back the weights it
    reads (a clone has the records, not the checkpoints) by re-executing the step that trained them."""
    import shutil

    from mvlib.study import records
    monkeypatch.setenv("MVLIB_DATA", str(data_root))
    graph = StepGraph()
    results = tmp_path / "results"
    over = {"results_dir": str(results)}
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=lambda s: None)
    out = results / "notebooks" / "ci"
    step02 = "02_naive_majority_voter"
    trained = sorted(p.parent.name for p in results.glob("runs/01_baseline/*/metrics.json"))
    assert graph.runs_without_weights(results, "01") == []
    # an older study's record (another code hash) is read by no step: deleting it changes no digest
    old = results / "runs" / "01_baseline" / "20000101-000000-reactnet18-baseline-0123456789"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({"code_hash": "0" * 16, "top1": 1.0}))
    digest = graph.upstream_digest(results, step02)
    shutil.rmtree(old)
    assert graph.upstream_digest(results, step02) == digest
    # nothing changed: nothing executes, the timing record is not rewritten
    pipeline_last = out / "pipeline_last.json"
    pipeline_last.write_text("{}")
    logs = []
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=logs.append)
    assert pipeline_last.read_text() == "{}" and any("nothing to run" in line for line in logs)
    # the weights are gone (a fresh clone): a step that reads them puts their step first in the plan
    shutil.rmtree(results / "checkpoints")
    assert graph.runs_without_weights(results, "01") == trained
    chosen, restore = graph.plan_steps([step02], "ci", over, out, all_steps=graph.steps())
    assert chosen == ["01_baseline", step02] and restore == {"01_baseline": trained}
    # current steps need nothing: the same plan without a step that executes adds nothing
    assert graph.plan_steps(["01_baseline"], "ci", over, out) == (["01_baseline"], {})
    # --rerun trains exactly the runs without weights again; the older records stay
    pipeline.run_pipeline("ci", only=["01"], overrides=over, log=lambda s: None, rerun=True)
    assert graph.runs_without_weights(results, "01") == []
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
        pm.execute_notebook(str(StepGraph().notebook("01_baseline")), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "ci", "epoks": 1, "results_dir": str(tmp_path)},
                            kernel_name=runner.KERNEL_NAME, progress_bar=False, cwd=str(REPO_ROOT))


def test_failed_step_names_notebook_and_cell_and_keeps_earlier_steps(tmp_path, tiny_notebooks):
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1", "02_bad": "raise RuntimeError('boom in step two')"})
    results = tmp_path / "results"
    with pytest.raises(pipeline.StepFailed, match=r"step 02_bad failed in cell In \[3\] \(.raise RuntimeError.*\): RuntimeError: boom in step two"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, log=lambda s: None, notebook_dir=nbdir)
    out = results / "notebooks" / "ci"
    assert (out / "01_ok.done.json").is_file() and (out / "02_bad.failed.ipynb").is_file()
    assert not (out / "02_bad.ipynb").exists()
    # fixed, the rerun continues from the failed step
    nb = nbformat.read(nbdir / "02_bad.ipynb", as_version=4)
    nb.cells[1].source = "y = 2"
    nbformat.write(nb, nbdir / "02_bad.ipynb")
    logs = []
    pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, log=logs.append, notebook_dir=nbdir)
    assert any("[01_ok] unchanged" in line and "skipped" in line for line in logs)
    assert (out / "02_bad.ipynb").is_file() and not (out / "02_bad.failed.ipynb").exists()


def test_a_missing_appendix_dataset_stops_the_study_before_any_work(tmp_path, tiny_notebooks, data_root,
                                                                      monkeypatch):
    from mvlib.study.config import load_profile
    data = tmp_path / "data"
    (data / "cifar100").mkdir(parents=True)
    (data / "cifar10").symlink_to(data_root / "cifar10")
    (data / "cifar100" / "test.npz").symlink_to(data_root / "cifar100" / "test.npz")  # its train file is missing
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1", "06_appendix": "y = 2"})
    results = tmp_path / "results"
    with pytest.raises(Exception, match=r"notebook 06 needs cifar100: .*lacks train_subset.npz.*"
                                        r'--set appendix_datasets=\["cifar10"\]'):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results), "data_dir": str(data)},
                              log=lambda s: None, notebook_dir=nbdir)
    assert not (results / "notebooks" / "ci" / "01_ok.done.json").exists()
    # left out as the error says, the study runs
    pipeline.run_pipeline("ci", overrides={"results_dir": str(results), "data_dir": str(data),
                                           "appendix_datasets": ["cifar10"]}, log=lambda s: None, notebook_dir=nbdir)
    assert (results / "notebooks" / "ci" / "06_appendix.done.json").is_file()
    # no data folder at all (torchvision): nothing is missing from a folder, the notebook decides
    from mvlib import data as mvdata
    monkeypatch.setattr(mvdata, "resolve_data_dir", lambda *a: None)
    runner.check_appendix_data({**load_profile("ci"), "appendix_datasets": ["cifar10", "cifar100"]})


def test_executed_notebooks_name_their_paths_inside_the_checkout(tmp_path, tiny_notebooks, monkeypatch):
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1"})
    pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "results")}, log=lambda s: None,
                          notebook_dir=nbdir)
    meta = nbformat.read(tmp_path / "results" / "notebooks" / "ci" / "01_ok.ipynb", as_version=4).metadata.papermill
    assert meta["input_path"] == "notebooks/01_ok.ipynb"
    assert meta["output_path"] == "results/notebooks/ci/01_ok.ipynb"


def test_a_profile_runs_the_steps_it_names_only(tmp_path, tiny_notebooks):
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_a": "x = 1", "02_b": "x = 2", "99_report": "x = 3"})
    results = tmp_path / "results"
    pipeline.run_pipeline("ci", overrides={"results_dir": str(results), "study_steps": ["01", "99_report"]},
                          log=lambda s: None, notebook_dir=nbdir)
    out = results / "notebooks" / "ci"
    assert sorted(p.name for p in out.glob("*.done.json")) == ["01_a.done.json", "99_report.done.json"]
    with pytest.raises(ValueError, match=r"study_steps names unknown step\(s\) \['07'\]"):
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results), "study_steps": ["07"]},
                              log=lambda s: None, notebook_dir=nbdir)


def _timed_notebooks(write, nbdir, stamps, sources):
    write(nbdir, {name: f"import os, time, json\nt0 = time.time()\n{src}\n"
                        f"open({str(stamps)!r} + '/{name}.json', 'w').write(json.dumps("
                        f"[t0, time.time(), os.environ.get('MVLIB_THREADS_FILE')]))"
                  for name, src in sources.items()})


@pytest.mark.slow
def test_parallel_steps_follow_reads_and_timing_step_runs_alone(tmp_path, tiny_notebooks):
    # 01 and 06 read nothing: they overlap; 02 reads 01; 05 (timing) runs alone on every core; the report last
    nbdir, stamps = tmp_path / "notebooks", tmp_path / "stamps"
    stamps.mkdir()
    _timed_notebooks(tiny_notebooks, nbdir, stamps, {"01_a": "time.sleep(4)", "02_b": "time.sleep(1)",
                                                     "05_t": "time.sleep(1)", "06_c": "time.sleep(4)",
                                                     "99_report": "pass"})
    results = tmp_path / "results"
    logs = []

    def log(line):  # kept for the assertions, printed for a failure's report
        logs.append(line)
        print(line)
    done = pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, jobs=2, log=log, notebook_dir=nbdir)
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
        pipeline.run_pipeline("ci", overrides={"results_dir": str(results)}, jobs=2, force=True, log=log,
                              notebook_dir=nbdir)
    assert any("boom" in line for line in logs)


@pytest.mark.slow
def test_a_step_that_takes_a_finished_steps_place_leaves_the_survivors_budget_alone(tmp_path, tiny_notebooks):
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

    def slow_disk(path, threads):  # each budget write takes 0.3 s, as when its sync queued behind checkpoints
        scheduler.write_budget(path, threads)
        time.sleep(0.3)
    pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "results")}, jobs=2, log=lambda s: None,
                          notebook_dir=nbdir, make_scheduler=partial(Scheduler, cores=2, write_budget=slow_disk))
    t = {name: json.loads((stamps / f"{name}.json").read_text()) for name in ("01_a", "02_b")}
    seen = json.loads((stamps / "06_c.seen.json").read_text())
    between = [v for when, v in seen if t["01_a"][1] < when < t["02_b"][0]]
    assert between and set(between) == {"1"}, between  # 01's end to 02's start: no re-split in between
    assert {v for when, v in seen if when < t["02_b"][1]} == {"1"}
    assert seen[-1][1] == "2"  # alone at last: every core


def test_notebook_09_waits_for_03_and_04_only_when_it_reuses_their_runs(tmp_path):
    from mvlib.study.config import load_profile
    cpu, paper = load_profile("cpu"), load_profile("paper")
    graph = StepGraph()
    assert graph.reads("09_voter_pareto", cfg=cpu) == ["01"]  # its own recipe and splits: starts after 01
    assert graph.reads("09_voter_pareto", cfg=paper) == ["01", "03", "04"]  # 03/04's runs are its points
    assert graph.reads("09_voter_pareto") == ["01"]
    # and what it read decides whether an executed notebook is still current
    runs = tmp_path / "runs" / "04_hierarchical_voter" / "r"
    runs.mkdir(parents=True)
    before = graph.upstream_digest(tmp_path, "09_voter_pareto", paper)
    (runs / "metrics.json").write_text(json.dumps({"code_hash": graph.code_hash()}))
    assert graph.upstream_digest(tmp_path, "09_voter_pareto", paper) != before
    assert graph.upstream_digest(tmp_path, "09_voter_pareto", cpu) == graph.upstream_digest(
        tmp_path, "09_voter_pareto")


def test_a_second_pipeline_on_the_same_results_is_refused(tmp_path, tiny_notebooks):
    nbdir = tiny_notebooks(tmp_path / "notebooks", {"01_ok": "x = 1"})
    out = tmp_path / "results" / "notebooks" / "ci"
    out.mkdir(parents=True)
    with pipeline.results_lock(out):
        with pytest.raises(pipeline.PipelineBusy, match=rf"another pipeline \(pid {os.getpid()} since .*\) is "
                                                          rf"running on {out}"):
            pipeline.run_pipeline("ci", overrides={"results_dir": str(tmp_path / "results")}, log=lambda s: None,
                                  notebook_dir=nbdir)
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
    parent = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    with pipeline.results_lock(out):  # the lock is free at once, and taking it removes the leftovers
        assert not list(out.glob(".threads-*")) and not list(out.glob(".*.progress.log"))


def test_a_results_folder_that_is_a_file_is_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "results"
    bad.write_text("not a folder")
    status = tmp_path / "status.json"  # what a parallel run's parent reads from a step it started
    assert pipeline.main(["--profile", "ci", "--set", f"results_dir={bad}", "--only", "07",
                          "--status-file", str(status)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Not a directory (") and str(bad) in err and len(err.splitlines()) == 1
    assert StepStatus.read(status) == StepStatus("failed", err.removeprefix("error: "))


class FakeStep:
    """A started step that ends when the test says so, writing the status a child step writes."""

    def __init__(self, start):
        self.start, self.returncode = start, None

    def end(self, status="done", code=0):
        if status is not None:
            StepStatus(status, record={"step": self.start.step} if status == "done" else None).write(
                self.start.status_file)
        self.returncode = code

    def poll(self):
        return self.returncode

    def wait(self):
        return self.returncode

    def terminate(self):
        self.returncode = -15


class FakeMachine:
    """The launcher, clock and budget writer a :class:`Scheduler` is given: nothing starts, nothing is written."""

    def __init__(self):
        self.started, self.budget_writes, self.now, self.lines = {}, [], 0.0, []

    def launch(self, start):
        self.started[start.step] = FakeStep(start)
        return self.started[start.step]

    def scheduler(self, tmp_path, chosen, waits_for, **kw):
        return Scheduler(chosen, waits_for, kw.pop("jobs", 2), self.launch, self.lines.append, tmp_path / ".threads",
                         cores=kw.pop("cores", 2), clock=lambda: self.now, sleep=lambda s: None,
                         write_budget=lambda path, n: self.budget_writes.append((path.name, n)), **kw)


WAITS = {"01_a": set(), "02_b": {"01"}, "05_t": {"01"}, "06_c": set(), "99_report": {"01", "02", "05", "06"}}


def test_scheduler_rounds_follow_reads_and_rebalance_only_after_starting(tmp_path):
    m = FakeMachine()
    s = m.scheduler(tmp_path, ["01_a", "02_b", "06_c"], {k: WAITS[k] for k in ("01_a", "02_b", "06_c")})
    assert s.tick() and set(s.running) == {"01_a", "06_c"} and s.budgets == {"01_a": 1, "06_c": 1}
    assert s.running["01_a"].start.threads == 1 and s.pending == ["02_b"]
    m.budget_writes.clear()
    m.started["01_a"].end()
    assert s.tick() and set(s.running) == {"02_b", "06_c"}  # 02 takes 01's place in the same round ...
    assert ("06_c", 2) not in m.budget_writes and s.budgets == {"02_b": 1, "06_c": 1}  # ... 06 keeps 1 thread
    m.started["02_b"].end()
    assert s.tick() and s.budgets == {"06_c": 2}  # alone at last: every core
    m.started["06_c"].end()
    assert not s.tick() and s.finished == {k: {"step": k} for k in ("01_a", "02_b", "06_c")}


def test_scheduler_runs_the_timing_step_alone_and_the_report_last(tmp_path):
    m = FakeMachine()
    s = m.scheduler(tmp_path, ["01_a", "05_t", "06_c", "99_report"], WAITS | {"99_report": {"01", "05", "06"}})
    assert s.order == ["01_a", "06_c", "05_t", "99_report"]
    s.tick()
    m.started["01_a"].end()
    s.tick()
    assert set(s.running) == {"06_c"}  # 05 is ready but waits for an idle machine
    m.started["06_c"].end()
    s.tick()
    assert set(s.running) == {"05_t"} and s.running["05_t"].start.threads is None  # every core, no budget
    m.started["05_t"].end()
    s.tick()
    assert set(s.running) == {"99_report"}
    m.started["99_report"].end()
    assert s.run() == [{"step": k} for k in s.order] and not (tmp_path / ".threads").exists()


def test_scheduler_stops_starting_at_the_deadline_or_a_failure(tmp_path):
    chosen = ["01_a", "02_b", "06_c"]
    waits = {k: WAITS[k] for k in chosen}
    m = FakeMachine()  # the deadline passes while 01 and 06 run: 02 never starts
    s = m.scheduler(tmp_path, chosen, waits, deadline=100.0)
    s.tick()
    m.now = 100.0
    m.started["01_a"].end()
    m.started["06_c"].end()
    with pytest.raises(pipeline.StoppedAtDeadline, match=r"finished: \['01_a', '06_c'\]"):
        s.run()
    assert "02_b" not in m.started and "--max-hours ran out: 1 step(s) not started" in m.lines
    m = FakeMachine()  # a step that reports the deadline (exit code aside) stops the run the same way
    s = m.scheduler(tmp_path, chosen, waits)
    s.tick()
    m.started["01_a"].end("deadline", code=0)
    m.started["06_c"].end()
    with pytest.raises(pipeline.StoppedAtDeadline):
        s.run()
    m = FakeMachine()  # a step that ended without a status failed; the one beside it finishes
    s = m.scheduler(tmp_path, chosen, waits)
    s.tick()
    m.started["06_c"].end(None, code=-9)
    s.tick()
    assert s.failures == ["06_c"] and s.pending == [] and "without a status" in s.messages["06_c"]
    m.started["01_a"].end()
    with pytest.raises(pipeline.StepFailed, match=r"step\(s\) \['06_c'\] failed .*finished: \['01_a'\]"):
        s.run()


def test_a_child_step_is_this_command_with_its_status_file(tmp_path):
    launch = scheduler.StepLauncher("ci", {"epochs": 1}, tmp_path, print, rerun=frozenset({"02_b"}))
    start = scheduler.StepStart("02_b", 1, tmp_path / "02_b", tmp_path / "02_b.status.json")
    cmd = launch.command(start)
    assert cmd[1:3] == ["-m", "mvlib.study.pipeline"] and cmd[-1] == "--rerun"
    args = pipeline._parser().parse_args(cmd[3:])
    assert (args.only, args.jobs, args.child, json.loads(args.overrides_json), args.status_file) == (
        ["02_b"], 1, True, {"epochs": 1}, str(start.status_file))
