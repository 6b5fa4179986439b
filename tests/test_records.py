"""Run records: identity (parameters, data, code), one run at a time, nothing recorded that did not happen."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mvlib import environment
from mvlib.files import remove_stale_temporaries, write_atomic
from mvlib.study import records
from mvlib.study.config import load_profile, scope_keys
from mvlib.study.experiment import train_baseline
from mvlib.train import Diverged, NonFiniteLoss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(tmp_path, data_root, **kw):
    base = {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False, "width": 4,
            "train_per_class": 10, "test_per_class": 5, "val_per_class": 5, "epochs": 1, "batch_size": 50,
            "models": ["reactnet18"]}
    return load_profile("ci", {**base, **kw})


def _finished(results):
    return sorted(results.glob("runs/*/*/metrics.json"))


# ------------------------------------------------------------------ identity
def test_reuse_sees_code_and_data(tmp_path, data_root, monkeypatch):
    cfg = _cfg(tmp_path, data_root)
    _, run = train_baseline(cfg, "reactnet18")
    assert train_baseline(cfg, "reactnet18")[1].run_id == run.run_id
    # other code: not the same run (a bug fix in the library must not be hidden by an old result)
    monkeypatch.setattr(records, "code_hash", lambda: "0123456789abcdef")
    _, other = train_baseline(cfg, "reactnet18")
    assert other.run_id != run.run_id
    monkeypatch.undo()
    # other data (the same files with shuffled labels): not the same run
    shuffled = tmp_path / "shuffled" / "cifar10"
    shuffled.mkdir(parents=True)
    with np.load(data_root / "cifar10" / "train.npz") as z:
        labels = np.random.default_rng(0).permutation(z["labels"])
        np.savez(shuffled / "train.npz", images=z["images"], labels=labels)
    os.symlink(data_root / "cifar10" / "test.npz", shuffled / "test.npz")
    _, wrong = train_baseline({**cfg, "data_dir": str(shuffled.parent)}, "reactnet18")
    assert wrong.run_id != run.run_id
    assert train_baseline(cfg, "reactnet18")[1].run_id == run.run_id  # fixed data: the original run again


def test_every_training_key_enters_the_identity(tmp_path, data_root):
    """A training run reads no configuration key outside its identity (data, train) but execution keys."""
    read = set()

    class Tracking(dict):
        def __getitem__(self, k):
            read.add(k)
            return super().__getitem__(k)

        def get(self, k, default=None):
            read.add(k)
            return super().get(k, default)

    cfg = Tracking(_cfg(tmp_path, data_root))
    _, run = train_baseline(cfg, "reactnet18")
    # model_recipes is resolved into the run's own train keys (recipe_for) before anything is read from them
    outside = read - set(scope_keys("data", "train", "exec")) - {"model_recipes"}
    assert not outside, f"keys read by a training run but not part of its identity: {sorted(outside)}"
    assert set(scope_keys("data", "train")) <= set(run.params)


@pytest.mark.slow
def test_norm_none_on_the_command_line_is_used(tmp_path, data_root):
    env = {**os.environ, "MVLIB_DATA": str(data_root)}
    results = tmp_path / "results"
    args = [sys.executable, "-m", "mvlib.study.train", "--profile", "ci", "--model", "birealnet18",
            f"results_dir={results}", "epochs=1", "width=4", "train_per_class=5", "test_per_class=2",
            "val_per_class=2", "progress=false"]
    r = subprocess.run(args + ["norm=none", "lr=1e-3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    saved = json.loads(next(results.glob("runs/01_baseline/*/params.json")).read_text())["identity"]["params"]
    assert saved["norm"] == "none" and saved["lr"] == 0.001
    # a key the command does not use is refused, before anything is written
    r = subprocess.run(args + ["appendix_epochs=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "does not use configuration key" in r.stderr


# ------------------------------------------------------------------ bad input before any folder
@pytest.mark.parametrize("override", ["epochs=0", "epochs=-1", "width=0", "optimizer=adamw", "seed=-2", "lr=0"])
def test_invalid_values_stop_before_any_folder(tmp_path, data_root, override):
    env = {**os.environ, "MVLIB_DATA": str(data_root)}
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "mvlib.study.train", "--profile", "ci", "--model", "reactnet18",
                        f"results_dir={results}", override], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "error:" in r.stderr and override.split("=")[0] in r.stderr
    assert not results.exists()


def test_bad_model_option_or_voter_fails_before_any_folder(tmp_path, data_root):
    from mvlib.study.experiment import train_run
    cfg = _cfg(tmp_path, data_root)
    with pytest.raises(ValueError, match="unknown model"):
        train_run(cfg, "01_baseline", "resnet50", "baseline")
    with pytest.raises(ValueError, match="unknown voter"):
        train_run(cfg, "01_baseline", "reactnet18", "baseline", voter="mvv")
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").rglob("params.json"))


# ------------------------------------------------------------------ nothing recorded that did not finish
def test_diverged_run_is_an_error_and_not_recorded(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root, lr=1e5, epochs=2)
    with pytest.raises((NonFiniteLoss, Diverged), match="diverged"):
        train_baseline(cfg, "reactnet18")
    assert not _finished(tmp_path / "results")
    summary = tmp_path / "results" / "summary.csv"
    assert not summary.exists() or len(summary.read_text().splitlines()) <= 1


def test_a_finite_loss_that_exploded_is_a_divergence_not_a_finished_run(tmp_path):
    from mvlib.data import BatchLoader
    from mvlib.train import DIVERGED_LOSS_FACTOR, fit
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(16) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        model[1].weight.mul_(1e4)  # logits in the thousands: a finite cross-entropy far above 10 x ln(10)
    loader = BatchLoader(x, y, 8, train=True, augment=False)
    with pytest.raises(Diverged, match=rf"above {DIVERGED_LOSS_FACTOR:g} x ln\(10\) = 23 .*not recorded"):
        fit(model, loader, BatchLoader(x, y, 8, train=False, augment=False), epochs=1, lr=1e-12,
            checkpoint_path=tmp_path / "last.pt", progress=False, log=lambda s: None)
    assert not (tmp_path / "last.pt").exists()


def test_finish_refuses_disagreeing_history_and_checkpoint(tmp_path):
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path) as run:
        run.write_history([{"epoch": 1, "val_top1": 10.0}])
        with pytest.raises(records.RecordError, match="history has 1 epochs"):
            run.finish({"model": "m", "variant": "v", "profile": "ci", "dataset": "cifar10", "val_top1": 1.0,
                        "top1": 1.0, "top5": 5.0, "seconds": 1.0}, epochs=2, checkpoint_epoch=2)
        with pytest.raises(records.RecordError, match="non-finite"):
            run.finish({"model": "m", "variant": "v", "profile": "ci", "dataset": "cifar10",
                        "val_top1": float("nan"), "seconds": 1.0})
    assert not (run.dir / "metrics.json").exists()


@pytest.mark.slow
def test_kill_between_checkpoint_and_history_leaves_a_consistent_record(tmp_path, data_root):
    env = {**os.environ, "MVLIB_DATA": str(data_root), "PYTHONPATH": REPO}
    results = tmp_path / "results"
    args = ["--profile", "ci", "--model", "birealnet18", f"results_dir={results}", "epochs=2", "width=4",
            "train_per_class=5", "test_per_class=2", "val_per_class=2", "progress=false"]
    cmd = [sys.executable, "-m", "mvlib.study.train", *args]
    # the same command, killed right after the final checkpoint (a test-only wrapper: tests/kill_during_training.py)
    killer = [sys.executable, os.path.join(REPO, "tests", "kill_during_training.py"), "checkpoint", "2", *args]
    killed = subprocess.run(killer, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9
    run_dir = next(p for p in results.glob("runs/01_baseline/*") if p.is_dir())
    assert len(list(csv.DictReader(open(run_dir / "history.csv")))) == 1  # the kill cut the history short
    assert not (run_dir / "metrics.json").exists()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(list(csv.DictReader(open(run_dir / "history.csv")))) == 2


# ------------------------------------------------------------------ one run at a time
def test_second_claim_of_the_same_identity_stops_with_a_clear_message(tmp_path):
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path):
        with pytest.raises(records.RunBusy, match=f"pid {os.getpid()}"):
            with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path):
                pass
        with records.claim_run("01_x", "m", "v", {"seed": 1}, {}, tmp_path):  # another identity: no conflict
            pass
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path):  # released after the block
        pass


def test_lock_held_by_another_process(tmp_path):
    code = ("import sys, time; from mvlib.study import records\n"
            f"with records.claim_run('01_x', 'm', 'v', {{'seed': 0}}, {{}}, r'{tmp_path}'):\n"
            "    print('held', flush=True); time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(records.RunBusy, match=f"pid {p.pid}"):
            with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path):
                pass
    finally:
        p.kill()
        p.wait()
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path):  # the OS dropped the dead holder's lock
        pass


# ------------------------------------------------------------------ temporary files
def test_failed_write_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x.json", 12345)  # neither str nor bytes: the write fails
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".metrics.json.tmp{dead}"
    live = tmp_path / f".metrics.json.tmp{os.getpid()}"
    stale.write_text("half")
    live.write_text("being written")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def test_code_hash_covers_the_library_and_skips_presentation(tmp_path):
    files = {p.relative_to(environment.REPO_ROOT).as_posix() for p in environment.code_files()}
    assert "mvlib/voters.py" in files and "cuda_numba/cpu_kernels.py" in files and "mvlib/study/experiment.py" in files
    assert "mvlib/study/report.py" not in files and "mvlib/study/plots.py" not in files
    _tiny_tree(tmp_path, {"mvlib/a.py": "x = 1\n"}, experiment="from .. import a\n")
    h = environment.compute_code_hash(tmp_path)
    (tmp_path / "mvlib" / "a.py").write_text("x = 2\n")
    assert environment.compute_code_hash(tmp_path) != h


def _tiny_tree(root, files: dict, experiment: str = "", notebook: str = ""):
    """Two packages with ``files`` ({relative path: source}), a record-making ``mvlib/study/experiment.py`` and
    one notebook source."""
    for pkg in ("mvlib", "cuda_numba", "mvlib/study"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    for rel, src in {"mvlib/study/experiment.py": experiment, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(src)
    (root / "notebooks").mkdir(exist_ok=True)
    (root / "notebooks" / "05_x.py").write_text(notebook)
    return root / "notebooks" / "05_x.py"


def test_code_hash_is_what_the_record_making_modules_reach(tmp_path):
    nb = _tiny_tree(tmp_path, {"mvlib/layers.py": "from .kernels import k\ndef f(): pass\n",
                               "mvlib/kernels/__init__.py": "def k(): pass\n",
                               "mvlib/study/plots.py": "from ..unused import u\n",   # excluded: not followed
                               "mvlib/unused.py": "u = 1\n", "cuda_numba/ops.py": "import numpy\n",
                               "cuda_numba/bench.py": "from . import ops\n"},
                    experiment="from ..layers import f\nfrom . import plots\ndef g():\n    import cuda_numba.ops\n",
                    notebook="from mvlib.study import experiment\nfrom cuda_numba import bench\n")
    files = {p.relative_to(tmp_path).as_posix() for p in environment.code_files(tmp_path)}
    assert files == {"mvlib/__init__.py", "mvlib/study/__init__.py", "mvlib/study/experiment.py", "mvlib/layers.py",
                     "mvlib/kernels/__init__.py", "cuda_numba/__init__.py", "cuda_numba/ops.py"}
    h, nb_h = environment.compute_code_hash(tmp_path), environment.notebook_code_hash(nb, tmp_path)
    (tmp_path / "mvlib" / "unused.py").write_text("u = 2\n")           # reached only through a report module
    (tmp_path / "mvlib" / "new_tool.py").write_text("import torch\n")   # imported by nothing
    assert environment.compute_code_hash(tmp_path) == h and environment.notebook_code_hash(nb, tmp_path) == nb_h
    (tmp_path / "cuda_numba" / "bench.py").write_text("from . import ops\nREPS = 3\n")  # the notebook's own reach
    assert environment.compute_code_hash(tmp_path) == h                  # no record depends on it: nothing retrains
    assert environment.notebook_code_hash(nb, tmp_path) != nb_h          # its step re-executes
    (tmp_path / "mvlib" / "layers.py").write_text("from .kernels import k\nfrom .new_tool import *\ndef f(): pass\n")
    assert environment.compute_code_hash(tmp_path) != h                  # used by a computing module: it counts
    assert "mvlib/new_tool.py" in {p.relative_to(tmp_path).as_posix() for p in environment.code_files(tmp_path)}


def test_every_module_that_makes_records_is_part_of_the_record_identity():
    import ast
    makers = {"claim_run", "evaluate_record", "train_recipe", "train_run", "train_baseline"}
    files = set(environment.code_files()) | {environment.REPO_ROOT / r for r in environment.RECORD_ROOTS}
    for path in environment.source_files():
        if path.name == "records.py":
            continue  # where claim_run is defined
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, (ast.Attribute, ast.Name))}
        if names & makers:
            assert path in files, f"{path} makes run records but is outside RECORD_ROOTS' reach"


def test_code_hash_ignores_comments_docstrings_and_blank_lines_but_not_code(tmp_path):
    _tiny_tree(tmp_path, {}, experiment="from .. import a\n")
    src = tmp_path / "mvlib" / "a.py"
    src.write_text('"""Module doc."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # why\n')
    h, s = environment.compute_code_hash(tmp_path), environment.compute_source_hash(tmp_path)
    src.write_text('"""Module doc, reworded\nover two lines (é ×)."""\nimport math\n\n\n\ndef f(x):\n'
                   '    """Other doc."""\n    # a comment of its own\n    return x + 1   \n')
    assert environment.compute_code_hash(tmp_path) == h
    assert environment.compute_source_hash(tmp_path) != s  # the bytes changed
    src.write_text('"""Module doc."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return x + 2  # why\n')
    assert environment.compute_code_hash(tmp_path) != h
    # a string that is not a docstring is code; so is a docstring sharing its line with code
    assert environment.normalized_source('x = 1\n"""not a doc"""\n') != environment.normalized_source('x = 1\n')
    assert "return 1" in environment.normalized_source('def f(): "doc"; return 1\n')
    # a '#' inside a string is not a comment
    assert environment.normalized_source('s = "a # b"\n') == 's = "a # b"\n'


def test_code_hash_leaves_out_what_reads_writes_or_draws_records():
    files = {p.relative_to(environment.REPO_ROOT).as_posix() for p in environment.code_files()}
    for rel in environment.CODE_IDENTITY_EXCLUDES:
        assert (environment.REPO_ROOT / rel).is_file(), f"{rel} listed but absent"
        assert rel not in files
    for rel in ("mvlib/layers.py", "mvlib/train.py", "mvlib/study/voter_study.py", "cuda_numba/engine.py",
                "mvlib/study/ddp_worker.py", "mvlib/teacher.py", "mvlib/artifact.py"):
        assert rel in files
    # the benchmark and the synthesis flow make no record: their notebooks' keys cover them
    for rel, nb in (("cuda_numba/bench_network.py", "05_kernels"), ("mvlib/hw/verilog.py", "07_hardware_cost")):
        assert rel not in files
        reach = environment.reached_files(environment.REPO_ROOT, [environment.REPO_ROOT / "notebooks" / f"{nb}.py"])
        assert environment.REPO_ROOT / rel in reach


# ------------------------------------------------------------------ faults
_METRICS = {"model": "m", "variant": "v", "profile": "ci", "dataset": "cifar10", "val_top1": 1.0, "top1": 1.0,
            "top5": 5.0, "seconds": 1.0}


def test_a_truncated_record_is_named_with_the_way_out(tmp_path):
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path) as run:
        run.finish(_METRICS)
    with records.claim_run("01_x", "m", "v", {"seed": 1}, {}, tmp_path) as other:
        other.finish(_METRICS)
    text = (run.dir / "metrics.json").read_text()
    (run.dir / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.raises(records.RecordError, match=f"corrupt run record {run.dir / 'metrics.json'}.*delete its run "
                                                  f"folder {run.dir}"):
        run.metrics
    with pytest.raises(records.RecordError, match="corrupt run record"):
        records.all_metrics(tmp_path)
    # the summaries still hear of every other run; the corrupt one is named on stderr
    records.update_summary(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [r["run_id"] for r in rows] == [other.run_id]
    (run.dir / "params.json").write_text("{")
    with pytest.raises(records.RecordError, match="params.json"):
        records.run_from_dir(run.dir)


def test_a_run_without_its_environment_record_is_not_finished(tmp_path):
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path) as run:
        (run.dir / "env.json").unlink()  # what a full disk did at the start
        with pytest.raises(records.RecordError, match="env.json is missing"):
            run.finish(_METRICS)
    assert not run.finished
    with records.claim_run("01_x", "m", "v", {"seed": 0}, {}, tmp_path) as again:  # resumed: completed
        assert again.dir == run.dir and (run.dir / "env.json").is_file()
        again.finish(_METRICS)
    assert run.finished


def test_the_train_command_rebuilds_the_summaries_and_ends_faults_in_one_line(tmp_path, monkeypatch, capsys):
    from mvlib.study import train as train_cmd
    with records.claim_run("01_baseline", "reactnet18", "baseline", {"seed": 0}, {}, tmp_path) as run:
        run.finish({**_METRICS, "model": "reactnet18", "variant": "baseline"})
    (tmp_path / "runs.csv").unlink()
    (tmp_path / "summary.csv").unlink()  # killed after metrics.json, before the summaries
    monkeypatch.setattr(train_cmd, "train_baseline", lambda cfg, model: (None, run))
    assert train_cmd.main(["--profile", "ci", "--model", "reactnet18", f"results_dir={tmp_path}"]) == 0
    assert (tmp_path / "runs.csv").is_file() and (tmp_path / "summary.csv").is_file()

    def interrupted(cfg, model):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_cmd, "train_baseline", interrupted)
    assert train_cmd.main(["--profile", "ci", "--model", "reactnet18", f"results_dir={tmp_path}"]) == 130

    def disk_full(cfg, model):
        raise OSError(28, "No space left on device", str(tmp_path / "x.json"))
    monkeypatch.setattr(train_cmd, "train_baseline", disk_full)
    assert train_cmd.main(["--profile", "ci", "--model", "reactnet18", f"results_dir={tmp_path}"]) == 1
    assert train_cmd.main(["--profile", "ci", "--model", "reactnt18"]) == 2
    assert train_cmd.main(["--profile", "cpuu", "--model", "reactnet18"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: interrupted; the run resumes from its last finished epoch when run again",
                   f"error: No space left on device ({tmp_path / 'x.json'}); the run resumes from its last epoch "
                   "once this is fixed",
                   "error: unknown model 'reactnt18'; did you mean 'reactnet18' or 'reactneta' or 'birealnet18'?",
                   f"error: unknown profile 'cpuu': no {environment.REPO_ROOT / 'configs' / 'cpuu.yaml'}; "
                   "did you mean 'cpu'?"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 150 KiB tmpfs (where this machine lets the tests mount one: root in a container or VM)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_ends_the_train_command_in_one_line_and_the_run_completes_later(tiny_disk, tmp_path,
                                                                                     data_root):
    env = {**os.environ, "MVLIB_DATA": str(data_root)}
    cmd = [sys.executable, "-m", "mvlib.study.train", "--profile", "ci", "--model", "reactnet18", "epochs=2",
           "width=4", "train_per_class=5", "test_per_class=2", "val_per_class=2", "progress=false"]
    full = subprocess.run(cmd + [f"results_dir={tiny_disk / 'results'}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert full.returncode == 1
    last = full.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith("error: No space left on device (/") and "Traceback" not in full.stderr
    assert not list((tiny_disk / "results").glob("runs/*/*/metrics.json"))  # nothing recorded as finished
    # the same records moved to a disk with room: the run completes from where it stopped
    subprocess.run(["cp", "-a", str(tiny_disk / "results"), str(tmp_path / "results")], check=True)
    again = subprocess.run(cmd + [f"results_dir={tmp_path / 'results'}"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    done = list((tmp_path / "results").glob("runs/*/*/metrics.json"))
    assert len(done) == 1 and (done[0].parent / "env.json").is_file() and (tmp_path / "results" / "summary.csv").is_file()


def test_the_group_keeps_what_a_source_run_is_and_drops_its_seed():
    def ident(seed, source):
        return {"params": {"seed": seed, "source_run": source, "model": "m", "variant": "naive", "step": "08_x"},
                "data": {}, "code_hash": "c"}
    real = [ident(s, f"2026120{s}-010203-reactnet18-baseline-{h}") for s, h in ((0, "0123456789"), (1, "abcdef0123"))]
    binary = ident(0, "20261201-010203-reactnet18-baseline-binary1x1-fedcba9876-2")
    assert records.group_of(real[0]) == records.group_of(real[1])  # one row over seeds
    assert records.group_of(binary) != records.group_of(real[0])    # another network evaluated: another row


def test_error_lines_name_the_reason_and_the_file():
    from mvlib.study.progress import error_line
    assert error_line(FileNotFoundError(2, "No such file or directory", "/proc/nope")) == \
        "No such file or directory (/proc/nope)"
    assert error_line(OSError(28, "No space left on device")) == "No space left on device"
    assert error_line(KeyError("unknown configuration key 'lrr'; did you mean 'lr'?")) == \
        "unknown configuration key 'lrr'; did you mean 'lr'?"
    assert error_line(ValueError("a", "b")) == "('a', 'b')"
