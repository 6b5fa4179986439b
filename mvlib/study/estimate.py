"""What a study will cost before it starts: images per notebook and the wall time they take here.

    python -m mvlib.study.pipeline --profile paper --estimate    # print and exit
    (a paper run prints it before its first notebook)

The count follows the notebooks' loops from the resolved configuration: for
each notebook, the images trained on (forward + backward) and the images
evaluated (forward only), grouped by the network and width that process
them. The time is those counts over a *measured* throughput: a few training
steps and forward passes of each (network, width) on the current device,
timed here (:func:`measure`). It is an estimate of the dominant work, not a
promise: data loading, checkpoints and small networks' overheads are left
out, and notebook 05 (fixed-size benchmarks) and 07 (synthesis, cached) are
counted as the minutes they took on the committed ``cpu`` run. Only the
notebooks of the profile's ``study_steps`` are counted. A distilled network's
training counts its teacher's forward passes too (evaluation images of the
teacher; airbench's is its flip TTA, two views).

On a CPU that other work shares, a live rate measures the load, not the
machine. Where ``results/bench/estimate_anchor.json`` holds an idle rate of one
network measured on this CPU (its name and core count), every rate is measured
per second of this process's CPU time (the time it waited for a core left out)
and scaled by that idle rate over the same network's rate measured the same
way before and after the others (:func:`calibration`): what remains of the load
(shared caches, the thread count of the measuring process) is assumed to slow
every network alike. ``python -m mvlib.study.estimate --record-anchor`` measures and
records the anchor on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import dataset_num_classes
from ..environment import REPO_ROOT, cpu_name
from ..files import write_json
from ..models import TEACHERS, build_model, build_teacher, relative_width
from ..voter_ops import set_voter
from ..voter_spec import VoterSpec
from .config import recipe_for
from .steps import step_number

RESNET_BINARY_CONVS = 16  # one voter layer per block of the ResNet-18s (notebook 02's sensitivity sweep)
# The voter of a row, by its tag (VoterSpec.tag), or NO_VOTER. A hierarchical voter is measured with tie +1 only:
# the tie rule changes which way a tie votes, not the work, while the float simulation's cost grows with the leaves.
NO_VOTER = "none"
MV_TAG = VoterSpec.exact().tag()
HMV4_TAG = VoterSpec.hierarchical(4).tag()
FIXED_MINUTES = {"05_kernels": 6.0, "07_hardware_cost": 0.5}  # the cpu run's minutes (not image counts)
ANCHOR_FILE = REPO_ROOT / "results" / "bench" / "estimate_anchor.json"
ANCHOR_NET = ("reactnet18", 64, NO_VOTER)  # the network whose idle rate anchors a CPU's estimate
ANCHOR_BATCH = 128                         # images per step of the recorded idle rate


def _classes(cfg, dataset=None):
    return dataset_num_classes(dataset or cfg["dataset"])


def _train_images(cfg, per_class=None, dataset=None) -> int:
    per = cfg["train_per_class"] if per_class is None else per_class
    dataset = dataset or cfg["dataset"]
    ncls = _classes(cfg, dataset)
    if per:
        return per * ncls
    # CIFAR-100's offline train_subset.npz holds 100 images per class; the full train split 500
    full = 10000 if dataset == "cifar100" and cfg["cifar100_train_file"] != "train.npz" else 50000
    return full - cfg["val_per_class"] * ncls


def _val_images(cfg, per_class=0) -> int:
    return (per_class or cfg["val_eval_per_class"] or cfg["val_per_class"]) * _classes(cfg)


def _test_images(cfg, per_class=None) -> int:
    per = cfg["test_per_class"] if per_class is None else per_class
    return per * _classes(cfg) if per else 10000


def in_study(cfg: dict[str, Any], step: str) -> bool:
    """Whether ``step`` (a name such as ``08_voter_drop``) is one of the profile's ``study_steps`` ([] = every one)."""
    wanted = cfg["study_steps"]
    return not wanted or step in wanted or step_number(step) in wanted


class Tally:
    """Images per (notebook, kind, network, width, voter tag): kind ``train`` or ``eval``; trained runs per
    (notebook, network, width), each of which keeps one checkpoint. ``keep(step)`` says which notebooks count."""

    def __init__(self, keep=lambda step: True):
        self.rows: dict[tuple, float] = defaultdict(float)
        self.runs: dict[tuple, int] = defaultdict(int)
        self.keep = keep

    def add(self, step, kind, net, width, images, voter=NO_VOTER, runs=0):
        if self.keep(step):
            self.rows[(step, kind, net, width, voter)] += images
            self.runs[(step, net, width)] += runs

    def add_teacher_forward(self, step, recipe, net, images):
        """A distilled training of ``images`` also runs the teacher forward on each (airbench: its flip TTA,
        which its eval-mode forward is, so its measured evaluation rate holds both views)."""
        if recipe["distill"]:
            tm = recipe["teacher_model"]
            self.add(step, "eval", net if tm == "same" else tm,
                     recipe["width"] if tm == "same" else recipe["teacher_width"], images)


def count(cfg: dict[str, Any]) -> Tally:
    """The images each notebook of ``cfg`` processes, by network and width (see the module docstring)."""
    t = Tally(lambda step: in_study(cfg, step))
    n_val, n_test = _val_images(cfg), _test_images(cfg)
    # 01: baselines (teachers first)
    for seed in cfg["seeds"]:
        shared_teacher = False
        for m in cfg["models"]:
            r = recipe_for(cfg, m)
            n = _train_images(r)
            if r["distill"]:
                tm = r["teacher_model"]
                if tm == "same":
                    t.add("01_baseline", "train", m, r["width"], r["teacher_epochs"] * n, runs=1)
                elif not shared_teacher:
                    t.add("01_baseline", "train", tm, r["teacher_width"], r["teacher_epochs"] * n, runs=1)
                    shared_teacher = True
            t.add("01_baseline", "train", m, r["width"], r["epochs"] * n, runs=2 if r["two_step"] else 1)
            t.add_teacher_forward("01_baseline", r, m, r["epochs"] * n)
            t.add("01_baseline", "eval", m, r["width"], r["epochs"] * n_val + n_val + n_test)
    w, b = cfg["width"], cfg["batch_size"]
    models, seeds, sweep = cfg["mv_models"], cfg["seeds"], cfg["sweep_seeds"]
    n_rt = _train_images(cfg, cfg["mv_retrain_train_per_class"])
    # 02: substitution rows, the one-layer sensitivity sweep
    for m in models:
        t.add("02_naive_majority_voter", "eval", m, w, len(seeds) * (
            (len(cfg["mv_output_scales"]) + 1) * (n_val + n_test) + (cfg["mv_calib_batches"] + cfg["mv_recal_batches"]) * b))
        sub = _val_images(cfg, cfg["mv_sensitivity_val_per_class"])
        t.add("02_naive_majority_voter", "eval", m, w,
              len(sweep) * len(cfg["mv_sensitivity_scales"]) * (RESNET_BINARY_CONVS + 2) * sub, MV_TAG)
    # 03: retraining through the exact voter (approxsign on the main seeds, the other estimators on sweep seeds)
    for m in models:
        for est in cfg["mv_retrain_estimators"]:
            k = len(seeds) if est == "approxsign" else len(sweep)
            t.add("03_mv_retraining", "train", m, w, k * cfg["mv_retrain_epochs"] * n_rt, MV_TAG, runs=k)
            t.add("03_mv_retraining", "eval", m, w, k * (cfg["mv_retrain_epochs"] * n_val + n_val + n_test), MV_TAG)
    # 04: the G x tie grid (naive, recalibrated), retraining of the chosen G and ties
    grid = (len(cfg["hmv_groups"]) + len(cfg["hmv_nested"])) * len(cfg["hmv_ties"])
    sub = _val_images(cfg, cfg["hmv_sweep_val_per_class"])
    for m in models:
        t.add("04_hierarchical_voter", "eval", m, w, len(sweep) * grid * (1 + cfg["hmv_recal"]) * sub, HMV4_TAG)
        k = len(cfg["hmv_retrain_groups"]) * len(cfg["hmv_retrain_ties"]) * len(sweep)
        t.add("04_hierarchical_voter", "train", m, w, k * cfg["mv_retrain_epochs"] * n_rt, HMV4_TAG, runs=k)
        t.add("04_hierarchical_voter", "eval", m, w, k * (cfg["mv_retrain_epochs"] * n_val + n_val + n_test),
              HMV4_TAG)
    # 06: the appendix grid (and its floors, and a teacher per dataset and seed when distilled)
    for dataset in cfg["appendix_datasets"]:
        c100 = dataset == "cifar100"
        per = cfg["appendix_cifar100_train_per_class"] if c100 else cfg["appendix_train_per_class"]
        n = _train_images({**cfg, "val_per_class": cfg["cifar100_val_per_class"] if c100 else cfg["val_per_class"]},
                          per, dataset)
        epochs = (cfg["appendix_cifar100_epochs"] or cfg["appendix_epochs"]) if c100 else cfg["appendix_epochs"]
        for m in cfg["appendix_models"]:
            many = dataset == "cifar10" and m in cfg["appendix_seed_models"]
            k = len(cfg["appendix_seeds"]) if many else 1
            aw = relative_width(m, cfg["appendix_width"])
            cells = k * len(cfg["appendix_norms"])
            t.add("06_bn_free", "train", m, aw, (cells + 1) * epochs * n,
                  runs=cells * (2 if cfg["appendix_two_step"] else 1) + 1)
            t.add_teacher_forward("06_bn_free", {**cfg, "distill": cfg["appendix_distill"], "width": aw}, m,
                                  cells * epochs * n)
        if cfg["appendix_distill"] and cfg["teacher_model"] in TEACHERS:
            t.add("06_bn_free", "train", cfg["teacher_model"], cfg["teacher_width"],
                  len(cfg["appendix_seeds"]) * cfg["teacher_epochs"] * n, runs=len(cfg["appendix_seeds"]))
    # 08: the trained variants of the shared recipe, the k sweep and conventions on the baselines
    n_vd = _train_images(cfg, cfg["vd_train_per_class"])
    e = cfg["vd_train_epochs"]
    for m in ("reactnet18", "birealnet18"):
        kinds = 1 + len(cfg["vd_downsample_kinds"])
        steps = 2 if cfg["two_step"] else 1  # the shared recipe: the networks' model_recipes do not apply
        t.add("08_voter_drop", "train", m, cfg["vd_train_width"], kinds * len(cfg["vd_train_seeds"]) * e * n_vd,
              runs=kinds * len(cfg["vd_train_seeds"]) * steps)
        t.add("08_voter_drop", "train", m, cfg["vd_wide_width"], len(cfg["vd_scale_seeds"]) * e * n_vd,
              runs=len(cfg["vd_scale_seeds"]) * steps)
        t.add("08_voter_drop", "train", m, cfg["vd_train_width"],
              len(cfg["vd_scale_seeds"]) * cfg["vd_long_factor"] * e * n_vd, runs=len(cfg["vd_scale_seeds"]) * steps)
        t.add_teacher_forward("08_voter_drop", {**cfg, "width": cfg["vd_train_width"]}, m, e * n_vd * (
            kinds * len(cfg["vd_train_seeds"]) + len(cfg["vd_scale_seeds"]) * (1 + cfg["vd_long_factor"])))
        sub = _val_images(cfg, cfg["vd_sweep_val_per_class"])
        t.add("08_voter_drop", "eval", m, w, len(seeds) * (len(cfg["vd_ks"]) + len(cfg["vd_conventions"])) * sub,
              MV_TAG)
    if cfg["distill"] and cfg["teacher_model"] != "same":  # one teacher per seed on the shared recipe's split
        k = len(set(cfg["vd_train_seeds"]) | set(cfg["vd_scale_seeds"]))
        t.add("08_voter_drop", "train", cfg["teacher_model"], cfg["teacher_width"], k * cfg["teacher_epochs"] * n_vd,
              runs=k)
    _count_pareto(cfg, t)
    return t


def _count_pareto(cfg: dict[str, Any], t: Tally) -> None:
    """09: every voter (and tie) retrained from the baselines, the control widths trained by 01's recipe.

    The voter is tagged by its fan-ins (``hmv-g4x4-tiepos``): the float simulation's cost grows with the number
    of leaf blocks, so each is measured. Runs notebooks 03/04 own (same recipe and splits) are not counted twice.
    """
    step, w = "09_voter_pareto", cfg["width"]
    from .pareto import point_config, shares_runs
    p = point_config(cfg)
    n_val, n_test = _val_images(p), _test_images(p)
    n_rt, e = _train_images(p, p["mv_retrain_train_per_class"]), cfg["mv_retrain_epochs"]
    shared = shares_runs(cfg)
    ties = len(cfg["pareto_ties"]) if cfg["pareto_tie_choice"] == "all" else 1
    k = len(cfg["pareto_seeds"])
    fams = [[g] for g in cfg["pareto_groups"]] + list(cfg["pareto_trees"])
    for m in cfg["mv_models"]:
        t.add(step, "eval", m, w, k * (n_val + n_test))  # the popcount network on the shared splits
        voters = ([] if shared else [(MV_TAG, 1)]) + [
            (VoterSpec.hierarchical(f).tag(), ties - (len(f) == 1 and shared and f[0] in cfg["hmv_retrain_groups"]
                                                      and cfg["pareto_tie_choice"] == "all")
             * len(cfg["hmv_retrain_ties"]))
            for f in fams]
        for voter, n in voters:
            if n > 0:
                t.add(step, "train", m, w, n * k * e * n_rt, voter, runs=n * k)
                t.add(step, "eval", m, w, n * k * (e * n_val + n_val + n_test), voter)
        for frac in cfg["pareto_width_fractions"]:
            r = recipe_for({**cfg, "width": round(w * frac)}, m)
            n = _train_images(r)
            t.add(step, "train", m, r["width"], k * r["epochs"] * n, runs=k * (2 if r["two_step"] else 1))
            t.add_teacher_forward(step, r, m, k * r["epochs"] * n)
            t.add(step, "eval", m, r["width"], k * (r["epochs"] * n_val + 2 * n_val + 2 * n_test))
            t.add(step, "train", m, r["width"], k * e * n_rt, MV_TAG, runs=k)
            t.add(step, "eval", m, r["width"], k * (e * n_val + n_val + n_test), MV_TAG)


def build_network(net: str, width: int, voter: str = NO_VOTER):
    """The network of an estimate row (10 classes): its voter given by tag (:meth:`VoterSpec.from_tag`, the
    default layer options) on the default layers, or none for :data:`NO_VOTER`."""
    if net in TEACHERS:
        return build_teacher(net, 10, width)
    model = build_model(net, num_classes=10, width=width)
    if voter != NO_VOTER:
        set_voter(model, VoterSpec.from_tag(voter))
    return model


def state_bytes(net: str, width: int) -> int:
    """Bytes of one network's weights and buffers: what a finished run's checkpoint holds."""
    return sum(v.numel() * v.element_size() for v in build_network(net, width).state_dict().values())


def disk_gb(tally: Tally) -> dict[str, float]:
    """GB of checkpoints each notebook leaves (one per trained run; a run in training holds up to 4x its
    weights while it trains: the optimizer's two moments and the best epoch's copy)."""
    size = {(net, width): state_bytes(net, width) for (_, net, width) in tally.runs}
    out: dict[str, float] = defaultdict(float)
    for (step, net, width), runs in tally.runs.items():
        out[step] += runs * size[(net, width)] / 1e9
    return dict(out)


# Images per measured step. A GPU needs a large batch to reach its throughput; a CPU's throughput per image is flat
# from a few dozen images, and at 256 the float simulation of the 64-leaf voter tree takes ~22 GiB (ReActNet-18,
# width 64: ``python tools/memory_check.py --profile paper --only hmv``), all of the 23.5 GiB test VM.
MEASURE_BATCH = {"cuda": 256, "cpu": 64}


def measure_batch(batch: int, device: str) -> int:
    """The batch :func:`estimate` measures at on ``device``: the profile's, at most :data:`MEASURE_BATCH`."""
    return min(batch, MEASURE_BATCH.get(torch.device(device).type, MEASURE_BATCH["cuda"]))


def measure(net: str, width: int, voter: str, batch: int, device: str, seconds: float = 3.0,
            clock: str = "wall") -> tuple[float, float]:
    """(training images/s, evaluation images/s) of one network here: steps repeated for about ``seconds`` each.

    ``clock="process"``: images per second of this process's CPU time (every thread's) instead of wall time, which
    on a CPU that other work shares counts the time the process waited for a core (a CPU only)."""
    model = build_network(net, width, voter).to(device)
    dev = torch.device(device)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    now = time.process_time if clock == "process" else time.perf_counter

    def rate(fn):
        fn()  # warm-up
        sync()
        t0, n = now(), 0
        while n < 2 or now() - t0 < seconds:
            fn()
            n += 1
        sync()
        return n * batch / (now() - t0)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train = rate(train_step)
    model.eval()
    with torch.no_grad():
        ev = rate(lambda: model(x))
    return train, ev


def read_anchor(path: Path = ANCHOR_FILE, cpu: str | None = None, cpus: int | None = None) -> dict | None:
    """The idle rate recorded for this CPU (its name and logical core count) in ``path``, or None."""
    if not path.is_file():
        return None
    cpu, cpus = cpu or cpu_name(), cpus or os.cpu_count()
    return next((a for a in json.loads(path.read_text())["anchors"] if a["cpu"] == cpu and a["cpus"] == cpus), None)


def calibration(anchor: dict, live_rates: list[float]) -> float:
    """The factor from this machine's rates now to its idle ones: the anchor's recorded idle training rate over the
    mean of its live rates (measured before and after the other networks, so that a load that changes meanwhile
    counts half each way)."""
    return anchor["train_img_s"] / (sum(live_rates) / len(live_rates))


def speeds(keys, batch: int, device: str, seconds: float = 3.0, log=print, calibrate: bool = True
           ) -> dict[tuple, tuple[float, float]]:
    """``{(net, width, voter): (training img/s, evaluation img/s)}`` measured here (:func:`measure`), on a CPU with
    a recorded anchor (:func:`read_anchor`; ``calibrate``) scaled to the idle machine's (:func:`calibration`)."""
    anchor = read_anchor() if calibrate and torch.device(device).type == "cpu" else None
    clock = "process" if anchor else "wall"
    live = [measure(*ANCHOR_NET, batch, device, seconds, clock)[0]] if anchor else []
    out = {key: measure(*key, batch, device, seconds, clock) for key in keys}
    factor = 1.0
    if anchor:
        live.append(measure(*ANCHOR_NET, batch, device, seconds, clock)[0])
        factor = calibration(anchor, live)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        log(f"  calibration: {' '.join(map(str, ANCHOR_NET[:2]))} trains at {' and '.join(f'{r:.1f}' for r in live)} "
            f"images per CPU second here now (batch {batch}, {torch.get_num_threads()} torch thread(s), load "
            f"{load:.1f}); recorded idle on this CPU: {anchor['train_img_s']:.1f} img/s ({anchor['threads']} threads, "
            f"batch {anchor['batch']}; {ANCHOR_FILE.relative_to(REPO_ROOT)}): every rate below x {factor:.2f}")
    for key, (tr, ev) in out.items():
        out[key] = (tr * factor, ev * factor)
        log(f"  {'calibrated' if anchor else 'measured'} {key[0]} width {key[1]} voter {key[2]}: "
            f"train {tr * factor:,.0f} img/s, eval {ev * factor:,.0f} img/s")
    return out


def estimate(cfg: dict[str, Any], device: str, seconds: float = 3.0, log=print, calibrate: bool = True
             ) -> dict[str, float]:
    """Hours per notebook of ``cfg`` on ``device`` (printed as a table through ``log``); returns them.

    ``calibrate``: see :func:`speeds`."""
    tally = count(cfg)
    keys = sorted({(net, width, voter) for (_, _, net, width, voter) in tally.rows})
    batch = measure_batch(cfg["batch_size"], device)
    speed = speeds(keys, batch, device, seconds, log, calibrate)
    hours: dict[str, float] = defaultdict(float)
    images: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (step, kind, net, width, voter), n in tally.rows.items():
        tr, ev = speed[(net, width, voter)]
        hours[step] += n / (tr if kind == "train" else ev) / 3600
        images[step][kind == "eval"] += n
    for step, minutes in FIXED_MINUTES.items():
        if in_study(cfg, step):
            hours[step] += minutes / 60
    disk = disk_gb(tally)
    log(f"estimate for profile {cfg['profile']} on {device} (batch {batch}; dominant work only):")
    for step in sorted(hours):
        tr, ev = images.get(step, [0.0, 0.0])
        log(f"  {step:<26} {tr / 1e6:9.2f} M images trained, {ev / 1e6:8.2f} M evaluated: {hours[step]:8.2f} h, "
            f"checkpoints {disk.get(step, 0.0):6.2f} GB")
    total = sum(hours.values())
    log(f"  {'total':<26} {total:8.2f} h ({total / 24:.1f} days) on one such device; N data-parallel ranks "
        f"divide the training part by up to N; checkpoints {sum(disk.values()):.1f} GB on disk at the end")
    return dict(hours)


def record_anchor(seconds: float = 30.0, path: Path = ANCHOR_FILE, log=print) -> dict:
    """Measure :data:`ANCHOR_NET`'s training rate at :data:`ANCHOR_BATCH` on this CPU with torch's threads and record
    it as this CPU's idle rate in ``path`` (replacing an older one of the same CPU): run it on an idle machine."""
    load = os.getloadavg()[0]
    rate = measure(*ANCHOR_NET, ANCHOR_BATCH, "cpu", seconds)[0]
    entry = {"cpu": cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "model": ANCHOR_NET[0],
             "width": ANCHOR_NET[1], "voter": ANCHOR_NET[2], "batch": ANCHOR_BATCH, "train_img_s": round(rate, 1),
             "load_avg_1min_before": round(load, 2), "torch": torch.__version__,
             "recorded": time.strftime("%Y-%m-%d"), "source": "python -m mvlib.study.estimate --record-anchor"}
    if load > 0.5:
        log(f"warning: load average {load:.1f} before the measurement: the machine is not idle, so this rate is low")
    old = json.loads(path.read_text())["anchors"] if path.is_file() else []
    write_json(path, {"anchors": [a for a in old if (a["cpu"], a["cpus"]) != (entry["cpu"], entry["cpus"])]
                      + [entry]})
    log(f"{entry['cpu']} ({entry['cpus']} logical CPUs, {entry['threads']} threads): {rate:.1f} training img/s "
        f"-> {path}")
    return entry


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Record this CPU's idle training rate, the anchor of its estimates "
                                             "(python -m mvlib.study.pipeline --profile P --estimate prints one)")
    ap.add_argument("--record-anchor", action="store_true", help="measure and record it (run on an idle machine)")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of timed training steps")
    args = ap.parse_args(argv)
    if not args.record_anchor:
        ap.error("nothing to do: --record-anchor measures and records the anchor")
    record_anchor(args.seconds)


if __name__ == "__main__":
    main()
