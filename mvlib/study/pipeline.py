"""Run the study's notebooks in order with papermill, keep executed copies and HTML.

    python -m mvlib.study.pipeline --profile cpu [--only 01_baseline 02_naive_majority_voter] [--force]
                             [--set key=value ...]

* Parameters are checked against the configuration schema *before* any
  notebook starts (papermill alone only warns about unknown ones).
* Each step writes ``results/notebooks/<profile>/<step>.ipynb`` and ``.html``
  (inputs hidden) atomically: a failed run leaves ``<step>.failed.ipynb`` and
  never replaces the last good copy.
* A finished step is recorded in ``<step>.done.json`` with the hash of its
  notebook and resolved configuration; a rerun skips it (unless ``--force``) and continues
  from the step that failed. Training inside a notebook is itself resumable
  and reuses finished runs (see :mod:`mvlib.study.records`).
* The report step also renders ``results/report.html`` (self-contained).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .config import REPO_ROOT, load_profile, parse_cli_overrides
from .records import resolve_results_dir, write_atomic, write_json

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "mvlib"  # registered by `make setup` (ipykernel install --sys-prefix --name mvlib)


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


def steps() -> list[str]:
    """Notebook names in execution order (file name order: 01_…, 02_…, 99_report)."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _hash(path: Path, params: dict) -> str:
    h = hashlib.sha256(path.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
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


def run_step(step: str, profile: str, overrides: dict, out_dir: Path, force: bool = False,
             log=print) -> dict:
    """Execute one notebook (or skip it when done with the same notebook and parameters)."""
    import papermill as pm
    src = NOTEBOOK_DIR / f"{step}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"no notebook {src}")
    params = {"profile": profile, "progress": False, **overrides}
    # the resolved configuration (profile file included) decides whether a finished step is still current
    key = _hash(src, load_profile(profile, {k: v for k, v in params.items() if k != "profile"}))
    done = out_dir / f"{step}.done.json"
    if done.is_file() and not force and json.loads(done.read_text()).get("hash") == key:
        log(f"[{step}] already done with these parameters: skipped")
        return json.loads(done.read_text())
    partial = out_dir / f".{step}.partial.ipynb"
    t0 = time.time()
    try:
        pm.execute_notebook(str(src), str(partial), parameters=params, kernel_name=KERNEL_NAME,
                            cwd=str(REPO_ROOT), progress_bar=False, log_output=False,
                            request_save_on_cell_execute=True)
    except Exception as e:  # papermill's PapermillExecutionError carries cell number and exception
        failed = out_dir / f"{step}.failed.ipynb"
        if partial.is_file():
            os.replace(partial, failed)
        raise StepFailed(_failure_message(step, e) + f" (executed copy: {failed})") from None
    final = out_dir / f"{step}.ipynb"
    os.replace(partial, final)
    render_html(final, out_dir / f"{step}.html")
    record = {"step": step, "hash": key, "seconds": round(time.time() - t0, 1), "params": params,
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(done, record)
    failed = out_dir / f"{step}.failed.ipynb"
    if failed.is_file():
        failed.unlink()
    return record


def run_pipeline(profile: str = "cpu", only: list[str] | None = None, force: bool = False,
                 overrides: dict | None = None, log=print) -> list[dict]:
    overrides = dict(overrides or {})
    cfg = load_profile(profile, overrides)  # unknown key / wrong type: error before any work
    all_steps = steps()
    chosen = all_steps if not only else [s for s in all_steps if s in only or s.split("_", 1)[0] in only]
    unknown = set(only or []) - set(chosen) - {s.split("_", 1)[0] for s in chosen}
    if unknown:
        raise ValueError(f"unknown step(s) {sorted(unknown)}; steps are {all_steps}")
    out_dir = resolve_results_dir(cfg["results_dir"]) / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    done = []
    for i, step in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {step} (profile {profile}) ...")
        t0 = time.time()
        rec = run_step(step, profile, overrides, out_dir, force=force, log=log)
        done.append(rec)
        log(f"[{i}/{len(chosen)}] {step} done in {time.time() - t0:.0f}s (total {time.time() - t_all:.0f}s)")
        if step.endswith("report"):
            report = resolve_results_dir(cfg["results_dir"]) / ("report.html" if profile == "cpu" else f"report-{profile}.html")
            write_atomic(report, (out_dir / f"{step}.html").read_text())
            log(f"report: {report}")
    total = time.time() - t_all
    log(f"study ({profile}): {len(chosen)} step(s) in {total / 60:.1f} min")
    write_json(out_dir / "pipeline_last.json", {"profile": profile, "steps": [d["step"] for d in done],
                                                 "wall_seconds": round(total, 1),
                                                 "step_seconds": {d["step"]: d["seconds"] for d in done}})
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="configs/<profile>.yaml (ci, cpu, paper)")
    ap.add_argument("--only", nargs="*", help="run only these steps (names or number prefixes)")
    ap.add_argument("--force", action="store_true", help="re-execute steps already done")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="configuration overrides")
    args = ap.parse_args(argv)
    try:
        run_pipeline(args.profile, args.only, args.force, parse_cli_overrides(args.set))
    except (StepFailed, KeyError, TypeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
