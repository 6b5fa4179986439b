"""Run the study's notebooks in order with papermill, keep executed copies and HTML, show live progress.

    python -m mvlib.study.pipeline --profile cpu [--only 01 02] [--force] [--set key=value ...]

* Parameters are checked against the configuration schema *before* any
  notebook starts (papermill alone only warns about unknown ones), and so is
  the data folder.
* Each step writes ``<results>/notebooks/<profile>/<step>.ipynb`` and
  ``.html`` (inputs hidden) atomically: a failed run leaves
  ``<step>.failed.ipynb`` and never replaces the last good copy.
* A finished step is recorded in ``<step>.done.json`` with a hash of its
  notebook, its resolved configuration, the code hash
  (:func:`mvlib.environment.code_hash`) and a digest of every record the
  earlier steps wrote (for the report: of every result file). A rerun skips
  the step only when all four are unchanged; it continues from the step that
  failed. ``--force`` re-executes the steps *and* the runs inside them.
* A fresh clone holds the records and executed notebooks, not the weights
  (``checkpoints/`` is ignored): a current study executes nothing there; a
  step that must run and reads weights its clone lacks first re-executes the
  step that trained them (:func:`plan_steps`), and ``--rerun`` does that by
  hand. The summaries are rebuilt from the records that exist.
* While a notebook runs, the lines its runs report (:mod:`mvlib.study.progress`:
  one per epoch, with elapsed time and an estimate) are shown live.
* The report step also renders ``<results>/report.html`` (``report-<profile>.html``
  for profiles other than ``cpu``).
* ``study_jobs`` (profile key, or ``--jobs``) > 1 runs that many notebooks at
  once, each in its own process, as soon as the steps it reads
  (:data:`READS`) are done; the cores are split evenly among the running
  notebooks and the split follows them (a notebook left alone gets every
  core back at its next epoch or record: :func:`mvlib.study.experiment.apply_process_settings`).
  Why: on the 2-core CPU, notebook 01 trained at 86 s per epoch beside
  notebook 06 (67 s alone on both cores) while 06 kept its speed alone:
  about 1.7x the images/s of one notebook at a time (width 16).
  The timing notebook (:data:`ALONE`) waits for an idle machine and runs on
  every core (not in a smoke run, whose timings nobody reads).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..environment import REPO_ROOT, code_hash, source_hash
from ..files import write_atomic, write_json
from ..train import DEADLINE_ENV, deadline_passed
from .config import load_profile, parse_cli_overrides
from .progress import ENV as PROGRESS_ENV
from .progress import THREADS_ENV, error_line
from . import records
from .records import resolve_results_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# The earlier steps whose run records each notebook reads, by number; a step not listed reads every earlier
# step, the report reads everything. The pipeline's reuse digest and its schedule both follow this.
# (03 reuses 02's naive rows, 04 03's exact-voter retraining, 08 02's naive rows: READS, or they would race.)
READS = {"01": (), "02": ("01",), "03": ("01", "02"), "04": ("01", "03"), "05": ("01",), "06": (), "07": (),
         "08": ("01", "02"), "09": ("01",)}
# notebook 09 reads (and reuses) notebooks 03/04's retrained runs when its recipe and splits are theirs
# (mvlib.study.pareto.shares_runs: the paper profile); it then waits for them
READS_SHARED = {"09": ("01", "03", "04")}
# Steps that time code: they run with the machine to themselves.
ALONE = ("05",)
KERNEL_NAME = "mvlib"  # registered by `make setup` (ipykernel install --sys-prefix --name mvlib)
# the kernel's own INFO/WARNING lines (e.g. "running over TCP without encryption" on a local kernel) are not
# the user's business in a batch run
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


class StoppedAtDeadline(RuntimeError):
    """``--max-hours`` ran out: finished work is kept, the same command resumes."""


# --smoke: every notebook of a profile on its own code path (widths, teacher, two-step, distillation, every
# grid) at a few images and one or two epochs, into a scratch folder. Seeds are cut to one (the multi-seed
# paths run under the ci profile); CIFAR-100 reads the offline subset. Counts in images per class.
SMOKE_OVERRIDES = {
    "study_jobs": 2, "val_per_class": 2, "train_per_class": 1, "test_per_class": 2, "val_eval_per_class": 0,
    "epochs": 2, "teacher_epochs": 1, "teacher_min_val_top1": 0.0, "batch_size": 10, "teacher_batch_size": 10,
    "seeds": [0], "sweep_seeds": [0], "appendix_seeds": [0], "vd_train_seeds": [0], "vd_scale_seeds": [0],
    "mv_retrain_epochs": 1, "mv_retrain_train_per_class": 1, "mv_calib_batches": 1, "mv_recal_batches": 1,
    "mv_sensitivity_val_per_class": 1, "hmv_sweep_val_per_class": 1, "hmv_disagreement_batches": 1,
    "appendix_epochs": 2, "appendix_cifar100_epochs": 2, "appendix_train_per_class": 1,
    "appendix_cifar100_train_per_class": 1, "cifar100_train_file": "train_subset.npz", "cifar100_val_per_class": 1,
    "appendix_test_per_class": 2, "appendix_cifar100_test_per_class": 1, "appendix_val_eval_per_class": 0,
    "vd_train_epochs": 2, "vd_train_per_class": 1, "vd_train_val_per_class": 2, "vd_sweep_val_per_class": 1,
    "vd_flip_batches": 1, "kernel_batches": [1], "kernel_reps": 1, "kernel_network_batch": 2, "kernel_threads": 1,
    "hw_check_vectors": 100, "eval_batch_size": 100,
    # notebook 09: one tree and one tie rule per voter retrained (a 64-leaf tree's float simulation trains at ~3 s
    # per image at width 64 on one core); its loops over trees and ties run in full under the ci profile
    "pareto_seeds": [0], "pareto_trees": [[4, 4]], "pareto_tie_choice": "disagreement",
}


def steps() -> list[str]:
    """Notebook names in execution order (file name order: 01_…, 02_…, 99_report)."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _reads_table(cfg: dict | None) -> dict:
    from .pareto import shares_runs
    return {**READS, **READS_SHARED} if cfg is not None and shares_runs(cfg) else READS


def reads(step: str, candidates: list[str] | None = None, cfg: dict | None = None) -> list[str]:
    """The number prefixes of the steps whose records ``step`` reads (see :data:`READS`; ``cfg``: the
    configuration, which may add :data:`READS_SHARED`)."""
    number = step.split("_", 1)[0]
    table = _reads_table(cfg)
    if number in table and not step.endswith("report"):
        return list(table[number])
    earlier = {s.split("_", 1)[0] for s in (candidates if candidates is not None else steps())}
    return sorted(n for n in earlier if n < number)


def _of_this_code(metrics: Path) -> bool:
    """Whether a finished record comes from the running code (a step reads no other: identities hold the
    code hash), so that deleting an older study's records changes no digest."""
    try:
        return json.loads(metrics.read_text()).get("code_hash") == code_hash()
    except (OSError, json.JSONDecodeError):
        return True  # a corrupt record is read (and reported) by the step itself


def upstream_digest(results: Path, step: str, cfg: dict | None = None) -> str:
    """Digest of what ``step`` reads: the run records of the running code in the steps it reads (the report:
    every result file)."""
    number = step.split("_", 1)[0]
    table = _reads_table(cfg)
    read = set(table[number]) if number in table and not step.endswith("report") else None

    def is_read(n):
        return n in read if read is not None else n < number
    files = [p for p in results.glob("runs/[0-9][0-9]_*/*/metrics.json")
             if is_read(p.parent.parent.name[:2]) and _of_this_code(p)]
    if step.endswith("report"):
        files += [p for pat in ("tables/*.csv", "bench/*.json", "hw/*/*.csv") for p in results.glob(pat)]
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.relative_to(results).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def step_key(src: Path, cfg: dict) -> str:
    """Hash of the notebook's bytes, its resolved configuration and the code hash.

    The code hash is the identity of the code the numbers depend on (:func:`mvlib.environment.code_hash`):
    a change to how results are drawn or tabled does not re-execute a step that loads weights. The report
    reads only files and takes seconds, so its key covers every source byte (:func:`source_hash`).
    """
    h = hashlib.sha256(src.read_bytes())
    h.update(json.dumps({k: v for k, v in cfg.items() if k not in ("progress", "study_jobs")}, sort_keys=True).encode())
    h.update((source_hash() if src.stem.endswith("report") else code_hash()).encode())
    return h.hexdigest()[:16]


def render_html(ipynb: Path, html: Path) -> None:
    """Executed notebook -> self-contained HTML with inputs hidden (images are embedded as data URIs)."""
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    write_atomic(html, body)


def _failure_message(step: str, err: Exception) -> str:
    cell = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    first = (getattr(err, "source", "") or "").strip().splitlines()[:1]
    where = f"cell In [{cell}]" if cell is not None else "a cell"
    if first:
        where += f" ({first[0][:60]!r})"
    return f"step {step} failed in {where}: {ename}: {evalue}"


class _Tail(threading.Thread):
    """Prints the lines appended to a progress file until stopped."""

    def __init__(self, path: Path, prefix: str, log):
        super().__init__(daemon=True)
        self.path, self.prefix, self.log, self.stop = path, prefix, log, threading.Event()

    def run(self):
        pos = 0
        while True:
            stopping = self.stop.wait(1.0)
            if self.path.is_file():
                with open(self.path) as f:
                    f.seek(pos)
                    for line in f:
                        self.log(f"{self.prefix} {line.rstrip()}")
                    pos = f.tell()
            if stopping:
                return


def _step_config(step: str, profile: str, overrides: dict, force: bool = False) -> tuple[dict, dict]:
    """(papermill parameters, resolved configuration) of one step."""
    params = {"profile": profile, "progress": False, **overrides, **({"force": True} if force else {})}
    return params, load_profile(profile, {k: v for k, v in params.items() if k != "profile"})


def is_current(step: str, profile: str, overrides: dict, out_dir: Path) -> bool:
    """Whether the step's last execution (``<step>.done.json``) still holds: the same notebook, configuration,
    code and records it reads."""
    done = out_dir / f"{step}.done.json"
    if not done.is_file():
        return False
    _, cfg = _step_config(step, profile, overrides)
    rec = json.loads(done.read_text())
    results = resolve_results_dir(cfg["results_dir"])
    return (rec.get("hash") == step_key(NOTEBOOK_DIR / f"{step}.ipynb", cfg)
            and rec.get("upstream") == upstream_digest(results, step, cfg))


def runs_without_weights(results: Path, number: str) -> list[str]:
    """The finished training runs of the running code in step ``number`` whose checkpoint is missing.

    Checkpoints are not committed (``checkpoints/`` is ignored), so in a fresh clone every training run
    is in this list; of several runs of one identity only the newest counts (a run trained again to
    bring back its weights leaves the older record in place).
    """
    newest: dict[str, Path] = {}
    for mpath in sorted(results.glob(f"runs/{number}_*/*/metrics.json")):
        try:
            rec = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # the step that reads it reports it
        if rec.get("code_hash") != code_hash() or rec.get("evaluation_only"):
            continue
        ident = json.loads((mpath.parent / "params.json").read_text()).get("identity_hash", mpath.parent.name)
        newest[f"{mpath.parent.parent.name}/{ident}"] = mpath.parent  # sorted: the newest (UTC time) wins
    return sorted(d.name for d in newest.values() if not records.run_from_dir(d).checkpoint.is_file())


def plan_steps(chosen: list[str], profile: str, overrides: dict, out_dir: Path, force: bool = False,
               rerun: list[str] | None = None, all_steps: list[str] | None = None) -> tuple[list[str], dict]:
    """The steps to run, and ``{step: run ids}`` of the steps added or re-executed to bring back weights.

    A step that executes (forced, asked with ``rerun``, or not :func:`is_current`) loads the weights of
    the runs it reads; when a step it reads has finished training runs without their checkpoint (a
    fresh clone holds the records, not the weights), that step is re-executed too, before it: its
    finished runs with weights are reused, the others trained again. A study whose every step is
    current executes nothing.
    """
    all_steps = all_steps or steps()
    cfg = load_profile(profile, overrides)
    results = resolve_results_dir(cfg["results_dir"])
    execute = {s for s in chosen if force or s in (rerun or []) or not is_current(s, profile, overrides, out_dir)}
    restore: dict[str, list[str]] = {}
    todo = sorted(execute)
    while todo:
        step = todo.pop()
        if step.endswith("report"):  # the report reads files, not weights
            continue
        for number in reads(step, all_steps, cfg):
            for up in (s for s in all_steps if s.split("_", 1)[0] == number and s not in execute):
                missing = runs_without_weights(results, number)
                if missing:
                    restore[up] = missing
                    execute.add(up)
                    todo.append(up)
    return [s for s in all_steps if s in chosen or s in restore], restore


def run_step(step: str, profile: str, overrides: dict, out_dir: Path, force: bool = False, log=print,
             rerun: bool = False) -> dict:
    """Execute one notebook, or skip it when it :func:`is_current` (unless ``force`` or ``rerun``).

    ``rerun``: execute it although nothing changed, reusing its finished runs that still have their
    weights and training the others again; ``force``: train every run again. A skipped step's record is
    returned with ``"skipped": True``.
    """
    import logging

    import papermill as pm
    src = NOTEBOOK_DIR / f"{step}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"no notebook {src}")
    params, cfg = _step_config(step, profile, overrides, force)
    results = resolve_results_dir(cfg["results_dir"])
    key = step_key(src, cfg)
    done = out_dir / f"{step}.done.json"
    if not (force or rerun) and is_current(step, profile, overrides, out_dir):
        log(f"[{step}] unchanged (notebook, configuration, code and the records it reads): skipped")
        return {**json.loads(done.read_text()), "skipped": True}
    partial = out_dir / f".{step}.partial.ipynb"
    progress_file = out_dir / f".{step}.progress.log"  # beside the results (no temporary files elsewhere)
    progress_file.write_text("")
    tail = _Tail(progress_file, f"[{step}]", log)
    os.environ[PROGRESS_ENV] = str(progress_file)  # the kernel inherits it
    # papermill warns about parameters a notebook does not list; every key is checked by the schema instead
    logging.getLogger("papermill").setLevel(logging.ERROR)
    t0 = time.time()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))
    tail.start()
    try:
        pm.execute_notebook(str(src), str(partial), parameters=params, kernel_name=KERNEL_NAME,
                            cwd=str(REPO_ROOT), progress_bar=False, log_output=False,
                            request_save_on_cell_execute=True, extra_arguments=KERNEL_ARGS)
    except Exception as e:  # papermill's PapermillExecutionError carries cell number and exception
        failed = out_dir / f"{step}.failed.ipynb"
        if partial.is_file():
            os.replace(partial, failed)
        raise StepFailed(_failure_message(step, e) + f" (executed copy: {failed})") from None
    finally:
        tail.stop.set()
        tail.join()
        os.environ.pop(PROGRESS_ENV, None)
        progress_file.unlink(missing_ok=True)
    final = out_dir / f"{step}.ipynb"
    os.replace(partial, final)
    render_html(final, out_dir / f"{step}.html")
    record = {"step": step, "hash": key, "upstream": upstream_digest(results, step, cfg), "code_hash": code_hash(),
              "seconds": round(time.time() - t0, 1), "params": params, "started_utc": started,
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch_threads": ("shared: the pipeline's budget" if os.environ.get(THREADS_ENV)
                                else os.environ.get("OMP_NUM_THREADS", "default"))}
    write_json(done, record)
    (out_dir / f"{step}.failed.ipynb").unlink(missing_ok=True)
    return record


def ensure_kernel(log=print) -> None:
    """Register the ``mvlib`` Jupyter kernel for this Python when it is missing (conda or pip installs without make)."""
    from jupyter_client.kernelspec import KernelSpecManager
    if KERNEL_NAME in KernelSpecManager().find_kernel_specs():
        return
    from ipykernel.kernelspec import install
    install(kernel_name=KERNEL_NAME, display_name=f"{KERNEL_NAME} ({Path(sys.prefix).name})", prefix=sys.prefix)
    log(f"registered the Jupyter kernel {KERNEL_NAME!r} for {sys.executable}")


def check_data(cfg: dict) -> None:
    """Fail before any kernel starts when the data folder the study would read is missing or malformed."""
    from ..data import inspect_npz, resolve_data_dir
    folder = resolve_data_dir(cfg["dataset"], cfg["data_dir"])
    if folder is not None:
        for name in (cfg["train_file"], "test.npz"):
            inspect_npz(folder / name)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _order(chosen: list[str], alone: tuple[str, ...] = ALONE) -> list[str]:
    """Schedule order: the steps in file order, the timing steps (``alone``) after them, the report last."""
    def rank(step):
        return (step.endswith("report"), step.split("_", 1)[0] in alone)
    return sorted(chosen, key=rank)  # stable: file order within each group


def _write_budget(path: Path, threads: int) -> None:
    """A step's thread budget: replaced atomically, not synced (a scratch file read by a live process; an fsync
    can wait behind a notebook's checkpoint writes). ``files.write_atomic`` with a ``sync`` flag is the better
    home for this; it is in the code hash, so that move waits for the next change that reruns the study."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(threads))
    os.replace(tmp, path)


def _die_with_parent(parent: int) -> None:
    """In a child step, first thing: SIGTERM when the pipeline that started it dies, even by kill -9 (Linux
    ``PR_SET_PDEATHSIG``); the child turns it into a clean stop that shuts its kernel down (:func:`main`).

    Set by the child itself rather than in ``Popen(preexec_fn=...)``, which is unsafe while the parent runs
    threads (its output pumps); a ``parent`` (its pid) that died before this call is caught by the
    ``getppid`` check.
    """
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's finally still stops its children
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


class PipelineBusy(RuntimeError):
    """Another pipeline runs on the same results folder."""


@contextlib.contextmanager
def _results_lock(out_dir: Path):
    """Hold ``<out_dir>/.pipeline.lock`` for the whole run: a second pipeline on the same results is refused by
    name and pid (the OS drops the lock when its holder dies); leftovers of a killed run are removed."""
    import fcntl
    path = out_dir / ".pipeline.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise PipelineBusy(f"another pipeline ({f.read().strip() or 'unknown pid'}) is running on {out_dir}; "
                               f"wait for it to finish (or stop it) and run this again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
        f.flush()
        for stale in list(out_dir.glob(".threads-*")) + list(out_dir.glob(".*.progress.log")):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _run_parallel(chosen: list[str], profile: str, overrides: dict, force: bool, jobs: int, out_dir: Path,
                  log, alone: tuple[str, ...] = ALONE, rerun: frozenset = frozenset()) -> list[dict]:
    """Run the steps in child processes, ``jobs`` at once, each when the steps it reads are done.

    The steps numbered in ``alone`` (timings) wait for an idle machine and run on every core. A smoke run
    passes ``alone=()``: its timings are read by nobody, so notebook 05 takes a slot like any other step, its
    benchmark on one thread (``kernel_threads: 1`` in :data:`SMOKE_OVERRIDES`: 1:16 beside notebook 06 in a
    fresh clone's smoke pass; with the benchmark on every core, i.e. three threads on two cores, it once took
    4:49 there, against 1:05 alone).

    A child is this module with ``--only <step> --jobs 1``; its lines (already
    prefixed with the step) are passed to ``log``. After a failure no new step
    starts, the running ones finish, and the first failure is raised.
    """
    cores = _cores()
    order = _order(chosen, alone)
    budget_dir = out_dir / f".threads-{os.getpid()}"  # removed at the end, or by the next pipeline's start
    budget_dir.mkdir(exist_ok=True)
    numbers = {s: s.split("_", 1)[0] for s in chosen}
    pending, running, finished, failures, step_records = list(order), {}, set(), [], {}
    lock = threading.Lock()

    def pump(step, proc):
        for line in proc.stdout:
            with lock:
                log(line.rstrip("\n"))

    cfg = load_profile(profile, overrides)

    def ready(step):
        needs = set(reads(step, chosen, cfg)) if not step.endswith("report") else set(numbers.values()) - {numbers[step]}
        return all(numbers[s] not in needs or s in finished for s in chosen if s != step)

    def share():
        """Every running step's torch threads: the cores split evenly (a step left alone gets them all)."""
        n = max(1, cores // max(1, len(running)))
        for step in running:
            _write_budget(budget_dir / step, n)
        return n

    def start(step, sharing):
        """Start ``step`` as one of ``sharing`` steps running once this round's steps are started."""
        solo = numbers[step] in alone
        env = dict(os.environ)
        threads = max(1, cores // sharing)
        if not solo:  # torch reads these at start; the kernel then follows its budget file (progress.THREADS_ENV)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
            env[THREADS_ENV] = str(budget_dir / step)
            _write_budget(budget_dir / step, threads)
        cmd = [sys.executable, "-m", "mvlib.study.pipeline", "--profile", profile, "--only", step, "--jobs", "1",
               "--overrides-json", json.dumps(overrides), "--notebook-dir", str(NOTEBOOK_DIR), "--child",
               "--parent-pid", str(os.getpid())]
        if force:
            cmd.append("--force")
        elif step in rerun:
            cmd.append("--rerun")
        log(f"[{step}] started ({'alone, every core' if solo else f'{threads} thread(s) now'}; "
            f"{sharing} step(s) running)")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=str(REPO_ROOT))
        t = threading.Thread(target=pump, args=(step, proc), daemon=True)
        t.start()
        running[step] = (proc, t, time.time())

    def reap():
        """Collect the steps that ended; True when any did."""
        ended = False
        for step, (proc, t, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            ended = True
            t.join()
            del running[step]
            if proc.returncode == 3:  # the child stopped at the deadline (its runs keep their checkpoints)
                failures.append("deadline")
                continue
            if proc.returncode != 0:
                failures.append(step)
                continue
            finished.add(step)
            step_records[step] = json.loads((out_dir / f"{step}.done.json").read_text())
        return ended

    def due():
        """The pending steps to start now, in schedule order."""
        batch = []
        for step in list(pending):
            busy = list(running) + batch
            solo = numbers[step] in alone or step.endswith("report")
            if len(busy) >= jobs or (solo and busy) or any(numbers[r] in alone or r.endswith("report") for r in busy):
                break
            if ready(step):
                batch.append(step)
            elif solo:
                break  # a step that needs the machine to itself waits in its place
        return batch

    # Each round: collect the steps that ended, start the ones now due, and only then re-split the cores. A step
    # that ended and the step that takes its place are one change: re-splitting in between gave the survivor
    # every core until the newcomer had started (two budget writes and a process start: likely widened by fsyncs
    # waiting behind checkpoint writes, not measured), and a notebook that read its budget then kept both cores
    # for a whole epoch beside the newcomer (a 65 s epoch instead of 8 s in a smoke run of notebook 06).
    def rounds():
        while pending or running:
            ended = reap()
            if pending and not failures and deadline_passed():
                log(f"--max-hours ran out: {len(pending)} step(s) not started")
                failures.append("deadline")
            if failures:
                pending.clear()
            batch = due()
            sharing = len(running) + len(batch)
            for step in batch:
                pending.remove(step)
                start(step, sharing)
            if ended or batch:
                share()
            if not running and pending and not failures and not any(ready(s) for s in pending):
                raise RuntimeError(f"steps {pending} wait on steps that are not scheduled")  # a READS cycle
            time.sleep(0.5)

    try:
        rounds()
    finally:  # an error or Ctrl-C here: no step outlives the pipeline (a kill -9: _die_with_parent)
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        shutil.rmtree(budget_dir, ignore_errors=True)
    if failures and set(failures) == {"deadline"}:
        raise StoppedAtDeadline(f"--max-hours ran out (finished: {sorted(finished)}): rerun the same command "
                                f"to resume")
    if failures:
        raise StepFailed(f"step(s) {failures} failed (their lines above say where); finished: {sorted(finished)}")
    return [step_records[s] for s in order]


def smoke_overrides(profile: str, overrides: dict | None = None) -> dict:
    """:data:`SMOKE_OVERRIDES` (and a scratch results folder) under the caller's own overrides.

    The profile's per-network recipes keep their choices (one step or two, teacher, optimizer, ...) but take
    the smoke run's sizes (epochs, batch) where they set them.
    """
    recipes = {m: {**r, **{k: SMOKE_OVERRIDES[k] for k in r if k in SMOKE_OVERRIDES}}
               for m, r in load_profile(profile)["model_recipes"].items()}
    return {**SMOKE_OVERRIDES, "model_recipes": recipes, "results_dir": f"build/smoke/{profile}/results",
            **(overrides or {})}


def run_pipeline(profile: str = "cpu", only: list[str] | None = None, force: bool = False,
                 overrides: dict | None = None, log=print, jobs: int | None = None, record: bool = True,
                 smoke: bool = False, max_hours: float | None = None, estimate_first: bool | None = None,
                 rerun: bool = False, plan: bool = True) -> list[dict]:
    """Run the chosen steps of ``profile`` (all by default); see the module docstring.

    ``smoke``: :func:`smoke_overrides` first. ``max_hours``: no step starts
    after that many hours, and a training run stops after the epoch that
    crosses it (its checkpoint kept); :class:`StoppedAtDeadline` then says to
    rerun the same command, which resumes. ``estimate_first`` (default: the
    ``paper`` profile, not in smoke mode): print :func:`mvlib.study.estimate.estimate`
    for the chosen steps before the first one starts. ``rerun``: execute the
    chosen steps although they are current (their runs with weights are
    reused, the others trained again). ``plan`` (default): add the steps whose
    weights a chosen step needs (:func:`plan_steps`); a child of a parallel
    run has its plan from the parent.

    ``runs.csv`` and ``summary.csv`` are rebuilt from the records first; the
    timing record ``pipeline_last.json`` is written only by a run of every step
    that executed at least one, so a run that changes nothing leaves the
    results as they were.
    """
    overrides = smoke_overrides(profile, overrides) if smoke else dict(overrides or {})
    cfg = load_profile(profile, overrides)  # unknown key / wrong type / out of range: error before any work
    if max_hours is not None:
        if not max_hours > 0:
            raise ValueError(f"max_hours must be > 0, got {max_hours}")
        os.environ[DEADLINE_ENV] = str(time.time() + 3600 * max_hours)  # children and kernels inherit it
    jobs = cfg["study_jobs"] if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    overrides.pop("study_jobs", None)  # a pipeline setting, not a notebook parameter
    all_steps = steps()
    chosen = all_steps if not only else [s for s in all_steps if s in only or s.split("_", 1)[0] in only]
    unknown = set(only or []) - set(chosen) - {s.split("_", 1)[0] for s in chosen}
    if unknown:
        raise ValueError(f"unknown step(s) {sorted(unknown)}; steps are {all_steps}")
    check_data(cfg)
    ensure_kernel(log)
    results = resolve_results_dir(cfg["results_dir"])
    out_dir = results / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    with _results_lock(out_dir) if plan else contextlib.nullcontext():  # (a child: its parent holds it)
        if plan and (results / "runs").is_dir():
            records.update_summary(results)  # the index follows the records that exist (deleted ones included)
        rerun_steps = set(chosen) if rerun else set()
        if plan:
            chosen, restore = plan_steps(chosen, profile, overrides, out_dir, force, sorted(rerun_steps), all_steps)
            for step, ids in restore.items():
                log(f"[{step}] re-executed first: a later step needs the weights of {len(ids)} of its finished runs, "
                    f"which this checkout does not hold (checkpoints are not committed); they are trained again")
            rerun_steps |= set(restore)
        before = {s: _read(out_dir / f"{s}.done.json") for s in chosen}
        if estimate_first if estimate_first is not None else (profile == "paper" and not smoke and record):
            from .experiment import resolve_device
            from .estimate import estimate
            hours = estimate(cfg, resolve_device(cfg), log=log)
            log(f"chosen steps: {sum(h for s, h in hours.items() if s in chosen):.1f} h estimated"
                + (f"; --max-hours {max_hours} stops cleanly and a rerun resumes" if max_hours else ""))
        t_all = time.time()
        if jobs > 1 and len(chosen) > 1:
            log(f"study ({profile}): {len(chosen)} step(s), up to {jobs} at once")
            done = _run_parallel(chosen, profile, overrides, force, jobs, out_dir, log, alone=() if smoke else ALONE,
                                 rerun=frozenset(rerun_steps))
        else:
            done = []
            for i, step in enumerate(chosen, 1):
                if deadline_passed():
                    raise StoppedAtDeadline(f"--max-hours ran out before {step}: rerun the same command to resume")
                prev = out_dir / f"{step}.done.json"
                took = json.loads(prev.read_text()).get("seconds") if prev.is_file() else None
                log(f"[{i}/{len(chosen)}] {step} (profile {profile})"
                    + (f", last run took {_clock(took)}" if took else ""))
                t0 = time.time()
                try:
                    done.append(run_step(step, profile, overrides, out_dir, force=force, log=log,
                                         rerun=step in rerun_steps))
                except StepFailed as e:
                    if "DeadlineReached" in str(e):
                        raise StoppedAtDeadline(f"--max-hours ran out in {step} (its runs keep their last epoch): "
                                                f"rerun the same command to resume") from None
                    raise
                log(f"[{i}/{len(chosen)}] {step} done in {_clock(time.time() - t0)} "
                    f"(total {_clock(time.time() - t_all)})")
                if step.endswith("report"):  # (in a parallel run, the report's child process does this)
                    report = results / ("report.html" if profile == "cpu" else f"report-{profile}.html")
                    write_atomic(report, (out_dir / f"{step}.html").read_text())
                    log(f"report: {report}")
        total = time.time() - t_all
        executed = [s for s in chosen if _read(out_dir / f"{s}.done.json") != before[s]]
        if record and not executed:
            log(f"study ({profile}): all {len(chosen)} step(s) current (notebooks, configuration, code and records "
                f"unchanged): nothing to run; --force (make study FORCE=1) reproduces every run from scratch")
        elif record:
            log(f"study ({profile}): {len(executed)} of {len(chosen)} step(s) executed in {total / 60:.1f} min")
        if record and executed and not only:
            write_json(out_dir / "pipeline_last.json", {"profile": profile, "steps": [d["step"] for d in done],
                                                         "jobs": jobs, "wall_seconds": round(total, 1),
                                                         "step_seconds": {d["step"]: d["seconds"] for d in done}})
    return done


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="exit codes: 0 done (or nothing to run), 1 an error (one line names it), "
                                        "3 --max-hours ran out (rerun to resume), 130 stopped by Ctrl-C")
    ap.add_argument("--profile", default="cpu", help="configs/<profile>.yaml (ci, cpu, paper)")
    ap.add_argument("--only", nargs="*", help="run only these steps (names or number prefixes)")
    ap.add_argument("--force", action="store_true", help="re-execute steps already done, and the runs inside them")
    ap.add_argument("--rerun", action="store_true",
                    help="re-execute the chosen steps although they are current: their runs whose weights are "
                         "missing (a fresh clone) are trained again, the others reused")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="configuration overrides")
    ap.add_argument("--jobs", type=int, default=None, help="notebooks at once (default: the profile's study_jobs)")
    ap.add_argument("--smoke", action="store_true",
                    help="every notebook on the profile's code path at a few images, into build/smoke/<profile>/")
    ap.add_argument("--max-hours", type=float, default=None,
                    help="stop cleanly after this many hours (a rerun of the same command resumes)")
    ap.add_argument("--estimate", action="store_true", help="print the images and hours per notebook, then exit")
    ap.add_argument("--no-estimate", action="store_true", help="do not print the estimate before a paper run")
    # how a parallel run starts its children (not for users)
    ap.add_argument("--overrides-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--notebook-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global NOTEBOOK_DIR
    if args.notebook_dir:
        NOTEBOOK_DIR = Path(args.notebook_dir)
    if args.child:  # the parent's end (or death: _die_with_parent) stops the step as Ctrl-C would, kernel included
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        _die_with_parent(args.parent_pid or os.getppid())
    try:
        overrides = json.loads(args.overrides_json) if args.overrides_json else parse_cli_overrides(args.set)
        if args.estimate:
            from .estimate import estimate
            from .experiment import resolve_device
            cfg = load_profile(args.profile, smoke_overrides(args.profile, overrides) if args.smoke else overrides)
            estimate(cfg, resolve_device(cfg))
            return 0
        run_pipeline(args.profile, args.only, args.force, overrides, jobs=args.jobs, record=not args.child,
                     smoke=args.smoke and not args.child, max_hours=args.max_hours,
                     estimate_first=False if (args.no_estimate or args.child) else None, rerun=args.rerun,
                     plan=not args.child)
    except StoppedAtDeadline as e:
        print(f"stopped: {e.args[0]}", file=sys.stderr)
        return 3
    except (StepFailed, PipelineBusy, KeyError, TypeError, ValueError, FileNotFoundError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    except (records.RecordError, records.RunBusy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a results folder that is a file, a full disk, no permission: the file, in one line
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped by the user (Ctrl-C): finished runs are kept; the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
