"""Several steps at once: each in its own process, as soon as the steps it reads are done, on a shared core budget.

``study_jobs`` (profile key, or ``--jobs``) > 1 runs that many notebooks at once; the cores are split evenly
among the running notebooks and the split follows them (a notebook left alone gets every core back at its
next epoch or record: :func:`mvlib.study.run_setup.apply_process_settings`, which reads the budget file
named by :data:`mvlib.study.progress.THREADS_ENV`). Why: on the 2-core CPU, notebook 01 trained at 86 s per
epoch beside notebook 06 (67 s alone on both cores) while 06 kept its speed alone: about 1.7x the images/s of
one notebook at a time (width 16). The timing notebook (:data:`mvlib.study.steps.ALONE`) waits for an idle
machine and runs on every core (not in a smoke run, whose timings nobody reads).

A child step reports how it ended in a status file (:class:`StepStatus`: done with its record, failed, or
stopped at the deadline) that the :class:`Scheduler` reads when the process has ended; a child that ended
without one (killed, crashed) failed.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..environment import REPO_ROOT
from ..files import write_json
from .progress import THREADS_ENV
from .runner import StepFailed, StoppedAtDeadline
from .steps import ALONE, is_report, step_number

DONE, FAILED, DEADLINE = "done", "failed", "deadline"


@dataclass(frozen=True)
class StepStatus:
    """How a child step ended: ``status`` is :data:`DONE` (``record``: its ``<step>.done.json``),
    :data:`FAILED` or :data:`DEADLINE`; ``message``: the line the child printed for it."""
    status: str
    message: str = ""
    record: dict | None = None

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path, returncode: int | None = None) -> StepStatus:
        """The status a child wrote; a missing or unreadable one is a failure (the child died before it)."""
        try:
            status = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return cls(FAILED, f"ended (exit code {returncode}) without a status")
        return status if status.status in (DONE, FAILED, DEADLINE) else cls(FAILED, f"unknown status {status}")


@dataclass(frozen=True)
class StepStart:
    """What the scheduler asks a launcher to start: ``threads`` and ``budget_file`` are None for a step that
    runs alone on every core; the child writes its :class:`StepStatus` to ``status_file``."""
    step: str
    threads: int | None
    budget_file: Path | None
    status_file: Path


class StepProcess(Protocol):
    """A started step, as :class:`subprocess.Popen` is one: ``wait`` also waits for its output to be passed on."""
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def terminate(self) -> None: ...


class ChildProcess:
    """A step's process with a thread that passes its output lines (already prefixed with the step) to ``log``."""

    def __init__(self, proc: subprocess.Popen, log, lock: threading.Lock):
        self.proc = proc
        self.pump = threading.Thread(target=self._pass_on, args=(log, lock), daemon=True)
        self.pump.start()

    def _pass_on(self, log, lock):
        for line in self.proc.stdout:
            with lock:  # one log line at a time from all the children
                log(line.rstrip("\n"))

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        code = self.proc.wait()
        self.pump.join()
        return code

    def terminate(self) -> None:
        self.proc.terminate()


@dataclass
class StepLauncher:
    """Starts a step as this package's command line: ``python -m mvlib.study.pipeline --only <step> --jobs 1
    --child``, with the parent's profile, overrides and notebook folder."""
    profile: str
    overrides: dict
    notebook_dir: Path
    log: Callable[[str], None]
    force: bool = False
    rerun: frozenset = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, start: StepStart) -> list[str]:
        cmd = [sys.executable, "-m", "mvlib.study.pipeline", "--profile", self.profile, "--only", start.step,
               "--jobs", "1", "--overrides-json", json.dumps(self.overrides), "--notebook-dir",
               str(self.notebook_dir), "--child", "--parent-pid", str(os.getpid()),
               "--status-file", str(start.status_file)]
        if self.force:
            cmd.append("--force")
        elif start.step in self.rerun:
            cmd.append("--rerun")
        return cmd

    def __call__(self, start: StepStart) -> ChildProcess:
        env = dict(os.environ)
        if start.threads is not None:  # torch reads these at start; the kernel then follows its budget file
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(start.threads)
            env[THREADS_ENV] = str(start.budget_file)
        proc = subprocess.Popen(self.command(start), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=str(REPO_ROOT))
        return ChildProcess(proc, self.log, self.lock)


def write_budget(path: Path, threads: int) -> None:
    """A step's thread budget: replaced atomically, not synced (a scratch file read by a live process; an fsync
    can wait behind a notebook's checkpoint writes). ``files.write_atomic`` with a ``sync`` flag is the better
    home for this; it is in the code hash, so that move waits for the next change that reruns the study."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(threads))
    os.replace(tmp, path)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def die_with_parent(parent: int) -> None:
    """In a child step, first thing: SIGTERM when the pipeline that started it dies, even by kill -9 (Linux
    ``PR_SET_PDEATHSIG``); the child turns it into a clean stop that shuts its kernel down.

    Set by the child itself rather than in ``Popen(preexec_fn=...)``, which is unsafe while the parent runs
    threads (its output pumps); a ``parent`` (its pid) that died before this call is caught by the
    ``getppid`` check.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's stop still ends its children
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def schedule_order(chosen: list[str], alone: tuple[str, ...] = ALONE) -> list[str]:
    """The steps in file order, the timing steps (``alone``) after them, the report last."""
    def rank(step):
        return (is_report(step), step_number(step) in alone)
    return sorted(chosen, key=rank)  # stable: file order within each group


class Scheduler:
    """Runs ``chosen`` steps, ``jobs`` at once, each when the steps it waits for (``waits_for``: numbers) are done.

    The steps numbered in ``alone`` (timings) wait for an idle machine and run on every core; the report waits
    for an idle machine too. After a failure, or once ``deadline`` (seconds since the epoch) has passed, no
    new step starts and the running ones finish. ``launch`` starts a step (:class:`StepLauncher`); ``cores``,
    ``clock``, ``sleep`` and ``write_budget`` are the machine's, and a test passes its own.

    State: ``pending`` (schedule order), ``running`` (step -> process), ``finished`` (step -> record),
    ``failures`` (the failed steps, and :data:`DEADLINE` for each stop at the deadline, in the order they
    came), ``messages`` (step -> why it failed) and ``budgets`` (running step -> the threads last given).
    """

    def __init__(self, chosen: list[str], waits_for: dict[str, set[str]], jobs: int, launch, log,
                 scratch_dir: Path, alone: tuple[str, ...] = ALONE, deadline: float | None = None,
                 cores: int | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, write_budget: Callable[[Path, int], None] = write_budget):
        self.order, self.waits_for, self.jobs, self.alone = schedule_order(chosen, alone), waits_for, jobs, alone
        self.launch, self.log, self.scratch_dir, self.deadline = launch, log, scratch_dir, deadline
        self.cores = available_cores() if cores is None else cores
        self.clock, self.sleep, self.write_budget = clock, sleep, write_budget
        self.pending: list[str] = list(self.order)
        self.running: dict[str, StepProcess] = {}
        self.finished: dict[str, dict] = {}
        self.failures: list[str] = []
        self.messages: dict[str, str] = {}
        self.budgets: dict[str, int] = {}

    def _status_file(self, step: str) -> Path:
        return self.scratch_dir / f"{step}.status.json"

    def _waits_alone(self, step: str) -> bool:
        return step_number(step) in self.alone or is_report(step)

    def ready(self, step: str) -> bool:
        needs = self.waits_for[step]
        return all(step_number(s) not in needs or s in self.finished for s in self.order if s != step)

    def collect(self) -> bool:
        """Collect the steps that ended; True when any did."""
        ended = False
        for step, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            ended = True
            proc.wait()
            del self.running[step]
            self.budgets.pop(step, None)
            status = StepStatus.read(self._status_file(step), proc.returncode)
            if status.status == DONE:
                self.finished[step] = status.record
            else:  # a stop at the deadline keeps its runs' checkpoints: the same command resumes
                self.failures.append(DEADLINE if status.status == DEADLINE else step)
                self.messages[step] = status.message
        return ended

    def due(self) -> list[str]:
        """The pending steps to start now, in schedule order."""
        batch = []
        for step in self.pending:
            busy = list(self.running) + batch
            solo = self._waits_alone(step)
            if len(busy) >= self.jobs or (solo and busy) or any(self._waits_alone(r) for r in busy):
                break
            if self.ready(step):
                batch.append(step)
            elif solo:
                break  # a step that needs the machine to itself waits in its place
        return batch

    def start(self, step: str, sharing: int) -> None:
        """Start ``step`` as one of ``sharing`` steps running once this round's steps are started."""
        solo = step_number(step) in self.alone
        threads = max(1, self.cores // sharing)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        budget = None if solo else self.scratch_dir / step
        if budget is not None:
            self.write_budget(budget, threads)
            self.budgets[step] = threads
        status = self._status_file(step)
        status.unlink(missing_ok=True)
        self.log(f"[{step}] started ({'alone, every core' if solo else f'{threads} thread(s) now'}; "
                 f"{sharing} step(s) running)")
        self.running[step] = self.launch(StepStart(step, None if solo else threads, budget, status))

    def share(self) -> None:
        """Every running step's torch threads: the cores split evenly (a step left alone gets them all)."""
        n = max(1, self.cores // max(1, len(self.running)))
        for step in self.running:
            self.write_budget(self.scratch_dir / step, n)
            self.budgets[step] = n

    # Each round: collect the steps that ended, start the ones now due, and only then re-split the cores. A step
    # that ended and the step that takes its place are one change: re-splitting in between gave the survivor
    # every core until the newcomer had started (two budget writes and a process start: likely widened by fsyncs
    # waiting behind checkpoint writes, not measured), and a notebook that read its budget then kept both cores
    # for a whole epoch beside the newcomer (a 65 s epoch instead of 8 s in a smoke run of notebook 06).
    def tick(self) -> bool:
        """One round (see above); True while steps are pending or running."""
        ended = self.collect()
        if self.pending and not self.failures and self.deadline is not None and self.clock() >= self.deadline:
            self.log(f"--max-hours ran out: {len(self.pending)} step(s) not started")
            self.failures.append(DEADLINE)
        if self.failures:
            self.pending.clear()
        batch = self.due()
        sharing = len(self.running) + len(batch)
        for step in batch:
            self.pending.remove(step)
            self.start(step, sharing)
        if ended or batch:
            self.share()
        if not self.running and self.pending and not self.failures and not any(map(self.ready, self.pending)):
            raise RuntimeError(f"steps {self.pending} wait on steps that are not scheduled")  # a READS cycle
        return bool(self.pending or self.running)

    def stop(self) -> None:
        """End every running step (no step outlives the pipeline) and remove the scratch folder."""
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            proc.wait()
        shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def run(self) -> list[dict]:
        """Rounds until every step ended; the records in schedule order, or the first failure raised."""
        try:
            while self.tick():
                self.sleep(0.5)
        finally:  # an error or Ctrl-C here: no step outlives the pipeline (a kill -9: die_with_parent)
            self.stop()
        done = sorted(self.finished)
        if self.failures and set(self.failures) == {DEADLINE}:
            raise StoppedAtDeadline(f"--max-hours ran out (finished: {done}): rerun the same command to resume")
        if self.failures:
            raise StepFailed(f"step(s) {self.failures} failed (their lines above say where); finished: {done}")
        return [self.finished[s] for s in self.order]
