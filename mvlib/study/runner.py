"""Executing one step of the study: its notebook under papermill, the executed copy and its HTML.

* Each step writes ``<results>/notebooks/<profile>/<step>.ipynb`` and ``.html`` (inputs hidden)
  atomically: a failed run leaves ``<step>.failed.ipynb`` and never replaces the last good copy.
* A finished step is recorded in ``<step>.done.json`` (its key and upstream digest:
  :mod:`mvlib.study.steps`); a step that is current is skipped.
* While a notebook runs, the lines its runs report (:mod:`mvlib.study.progress`: one per epoch, with
  elapsed time and an estimate) are shown live.
* Before any kernel starts, the Jupyter kernel is registered where it is missing and the data folder
  is checked.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from ..environment import REPO_ROOT
from ..files import write_atomic, write_json
from ..train import DeadlineReached
from .progress import ENV as PROGRESS_ENV
from .progress import THREADS_ENV
from .records import resolve_results_dir
from .steps import StepGraph, step_config

KERNEL_NAME = "mvlib"  # registered by `make setup` (ipykernel install --sys-prefix --name mvlib)
# the kernel's own INFO/WARNING lines (e.g. "running over TCP without encryption" on a local kernel) are not
# the user's business in a batch run
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


class StepReachedDeadline(StepFailed):
    """A notebook stopped at ``--max-hours`` (a training run raised :class:`mvlib.train.DeadlineReached` after
    a checkpointed epoch); the message is that of any failed step."""


class StoppedAtDeadline(RuntimeError):
    """``--max-hours`` ran out: finished work is kept, the same command resumes."""


def render_html(ipynb: Path, html: Path) -> None:
    """Executed notebook -> self-contained HTML with inputs hidden (images are embedded as data URIs)."""
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    write_atomic(html, body)


def failure_message(step: str, err: Exception) -> str:
    """``step X failed in cell In [3] ('first line of the cell'): Name: value`` from papermill's error (which
    carries the cell's number, source and exception), or from any other error."""
    cell = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    first = (getattr(err, "source", "") or "").strip().splitlines()[:1]
    where = f"cell In [{cell}]" if cell is not None else "a cell"
    if first:
        where += f" ({first[0][:60]!r})"
    return f"step {step} failed in {where}: {ename}: {evalue}"


class ProgressTail(threading.Thread):
    """Prints the lines appended to a progress file until stopped (the kernel has no terminal)."""

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
            if stopping:  # one last read after the stop: the kernel's final lines are shown too
                return


def run_step(graph: StepGraph, step: str, profile: str, overrides: dict, out_dir: Path, force: bool = False,
             log=print, rerun: bool = False) -> dict:
    """Execute one notebook of ``graph``, or skip it when it is current (unless ``force`` or ``rerun``).

    ``rerun``: execute it although nothing changed, reusing its finished runs that still have their
    weights and training the others again; ``force``: train every run again. A skipped step's record is
    returned with ``"skipped": True``. A notebook that fails raises :class:`StepFailed`
    (:class:`StepReachedDeadline` when its runs stopped at ``--max-hours``).
    """
    import logging

    import papermill as pm
    src = graph.notebook(step)
    if not src.is_file():
        raise FileNotFoundError(f"no notebook {src}")
    params, cfg = step_config(profile, overrides, force)
    results = resolve_results_dir(cfg["results_dir"])
    key = graph.step_key(src, cfg)
    done = out_dir / f"{step}.done.json"
    if not (force or rerun) and graph.is_current(step, profile, overrides, out_dir):
        log(f"[{step}] unchanged (notebook, configuration, code and the records it reads): skipped")
        return {**json.loads(done.read_text()), "skipped": True}
    partial = out_dir / f".{step}.partial.ipynb"
    progress_file = out_dir / f".{step}.progress.log"  # beside the results (no temporary files elsewhere)
    progress_file.write_text("")
    tail = ProgressTail(progress_file, f"[{step}]", log)
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
        # the kernel's exception reaches here by its class name (ename), not as an object
        stopped = getattr(e, "ename", None) == DeadlineReached.__name__
        raise (StepReachedDeadline if stopped else StepFailed)(
            failure_message(step, e) + f" (executed copy: {failed})") from None
    finally:
        tail.stop.set()
        tail.join()
        os.environ.pop(PROGRESS_ENV, None)
        progress_file.unlink(missing_ok=True)
    final = out_dir / f"{step}.ipynb"
    os.replace(partial, final)
    relative_papermill_paths(final, src)
    render_html(final, out_dir / f"{step}.html")
    record = {"step": step, "hash": key, "upstream": graph.upstream_digest(results, step, cfg),
              "code_hash": graph.code_hash(), "seconds": round(time.time() - t0, 1), "params": params,
              "started_utc": started, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch_threads": ("shared: the pipeline's budget" if os.environ.get(THREADS_ENV)
                                else os.environ.get("OMP_NUM_THREADS", "default"))}
    write_json(done, record)
    (out_dir / f"{step}.failed.ipynb").unlink(missing_ok=True)
    return record


def relative_papermill_paths(executed: Path, src: Path) -> None:
    """Write the executed notebook's papermill input/output paths relative to the checkout.

    papermill records the absolute paths of the machine that ran it; a committed copy should say where the
    notebook lies in the repository, not in whose home folder it was executed.
    """
    import nbformat
    nb = nbformat.read(str(executed), as_version=4)
    meta = nb.metadata.get("papermill")
    if meta is None:
        return
    for key, path in (("input_path", src), ("output_path", executed)):
        try:
            meta[key] = Path(path).resolve().relative_to(REPO_ROOT.resolve()).as_posix()
        except ValueError:  # a results folder outside the checkout keeps its absolute path
            meta[key] = str(path)
    nbformat.write(nb, str(executed))


def ensure_kernel(log=print) -> None:
    """Register the ``mvlib`` Jupyter kernel for this Python when it is missing (conda or pip installs without make)."""
    from jupyter_client.kernelspec import KernelSpecManager
    if KERNEL_NAME in KernelSpecManager().find_kernel_specs():
        return
    from ipykernel.kernelspec import install
    install(kernel_name=KERNEL_NAME, display_name=f"{KERNEL_NAME} ({Path(sys.prefix).name})", prefix=sys.prefix)
    log(f"registered the Jupyter kernel {KERNEL_NAME!r} for {sys.executable}")


def check_appendix_data(cfg: dict) -> None:
    """Fail before any work when a dataset of notebook 06 (``appendix_datasets``) cannot be read.

    A missing file would otherwise leave a column of the appendix's table empty for the whole run; the
    error names the file and how to leave the dataset out instead. Without any data folder (torchvision
    downloads) the notebook itself says which dataset it cannot get and goes on with the others: torchvision
    has no offline subset file to be missing.
    """
    from ..data import DataError, resolve_data_dir
    from .appendix import data_missing
    for dataset in cfg["appendix_datasets"]:
        try:
            if resolve_data_dir(dataset, cfg["data_dir"]) is None:
                continue
        except DataError:
            pass  # data_missing names the problem
        why = data_missing(cfg, dataset)
        if why is not None:
            keep = [d for d in cfg["appendix_datasets"] if d != dataset]
            raise DataError(f"notebook 06 needs {dataset}: {why}; put the files there, or leave {dataset} out "
                            f"with --set appendix_datasets={json.dumps(keep, separators=(',', ':'))}")


def check_data(cfg: dict) -> None:
    """Fail before any kernel starts when the data folder the study would read is missing or malformed."""
    from ..data import inspect_npz, resolve_data_dir
    folder = resolve_data_dir(cfg["dataset"], cfg["data_dir"])
    if folder is not None:
        for name in (cfg["train_file"], "test.npz"):
            inspect_npz(folder / name)
