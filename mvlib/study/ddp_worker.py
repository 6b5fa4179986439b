"""One recorded run's training on N data-parallel ranks: torchrun launched from the notebook's process.

    (internal) python -m torch.distributed.run --standalone --nproc_per_node N -m mvlib.study.ddp_worker SPEC

Why this shape: a notebook's process owns the run record (claim, lock,
history, metrics), and a notebook cannot itself be N processes. With
``ddp_procs`` > 1, :func:`mvlib.study.experiment.train_run` hands only the
``fit`` of a run to N worker processes (:func:`fit_distributed`): it saves
the model's starting state (weights, voter, calibrations) beside the
checkpoint, the workers rebuild the same network from the run's parameters,
load that state and the teacher's checkpoint, and train under
DistributedDataParallel (one GPU per rank, or gloo on CPU). Rank 0 writes the
checkpoint after every epoch as a one-process run does, so a killed run
resumes, and the notebook's process records the run from that checkpoint.
BatchNorm uses the global batch (:mod:`mvlib.sync_bn`): N ranks train what one
process would, up to the order of floating-point additions. The pipeline's
deadline reaches the workers as it reaches a notebook, through the
environment they inherit (:func:`mvlib.study.progress.pipeline_deadline`).

Imports: the worker rebuilds a run from :mod:`mvlib.study.run_setup`, never
from :mod:`mvlib.study.experiment`, which imports this module to launch it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..environment import REPO_ROOT
from ..files import write_json
from ..sync_bn import close_distributed
from ..train import fit
from . import records
from .progress import pipeline_deadline, say
from .run_setup import arch_of, build_from_params, evaluator, fit_recipe, load_run_model, loaders, resolve_device


class DistributedRunFailed(RuntimeError):
    """The torchrun workers of a run exited with an error (their output says which)."""


def fit_distributed(cfg: dict[str, Any], params: dict[str, Any], model, checkpoint: Path, teacher_run,
                    log=print) -> None:
    """Train ``model``'s run on ``cfg["ddp_procs"]`` ranks; the result is the checkpoint at ``checkpoint``."""
    checkpoint = Path(checkpoint)
    init = checkpoint.with_name("init_state.pt")
    if not checkpoint.is_file():  # a resumed run starts from its checkpoint instead
        save_checkpoint(init, {"model": model.state_dict(), "arch": {}})
    spec = checkpoint.with_name("ddp_spec.json")
    write_json(spec, {"cfg": cfg, "params": params, "init_state": str(init), "checkpoint": str(checkpoint),
                      "teacher_run": str(teacher_run.dir) if teacher_run is not None else None})
    n = cfg["ddp_procs"]
    log(f"training on {n} data-parallel ranks (torchrun)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "mvlib.study.ddp_worker", str(spec)]
    r = subprocess.run(cmd, cwd=str(REPO_ROOT), env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "1")})
    if r.returncode != 0:
        raise DistributedRunFailed(f"the {n} ranks of run {checkpoint.parent.name} exited with {r.returncode}; "
                                   f"rerun to resume from its last checkpoint")


def main(argv=None) -> int:
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    cfg, params = spec["cfg"], spec["params"]
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    dev = f"cuda:{local}" if resolve_device(cfg).startswith("cuda") else "cpu"
    if dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    torch.manual_seed(cfg["seed"])
    model = build_from_params(params)
    if not Path(spec["checkpoint"]).is_file():
        model.load_state_dict(load_checkpoint(spec["init_state"])["model"])
    teacher = None
    if spec["teacher_run"]:
        teacher = load_run_model(records.run_from_dir(Path(spec["teacher_run"])), dev)
    train_loader, val_loader, _, _ = loaders({**cfg, "device": dev})
    fit(model, train_loader, val_loader, **fit_recipe(cfg), teacher=teacher, checkpoint_path=spec["checkpoint"],
        arch=arch_of(params), device=dev, progress=False, log=say if rank == 0 else (lambda line: None),
        evaluator=evaluator(cfg), deadline=pipeline_deadline())
    # not on an error: a peer may still be inside a collective, and waiting for the threads would hang
    close_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
