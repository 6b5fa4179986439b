"""Run the study's notebooks in order with papermill, keep executed copies and HTML, show live progress.

    python -m mvlib.study.pipeline --profile cpu [--only 01 02] [--force] [--set key=value ...]

* Parameters are checked against the configuration schema *before* any
  notebook starts (papermill alone only warns about unknown ones), and so is
  the data folder.
* Each step writes ``<results>/notebooks/<profile>/<step>.ipynb`` and
  ``.html`` (inputs hidden) atomically: a failed run leaves
  ``<step>.failed.ipynb`` and never replaces the last good copy
  (:mod:`mvlib.study.runner`).
* A finished step is recorded in ``<step>.done.json`` with a hash of its
  notebook, its resolved configuration, the code hash
  (:func:`mvlib.environment.code_hash`) and a digest of every record the
  earlier steps wrote (for the report: of every result file). A rerun skips
  the step only when all four are unchanged; it continues from the step that
  failed. ``--force`` re-executes the steps *and* the runs inside them.
* A fresh clone holds the records and executed notebooks, not the weights
  (``checkpoints/`` is ignored): a current study executes nothing there; a
  step that must run and reads weights its clone lacks first re-executes the
  step that trained them (:mod:`mvlib.study.steps`), and ``--rerun`` does that by
  hand. The summaries are rebuilt from the records that exist.
* The report step also renders ``<results>/report.html`` (``report-<profile>.html``
  for profiles other than ``cpu``).
* ``study_jobs`` (profile key, or ``--jobs``) > 1 runs that many notebooks at
  once, each in its own process, as soon as the steps it reads are done, on a
  shared core budget (:mod:`mvlib.study.scheduler`).
* ``--smoke`` lays ``configs/smoke.yaml`` over the profile (:func:`smoke_overrides`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from ..environment import REPO_ROOT
from ..files import write_atomic, write_json
from . import records
from .config import load_overlay, load_profile, parse_cli_overrides
from .progress import DEADLINE_ENV, deadline_passed, error_line, pipeline_deadline
from .records import resolve_results_dir
from .runner import (KERNEL_NAME, StepFailed, StepReachedDeadline, StoppedAtDeadline, check_appendix_data,
                     check_data, ensure_kernel)
from .runner import run_step as run_graph_step
from .scheduler import DEADLINE, DONE, FAILED, Scheduler, StepLauncher, StepStatus, die_with_parent
from .steps import ALONE, NOTEBOOK_DIR, StepGraph, is_report, step_number

__all__ = ["ALONE", "KERNEL_NAME", "NOTEBOOK_DIR", "REPO_ROOT", "PipelineBusy", "StepFailed", "StoppedAtDeadline",
           "main", "results_lock", "run_pipeline", "run_step", "smoke_overrides", "steps"]


# profiles whose run prints the estimate before its first notebook (a day or more of machine time)
ESTIMATED = ("paper", "long")


class PipelineBusy(RuntimeError):
    """Another pipeline runs on the same results folder."""


def steps() -> list[str]:
    """The study's notebook names in execution order (:meth:`mvlib.study.steps.StepGraph.steps`)."""
    return StepGraph().steps()


def run_step(step: str, profile: str, overrides: dict, out_dir: Path, force: bool = False, log=print,
             rerun: bool = False) -> dict:
    """One notebook of the study (:func:`mvlib.study.runner.run_step` on the study's notebook folder)."""
    return run_graph_step(StepGraph(), step, profile, overrides, out_dir, force=force, log=log, rerun=rerun)


def smoke_overrides(profile: str, overrides: dict | None = None) -> dict:
    """``configs/smoke.yaml`` (and a scratch results folder) under the caller's own overrides.

    The profile's per-network recipes keep their choices (one step or two, teacher, optimizer, ...) but take
    the smoke run's sizes (epochs, batch) where they set them.
    """
    smoke = load_overlay("smoke")
    recipes = {m: {**r, **{k: smoke[k] for k in r if k in smoke}}
               for m, r in load_profile(profile)["model_recipes"].items()}
    return {**smoke, "model_recipes": recipes, "results_dir": f"build/smoke/{profile}/results", **(overrides or {})}


@contextlib.contextmanager
def results_lock(out_dir: Path):
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


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _run_in_order(graph: StepGraph, chosen: list[str], profile: str, overrides: dict, force: bool, out_dir: Path,
                  results: Path, log, rerun_steps: set[str]) -> list[dict]:
    """The steps one after the other in this process (``jobs`` 1, and every child of a parallel run)."""
    done, t_all = [], time.time()
    for i, step in enumerate(chosen, 1):
        if deadline_passed():
            raise StoppedAtDeadline(f"--max-hours ran out before {step}: rerun the same command to resume")
        prev = out_dir / f"{step}.done.json"
        took = json.loads(prev.read_text()).get("seconds") if prev.is_file() else None
        log(f"[{i}/{len(chosen)}] {step} (profile {profile})" + (f", last run took {_clock(took)}" if took else ""))
        t0 = time.time()
        try:
            done.append(run_graph_step(graph, step, profile, overrides, out_dir, force=force, log=log,
                                       rerun=step in rerun_steps))
        except StepReachedDeadline:
            raise StoppedAtDeadline(f"--max-hours ran out in {step} (its runs keep their last epoch): "
                                    f"rerun the same command to resume") from None
        log(f"[{i}/{len(chosen)}] {step} done in {_clock(time.time() - t0)} (total {_clock(time.time() - t_all)})")
        if is_report(step):  # (in a parallel run, the report's child process does this)
            report = results / ("report.html" if profile == "cpu" else f"report-{profile}.html")
            write_atomic(report, (out_dir / f"{step}.html").read_text())
            log(f"report: {report}")
    return done


def run_pipeline(profile: str = "cpu", only: list[str] | None = None, force: bool = False,
                 overrides: dict | None = None, log=print, jobs: int | None = None, record: bool = True,
                 smoke: bool = False, max_hours: float | None = None, estimate_first: bool | None = None,
                 rerun: bool = False, plan: bool = True, notebook_dir: Path | None = None,
                 make_scheduler=Scheduler) -> list[dict]:
    """Run the chosen steps of ``profile`` (all by default); see the module docstring.

    ``smoke``: :func:`smoke_overrides` first. ``max_hours``: no step starts
    after that many hours, and a training run stops after the epoch that
    crosses it (its checkpoint kept); :class:`StoppedAtDeadline` then says to
    rerun the same command, which resumes. ``estimate_first`` (default: the
    profiles of :data:`ESTIMATED`, not in smoke mode): print :func:`mvlib.study.estimate.estimate`
    for the chosen steps before the first one starts. ``rerun``: execute the
    chosen steps although they are current (their runs with weights are
    reused, the others trained again). ``plan`` (default): add the steps whose
    weights a chosen step needs (:meth:`StepGraph.plan_steps`); a child of a
    parallel run has its plan from the parent. ``notebook_dir``: where the
    notebooks are (default: the study's). ``make_scheduler``: builds the
    :class:`mvlib.study.scheduler.Scheduler` of a parallel run from its
    keyword arguments (a test passes one with its own cores or budget writer).

    ``runs.csv`` and ``summary.csv`` are rebuilt from the records first; the
    timing record ``pipeline_last.json`` is written only by a run of every step
    that executed at least one, so a run that changes nothing leaves the
    results as they were.
    """
    graph = StepGraph(notebook_dir or NOTEBOOK_DIR)
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
    all_steps = profile_steps(graph, cfg["study_steps"])
    chosen = all_steps if not only else [s for s in all_steps if s in only or step_number(s) in only]
    unknown = set(only or []) - set(chosen) - {step_number(s) for s in chosen}
    if unknown:
        raise ValueError(f"unknown step(s) {sorted(unknown)}; steps are {all_steps}")
    check_data(cfg)
    ensure_kernel(log)
    results = resolve_results_dir(cfg["results_dir"])
    out_dir = results / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    with results_lock(out_dir) if plan else contextlib.nullcontext():  # (a child: its parent holds it)
        if plan and (results / "runs").is_dir():
            records.update_summary(results)  # the index follows the records that exist (deleted ones included)
        rerun_steps = set(chosen) if rerun else set()
        if plan:
            chosen, restore = graph.plan_steps(chosen, profile, overrides, out_dir, force, sorted(rerun_steps),
                                               all_steps)
            for step, ids in restore.items():
                log(f"[{step}] re-executed first: a later step needs the weights of {len(ids)} of its finished runs, "
                    f"which this checkout does not hold (checkpoints are not committed); they are trained again")
            rerun_steps |= set(restore)
        appendix_step = next((s for s in chosen if step_number(s) == "06"), None)
        if appendix_step and not graph.is_current(appendix_step, profile, overrides, out_dir):
            check_appendix_data(cfg)
        before = {s: _read(out_dir / f"{s}.done.json") for s in chosen}
        if estimate_first if estimate_first is not None else (profile in ESTIMATED and not smoke and record):
            from .estimate import estimate
            from .run_setup import resolve_device
            hours = estimate(cfg, resolve_device(cfg), log=log)
            log(f"chosen steps: {sum(h for s, h in hours.items() if s in chosen):.1f} h estimated"
                + (f"; --max-hours {max_hours} stops cleanly and a rerun resumes" if max_hours else ""))
        t_all = time.time()
        if jobs > 1 and len(chosen) > 1:
            log(f"study ({profile}): {len(chosen)} step(s), up to {jobs} at once")
            launch = StepLauncher(profile, overrides, graph.notebook_dir, log, force, frozenset(rerun_steps))
            # a smoke run's timings are read by nobody: its timing step takes a slot like any other
            done = make_scheduler(chosen=chosen, waits_for=graph.waits_for(chosen, cfg), jobs=jobs, launch=launch,
                                  log=log, scratch_dir=out_dir / f".threads-{os.getpid()}",
                                  alone=() if smoke else ALONE, deadline=pipeline_deadline()).run()
        else:
            done = _run_in_order(graph, chosen, profile, overrides, force, out_dir, results, log, rerun_steps)
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


def profile_steps(graph: StepGraph, wanted: list[str]) -> list[str]:
    """The notebooks of a profile's study: those ``study_steps`` names (by number or name), or every one."""
    steps = graph.steps()
    if not wanted:
        return steps
    unknown = set(wanted) - set(steps) - {step_number(s) for s in steps}
    if unknown:
        raise ValueError(f"study_steps names unknown step(s) {sorted(unknown)}; steps are {steps}")
    return [s for s in steps if s in wanted or step_number(s) in wanted]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="exit codes: 0 done (or nothing to run), 1 an error (one line names it), "
                                        "3 --max-hours ran out (rerun to resume), 130 stopped by Ctrl-C")
    ap.add_argument("--profile", default="cpu", help="configs/<profile>.yaml (ci, cpu, long, paper)")
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
    ap.add_argument("--no-estimate", action="store_true", help="do not print the estimate before a paper or long run")
    # how a parallel run starts its children (not for users)
    ap.add_argument("--overrides-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--notebook-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--status-file", default=None, help=argparse.SUPPRESS)
    return ap


def _failed(message: str) -> tuple[int, StepStatus]:
    print(f"error: {message}", file=sys.stderr)
    return 1, StepStatus(FAILED, message)


def _run_command(args: argparse.Namespace) -> tuple[int, StepStatus]:
    """The command's exit code, and how it ended for a parent that started it as one of its steps."""
    try:
        overrides = json.loads(args.overrides_json) if args.overrides_json else parse_cli_overrides(args.set)
        if args.estimate:
            from .estimate import estimate
            from .run_setup import resolve_device
            cfg = load_profile(args.profile, smoke_overrides(args.profile, overrides) if args.smoke else overrides)
            estimate(cfg, resolve_device(cfg))
            return 0, StepStatus(DONE)
        done = run_pipeline(args.profile, args.only, args.force, overrides, jobs=args.jobs, record=not args.child,
                            smoke=args.smoke and not args.child, max_hours=args.max_hours,
                            estimate_first=False if (args.no_estimate or args.child) else None, rerun=args.rerun,
                            plan=not args.child, notebook_dir=Path(args.notebook_dir) if args.notebook_dir else None)
    except StoppedAtDeadline as e:
        print(f"stopped: {e.args[0]}", file=sys.stderr)
        return 3, StepStatus(DEADLINE, e.args[0])
    except (StepFailed, PipelineBusy, KeyError, TypeError, ValueError, FileNotFoundError) as e:
        return _failed(error_line(e))
    except (records.RecordError, records.RunBusy) as e:
        return _failed(str(e))
    except OSError as e:  # a results folder that is a file, a full disk, no permission: the file, in one line
        return _failed(error_line(e))
    except KeyboardInterrupt:
        message = "stopped by the user (Ctrl-C): finished runs are kept; the same command resumes"
        print(message, file=sys.stderr)
        return 130, StepStatus(FAILED, message)
    return 0, StepStatus(DONE, record=done[0] if len(done) == 1 else None)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.child:  # the parent's end (or death: die_with_parent) stops the step as Ctrl-C would, kernel included
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        die_with_parent(args.parent_pid or os.getppid())
    code, status = _run_command(args)
    if args.status_file:  # the parent reads how the step ended here, not from the exit code
        with contextlib.suppress(OSError):  # no status is read as a failure
            status.write(Path(args.status_file))
    return code


if __name__ == "__main__":
    sys.exit(main())
