"""Choose the `long` profile's recipe on the VALIDATION split: learning rate, distillation, width.

    MVLIB_DATA=... python tools/probe_long.py [--profile long] [--stages width lr kd] [--epochs 4] [--max-hours H]

Every probe run is ReActNet-18 on the profile's whole training split (45,000 images), trained by the profile's
recipe (two steps, batch, optimizer, weight decay, augmentation, best-validation pick) for ``--epochs`` epochs with
the profile's schedule decayed to 0 over the probe run, and read on the 5,000-image validation split only (the
test split is never evaluated). The stages run in the order given, each from the previous stage's choice, with
rules fixed before any number was seen. The default order is width, lr, kd: a width-64 run costs about 3.7 times
a width-32 one on the 2-core CPU (results/bench/train_compile_w*_cpu_amd-epyc_2t.json), so the width is settled
first, from the profile's own lr and distillation, and the lr and kd stages then run at the chosen width:

* ``lr``    -- Adam peak lr x 0.5, 1 and 2 of the profile's, distilled as the profile is: the highest validation
               top-1 wins (:func:`choose_lr`; on an exact tie the profile's own lr, then the smaller);
* ``kd``    -- at the chosen lr, distillation from the airbench teacher (kd_weight 1) against plain cross-entropy:
               the highest validation top-1 wins (:func:`choose_kd`; on an exact tie cross-entropy, which needs no
               teacher). The CPU hours of each are printed beside it, the teacher's amortised over the profile's
               distilled students (per seed);
* ``width`` -- width 32 against width 64 (the kd stage's recipe) at EQUAL CPU time: width 32 trains for as many
               epochs as fit in the width-64 run's CPU seconds (the ratio of their CPU seconds per training step on
               real batches, teacher forward included, timed here just before). Both are curves of validation
               top-1 after each epoch against cumulative CPU seconds. :func:`choose_width`: keep 64 (the deck's
               width) unless 32 is ahead at the width-64 run's CPU seconds by more than the validation noise
               (:func:`validation_noise`: 1.96 x the standard error of the difference of two binomial proportions
               on the validation images; the two share their images, so the true noise is smaller and the rule
               errs toward 64) AND climbs at least as fast at the end (points per CPU hour over the last quarter of
               each run's own CPU seconds);
* rule (d), no run of its own -- Bi-RealNet-18 takes ReActNet-18's chosen lr times its recipe's lr ratio in the
               profile (the sources' 1e-3 / 5e-4 = 2) and the width stage's width; its loss stays its source's
               (cross-entropy with label smoothing, no teacher) whatever the kd stage chooses, because the kd stage
               measures ReActNet-18 only (:func:`bireal_lr`).

Every probe run records CPU seconds (process time: every thread's, so up to 2 per wall second on 2 cores) and
wall seconds per epoch. Run records go to ``build/probes/<profile>`` (ignored by git; finished runs are reused,
interrupted ones resume: ``--max-hours`` stops after the epoch that crosses it and the same command continues);
the choices and every number behind them to ``results/probes/long_recipe_<profile>.json`` and ``.txt`` (the
printed lines), with the commit and code hash, and the curves to ``results/probes/long_recipe_curves.png``. The
profile file is then edited by hand to the choices, citing that file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvlib.environment import REPO_ROOT, environment_info  # noqa: E402
from mvlib.files import write_atomic, write_json  # noqa: E402
from mvlib.study.config import load_profile, parse_cli_overrides, recipe_for  # noqa: E402

STEP, MODEL = "probe_long", "reactnet18"
LR_FACTORS = (0.5, 1.0, 2.0)
WIDTHS = (64, 32)               # the deck's width first: the reference of the width stage
Z95 = 1.96                      # two-sided 95 % normal quantile of the validation noise
END_FRACTION = 0.25             # the "end" of a curve: its last quarter of CPU seconds
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*val top1 (?:\(flip TTA\) )?([\d.]+)%")


# ---------------------------------------------------------------------------------------------- the rules
def choose_lr(rows: list[dict]) -> dict:
    """The row (``factor``, ``lr``, ``val_top1``) with the highest validation top-1; on an exact tie the profile's
    own lr (factor 1), then the smaller lr."""
    best = max(r["val_top1"] for r in rows)
    tied = [r for r in rows if r["val_top1"] == best]
    return min(tied, key=lambda r: (r["factor"] != 1.0, r["lr"]))


def choose_kd(distilled_top1: float, plain_top1: float) -> bool:
    """True (distil) when distillation's validation top-1 is the higher; an exact tie keeps cross-entropy."""
    return distilled_top1 > plain_top1


def validation_noise(top1_a: float, top1_b: float, images: int) -> float:
    """Points of validation top-1 that two measurements on ``images`` images may differ by at 95 % (independent
    binomial proportions)."""
    pa, pb = top1_a / 100, top1_b / 100
    return 100 * Z95 * math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / images)


def value_at(curve: list[tuple[float, float]], cpu_s: float) -> float:
    """Validation top-1 of a curve ``[(cumulative CPU seconds, top-1)]`` at ``cpu_s``: linear between its points,
    its first point before it, its last after it."""
    pts = sorted(curve)
    if cpu_s <= pts[0][0]:
        return pts[0][1]
    for (c0, v0), (c1, v1) in zip(pts, pts[1:]):
        if cpu_s <= c1:
            return v0 + (v1 - v0) * (cpu_s - c0) / (c1 - c0) if c1 > c0 else v1
    return pts[-1][1]


def end_slope(curve: list[tuple[float, float]]) -> float:
    """Points of validation top-1 gained per CPU hour over the curve's last :data:`END_FRACTION` of CPU seconds."""
    end = max(c for c, _ in curve)
    start = end * (1 - END_FRACTION)
    return (value_at(curve, end) - value_at(curve, start)) / (END_FRACTION * end / 3600) if end > 0 else 0.0


def choose_width(curve64: list[tuple[float, float]], curve32: list[tuple[float, float]], images: int) -> dict:
    """The width stage's rule (module docstring) on two curves ``[(cumulative CPU seconds, validation top-1)]``
    evaluated on ``images`` validation images: ``{"width", "budget_cpu_s", "top1_64", "top1_32", "noise",
    "ahead", "slope_64", "slope_32", "climbing"}``."""
    budget = max(c for c, _ in curve64)
    v64, v32 = value_at(curve64, budget), value_at(curve32, budget)
    noise = validation_noise(v64, v32, images)
    s64, s32 = end_slope(curve64), end_slope(curve32)
    ahead, climbing = v32 - v64 > noise, s32 >= s64
    return {"width": 32 if ahead and climbing else 64, "budget_cpu_s": budget, "top1_64": v64, "top1_32": v32,
            "noise": noise, "ahead": ahead, "slope_64": s64, "slope_32": s32, "climbing": climbing}


def bireal_lr(chosen_lr: float, profile_cfg: dict) -> float:
    """Rule (d): Bi-RealNet-18's lr = ReActNet-18's chosen lr x the profile's Bi-Real / ReActNet lr ratio."""
    return chosen_lr * recipe_for(profile_cfg, "birealnet18")["lr"] / recipe_for(profile_cfg, MODEL)["lr"]


# ---------------------------------------------------------------------------------------------- probe runs
def run_name(setting: dict) -> str:
    return (f"w{setting['width']}-lr{setting['lr']:g}-{'kd' if setting['distill'] else 'ce'}-e{setting['epochs']}")


def setting_cfg(base: dict, setting: dict) -> dict:
    from mvlib.study.run_setup import run_config
    return run_config(base, width=setting["width"], lr=setting["lr"], distill=setting["distill"],
                      epochs=setting["epochs"])


class Clock:
    """CPU (process time) and wall seconds since the last :meth:`lap`."""

    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def lap(self) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = (cpu - self.cpu, wall - self.wall)
        self.cpu, self.wall = cpu, wall
        return out


class Points:
    """The per-epoch points of one probe run (its teacher's or its own), kept in a JSON file beside the records
    and written after each epoch, so that an interrupted run keeps what it measured and a rerun adds to it."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"points": [], "done": False}

    def logger(self, phase_names: list[str], echo, runs_before: int = 0):
        """A ``log`` for one training call whose runs end in order (``runs_before`` runs it only reuses, such as
        a finished teacher, then one run per name of ``phase_names``): each epoch line becomes a point of the
        phase of the run in training, with the CPU and wall seconds since the previous epoch line."""
        clock, ended = Clock(), [0]
        have = {(p["phase"], p["epoch"]) for p in self.data["points"]}

        def log(line: str) -> None:
            echo(line)
            if line.startswith(("finished ", "reusing finished run ")):
                ended[0] += 1
                return
            m = EPOCH_LINE.match(line)
            if not m:
                return
            cpu, wall = clock.lap()
            phase = phase_names[min(max(ended[0] - runs_before, 0), len(phase_names) - 1)]
            if (phase, int(m.group(1))) not in have:
                have.add((phase, int(m.group(1))))
                self.data["points"].append({"phase": phase, "epoch": int(m.group(1)), "epochs": int(m.group(2)),
                                            "val_top1": float(m.group(3)), "cpu_s": round(cpu, 2),
                                            "wall_s": round(wall, 2)})
                write_json(self.path, self.data)
        return log

    def finish(self, metrics: dict) -> None:
        self.data.update(done=True, val_top1=metrics["val_top1"], run_id=metrics["run_id"])
        write_json(self.path, self.data)

    def curve(self, phases: list[str]) -> list[tuple[float, float]]:
        """``[(cumulative CPU seconds, validation top-1)]`` over ``phases`` in order."""
        total, out = 0.0, []
        for phase in phases:
            for p in sorted((p for p in self.data["points"] if p["phase"] == phase), key=lambda p: p["epoch"]):
                total += p["cpu_s"]
                out.append((total, p["val_top1"]))
        return out

    def seconds(self, phases: list[str] | None = None) -> tuple[float, float]:
        pts = [p for p in self.data["points"] if phases is None or p["phase"] in phases]
        return sum(p["cpu_s"] for p in pts), sum(p["wall_s"] for p in pts)


def train_teacher(cfg: dict, scratch: Path, echo) -> dict:
    """The distillation teacher of ``cfg`` (one for every distilled probe run of its seed), trained or reused as
    :func:`mvlib.study.experiment.train_recipe` trains it, with its CPU seconds."""
    from mvlib.models import TRAINED_BY_OWN_RECIPE
    from mvlib.study.airbench_run import train_airbench_teacher
    from mvlib.study.experiment import teacher_config, train_run
    t_name, t_cfg, t_opts = teacher_config(cfg)
    width = cfg["width"] if cfg["teacher_model"] == "same" else cfg["teacher_width"]
    points = Points(scratch / "points" / f"teacher-{cfg['teacher_model']}-w{width}-e{cfg['teacher_epochs']}.json")
    log = points.logger(["teacher"], echo)
    if t_name in TRAINED_BY_OWN_RECIPE:
        model, run = train_airbench_teacher(t_cfg, STEP, test=False, log=log)
    else:
        model, run = train_run(t_cfg, STEP, t_name or MODEL, f"teacher-{t_name or 'real'}", model_options=t_opts,
                               test=False, log=log)
    points.finish({**run.metrics, "run_id": run.run_id})
    cpu, wall = points.seconds()
    echo(f"  teacher {run.run_id}: validation top-1 {run.metrics['val_top1']:.2f} %, {cpu / 3600:.2f} CPU h, "
         f"{wall / 3600:.2f} wall h")
    return {"model": model, "run_id": run.run_id, "val_top1": run.metrics["val_top1"], "cpu_s": cpu, "wall_s": wall}


def probe_run(base: dict, setting: dict, scratch: Path, echo) -> dict:
    """One probe run of ``setting`` (width, lr, distill, epochs): trained or reused, with its curve."""
    from mvlib.study.experiment import train_recipe
    cfg = setting_cfg(base, setting)
    name = run_name(setting)
    points = Points(scratch / "points" / f"{name}.json")
    phases = ["step1", "step2"] if cfg["two_step"] else ["train"]
    if cfg["distill"]:  # first, so that train_recipe only reuses it (a "same" teacher follows the student's width)
        train_teacher(cfg, scratch, lambda line: None)
    _, run = train_recipe(cfg, STEP, MODEL, variant=f"probe-{name}", test=False,
                          log=points.logger(phases, lambda line: echo(f"    {name}: {line}"), int(cfg["distill"])))
    points.finish({**run.metrics, "run_id": run.run_id})
    cpu, wall = points.seconds(phases)
    row = {"setting": dict(setting), "name": name, "run_id": run.run_id, "val_top1": run.metrics["val_top1"],
           "picked_epoch": run.metrics.get("picked_epoch"), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
           "curve": points.curve(phases), "val_images": run.metrics.get("val_images")}
    echo(f"  {name}: validation top-1 {row['val_top1']:.2f} % (picked epoch {row['picked_epoch']}), "
         f"{cpu / 3600:.2f} CPU h, {wall / 3600:.2f} wall h")
    return row


def step_cpu_seconds(cfg: dict, width: int, teacher, steps: int = 4) -> float:
    """CPU seconds per training step of ReActNet-18 at ``width`` on the profile's real batches (loading and
    augmentation included; the teacher's forward too when ``teacher`` is given), median of ``steps`` after one."""
    import statistics

    import torch
    import torch.nn.functional as F

    from mvlib.models import build_model
    from mvlib.study.run_setup import apply_process_settings, loaders
    apply_process_settings(cfg)
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=10, width=width)
    opt = torch.optim.Adam(model.parameters(), cfg["lr"])
    loader, times = loaders(cfg)[0], []
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, however small the split
    model.train()
    for _ in range(steps + 1):
        t0 = time.process_time()
        x, y = next(batches)
        if teacher is not None:
            with torch.no_grad():
                teacher(x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.process_time() - t0)
    return statistics.median(times[1:])


# ---------------------------------------------------------------------------------------------- plan and plot
def planned_hours(cfg: dict, stages: list[str], epochs: int, log) -> dict:
    """Hours of the probe's runs from the estimate's (calibrated) rates: ``{stage: (wall h, CPU h)}``, teacher
    included in the first stage that distils. CPU h = wall h x the anchor's threads (both cores busy)."""
    from mvlib.study.estimate import ANCHOR_NET, read_anchor, speeds
    n_train = 50000 - 10 * cfg["val_per_class"] if not cfg["train_per_class"] else 10 * cfg["train_per_class"]
    n_val = 10 * (cfg["val_eval_per_class"] or cfg["val_per_class"])
    keys = [(MODEL, 64, "none"), (MODEL, 32, "none"), (cfg["teacher_model"], cfg["teacher_width"], "none")]
    keys = [k for k in keys if k[0] != "same"]
    rate = speeds(keys, min(cfg["batch_size"], 64), "cpu", log=log)
    anchor = read_anchor()
    threads = anchor["threads"] if anchor else 1

    def run_h(width, distill, ep):
        tr, ev = rate[(MODEL, width, "none")]
        h = ep * (n_train / tr + n_val / ev)
        if distill and (cfg["teacher_model"], cfg["teacher_width"], "none") in rate:
            h += ep * n_train / rate[(cfg["teacher_model"], cfg["teacher_width"], "none")][1]
        return h / 3600

    teacher_h = 0.0
    if (cfg["teacher_model"], cfg["teacher_width"], "none") in rate:
        tr, ev = rate[(cfg["teacher_model"], cfg["teacher_width"], "none")]
        teacher_h = cfg["teacher_epochs"] * (n_train / tr + n_val / ev) / 3600
    # the lr and kd stages run at the width chosen before them, planned at the profile's; the width stage trains a
    # width-64 run and a width-32 run of equal CPU time
    w = cfg["width"] if cfg["width"] in (32, 64) else 64
    plan = {"lr": len(LR_FACTORS) * run_h(w, cfg["distill"], epochs), "kd": run_h(w, not cfg["distill"], epochs),
            "width": 2 * run_h(64, cfg["distill"], epochs)}
    first = next((s for s in stages if s == "kd" or cfg["distill"]), None)  # the first stage that distils
    if first is not None:
        plan[first] += teacher_h
    out = {s: (plan[s], plan[s] * threads) for s in stages}
    for s, (wall, cpu) in out.items():
        log(f"  planned {s:<6} {wall:6.2f} h on the idle machine, {cpu:6.2f} CPU h ({threads} threads; runs already "
            f"finished in the scratch folder cost nothing)")
    log(f"  planned total {sum(w for w, _ in out.values()):6.2f} h, {sum(c for _, c in out.values()):6.2f} CPU h "
        f"(anchor {ANCHOR_NET[0]} width {ANCHOR_NET[1]})")
    return out


def plot_curves(rows: list[dict], width_rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    widths = "/".join(str(w) for w in dict.fromkeys(r["setting"]["width"] for r in rows)) or "-"
    for ax, group, title in ((axes[0][0], rows, f"lr and kd stages (ReActNet-18, width {widths})"),
                             (axes[0][1], width_rows, "width stage: equal CPU time")):
        for r in group:
            if r["curve"]:
                c, v = zip(*r["curve"])
                ax.plot([x / 3600 for x in c], v, marker="o", ms=3, label=r["name"])
        ax.set_xlabel("cumulative CPU hours (student only)")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="long")
    ap.add_argument("--stages", nargs="*", default=["width", "lr", "kd"], choices=["lr", "kd", "width"],
                    help="stages to run, in order, each from the previous one's choice (a stage run alone starts "
                         "from the profile's values)")
    ap.add_argument("--epochs", type=int, default=4,
                    help="epochs of each probe run but the width stage's width-32 one (two steps: half each)")
    ap.add_argument("--max-hours", type=float, default=None,
                    help="stop after the epoch that crosses this many hours; the same command resumes")
    ap.add_argument("--estimate", action="store_true", help="print the planned hours and exit")
    ap.add_argument("--scratch", default=None, help="run records (default build/probes/<profile>)")
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "probes"), help="folder of the results files")
    ap.add_argument("overrides", nargs="*", help="key=value configuration overrides")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (two steps of at least one epoch)")
    profile_cfg = load_profile(args.profile, parse_cli_overrides(args.overrides))
    scratch = Path(args.scratch or REPO_ROOT / "build" / "probes" / args.profile)
    base = {**recipe_for(profile_cfg, MODEL), "results_dir": str(scratch), "artifacts": False, "progress": False,
            "model_recipes": {}}
    lines = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    command = "python tools/probe_long.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log(f"profile {args.profile}: {MODEL} lr {base['lr']:g}, distill {base['distill']}, width {base['width']}, "
        f"batch {base['batch_size']}, {args.epochs} epochs per probe run (the width stage's width-32 run: as many as "
        f"fit the width-64 run's CPU time); stages {args.stages}")
    planned_hours(base, args.stages, args.epochs, log)
    if args.estimate:
        return 0
    if args.max_hours is not None:
        from mvlib.study.progress import DEADLINE_ENV
        os.environ[DEADLINE_ENV] = str(time.time() + 3600 * args.max_hours)
    from mvlib.study.experiment import TeacherTooWeak
    from mvlib.train import DeadlineReached
    choice = {"lr": base["lr"], "distill": base["distill"], "width": base["width"], "epochs": args.epochs}
    out = {"profile": args.profile, "command": command, "epochs": args.epochs, "start": dict(choice), "stages": {},
           "environment": environment_info("cpu")}
    rows, width_rows, teacher = [], [], None
    try:
        if base["distill"] or "kd" in args.stages:
            teacher = train_teacher(base, scratch, log)
            n_students = sum(recipe_for(profile_cfg, m)["distill"] for m in profile_cfg["models"])
            out["teacher"] = {k: v for k, v in teacher.items() if k != "model"} | {"profile_students": n_students}
        for stage in args.stages:
            log(f"stage {stage}:")
            if stage == "lr":
                cand = [probe_run(base, {**choice, "lr": base["lr"] * f}, scratch, log) for f in LR_FACTORS]
                for r, f in zip(cand, LR_FACTORS):
                    r.update(factor=f, lr=r["setting"]["lr"])
                chosen = choose_lr(cand)
                choice["lr"] = chosen["lr"]
                entry = {"candidates": cand, "chosen": {"lr": chosen["lr"], "factor": chosen["factor"]}}
            elif stage == "kd":
                cand = [probe_run(base, {**choice, "distill": d}, scratch, log) for d in (True, False)]
                per_student = out["teacher"]["cpu_s"] / max(out["teacher"]["profile_students"], 1)
                cand[0]["cpu_s_with_teacher_share"] = round(cand[0]["cpu_s"] + per_student, 1)
                cand[1]["cpu_s_with_teacher_share"] = cand[1]["cpu_s"]
                for r in cand:
                    log(f"  {r['name']}: {r['val_top1']:.2f} %, {r['cpu_s_with_teacher_share'] / 3600:.2f} CPU h "
                        f"with the teacher's share ({per_student / 3600:.2f} CPU h per distilled student)")
                choice["distill"] = choose_kd(cand[0]["val_top1"], cand[1]["val_top1"])
                entry = {"candidates": cand, "chosen": {"distill": choice["distill"]}}
            else:
                # timed once and kept: a rerun must find the same width-32 run to resume or reuse it
                timing = Points(scratch / "points" / f"width-timing-{run_name({**choice, 'width': 64})}.json")
                if "cpu_s_per_step" not in timing.data:
                    t = teacher["model"] if choice["distill"] else None
                    cfg = setting_cfg(base, choice)
                    timing.data["cpu_s_per_step"] = {str(w): step_cpu_seconds(cfg, w, t) for w in WIDTHS}
                    write_json(timing.path, timing.data)
                per_step = {int(w): v for w, v in timing.data["cpu_s_per_step"].items()}
                e32 = max(2, round(args.epochs * per_step[64] / per_step[32]))
                log(f"  CPU seconds per training step: width 64 {per_step[64]:.2f}, width 32 {per_step[32]:.2f}: "
                    f"width 32 trains {e32} epochs against {args.epochs}")
                cand = [probe_run(base, {**choice, "width": 64}, scratch, log),
                        probe_run(base, {**choice, "width": 32, "epochs": e32}, scratch, log)]
                images = cand[0]["val_images"] or 10 * (base["val_eval_per_class"] or base["val_per_class"])
                rule = choose_width(cand[0]["curve"], cand[1]["curve"], images)
                log(f"  at {rule['budget_cpu_s'] / 3600:.2f} CPU h: width 64 {rule['top1_64']:.2f} %, width 32 "
                    f"{rule['top1_32']:.2f} % (noise {rule['noise']:.2f} points; ahead {rule['ahead']}); end slopes "
                    f"{rule['slope_64']:.2f} / {rule['slope_32']:.2f} points per CPU h (climbing {rule['climbing']})")
                choice["width"] = rule["width"]
                entry = {"candidates": cand, "cpu_s_per_step": per_step, "rule": rule,
                         "chosen": {"width": rule["width"]}}
                width_rows = cand
            if stage != "width":
                rows += [r for r in cand if r["name"] not in {q["name"] for q in rows}]
            out["stages"][stage] = entry
            log(f"stage {stage} chooses {entry['chosen']}")
    except DeadlineReached as e:
        log(f"stopped: {e.args[0]}")
        return 3
    except TeacherTooWeak as e:
        log(f"stopped: {e.args[0]}")
        return 1
    choice["birealnet18_lr"] = bireal_lr(choice["lr"], profile_cfg)
    log(f"rule (d): birealnet18 lr {choice['birealnet18_lr']:g} (x {choice['birealnet18_lr'] / choice['lr']:g}), "
        f"width {choice['width']}, its source's loss (no teacher)")
    out["chosen"] = choice
    stem = Path(args.out) / f"long_recipe_{args.profile}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_suffix(".json"), out)
    write_atomic(stem.with_suffix(".txt"), f"$ {command}\n" + "\n".join(lines) + "\n")
    plot_curves(rows, width_rows, Path(args.out) / "long_recipe_curves.png")
    print(f"wrote {stem}.json / .txt and {Path(args.out) / 'long_recipe_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
