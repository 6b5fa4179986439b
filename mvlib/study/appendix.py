"""The deck's appendix (notebook 06): BN, without BN and BN-Free binary networks.

The deck's appendix Table 2 (taken from "BNN - BN = ?: Training Binary Neural
Networks without Batch Normalization", Chen et al., CVPR Workshops 2021)
gives top-1 of XNORNet-18, Bi-RealNet-18, ReActNet-18 and ReActNet-A, each
with BN, without BN and BN-Free, on CIFAR-10 and CIFAR-100. Its pattern:
without BN, XNORNet-18 and Bi-RealNet-18 lose ~18 points on CIFAR-10 while
ReActNet-18 loses ~2; BN-Free wins most of it back.

* Running: :func:`cells` lists the grid (each cell with its seeds),
  :func:`run_cell` trains one cell and seed, :func:`run_floor` the
  shortcut-only network of a model (the floor a w/o-BN network whose binary
  branches carry nothing falls to), :func:`branch_ratio_rows` the per-block
  binary-branch / shortcut magnitudes of a cell at initialization and after
  training.
* Reading, from run records only: :func:`appendix_results` (one row per
  cell: mean over seeds, interval, the deck's number), :func:`appendix_table`
  (the deck's layout), :func:`pattern_summary` / :func:`pattern_statement`
  (the pattern's parts with intervals and verdicts), :func:`plot_appendix`.

Intervals: a cell run on several seeds has the 95 % Student-t interval over
seeds, and a difference of two such cells is paired per seed. A cell run on
one seed has only the test set's binomial error: its interval (1.96 s.e.,
differences with independent errors) measures test sampling, not seed
variation, and the tables say "1 seed" beside it.

Run records of this step: step ``06_bn_free``, variant ``bn`` / ``nobn`` /
``bnfree`` / ``shortcut-only`` (:func:`mvlib.models.variant_name`), dataset
``cifar10`` / ``cifar100``.
"""
from __future__ import annotations

from typing import Any

from ..data import DataError, resolve_data_dir
from ..models import relative_width, variant_name

STEP = "06_bn_free"
FLOOR = "shortcut-only"
MODEL_LABELS = {"xnornet18": "XNORNet-18", "birealnet18": "Bi-RealNet-18", "reactnet18": "ReActNet-18",
                "reactneta": "ReActNet-A"}
VARIANT_LABELS = {"bn": "BN", "nobn": "w/o BN", "bnfree": "BN-Free"}
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
COLLAPSING = ("xnornet18", "birealnet18")  # the deck's networks that lose ~18 points without BN
Z95 = 1.959964


# ----------------------------------------------------------------- running
def cell_settings(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The configuration keys of notebook 06's cells on ``dataset`` (appendix keys mapped onto run keys).

    CIFAR-100 trains on ``cifar100_train_file`` (here the 100-per-class
    subset) with its own per-class counts, validation slice and epochs, since
    one number cannot fit both datasets.
    """
    c100 = dataset == "cifar100"
    return {"dataset": dataset,
            "train_file": cfg["cifar100_train_file"] if c100 else cfg["train_file"],
            "val_per_class": cfg["cifar100_val_per_class"] if c100 else cfg["val_per_class"],
            "val_eval_per_class": 0 if c100 else cfg["appendix_val_eval_per_class"],
            "train_per_class": cfg["appendix_cifar100_train_per_class"] if c100 else cfg["appendix_train_per_class"],
            "test_per_class": cfg["appendix_cifar100_test_per_class"] if c100 else cfg["appendix_test_per_class"],
            "batch_size": cfg["appendix_batch_size"] or cfg["batch_size"],
            "epochs": (cfg["appendix_cifar100_epochs"] or cfg["appendix_epochs"]) if c100 else cfg["appendix_epochs"],
            "augment": cfg["appendix_augment"],
            "two_step": cfg["appendix_two_step"], "distill": cfg["appendix_distill"],
            # threads: only how fast the cells run, not part of any identity
            "threads": cfg["appendix_threads"] or cfg["threads"]}


def data_missing(cfg: dict[str, Any], dataset: str) -> str | None:
    """Why ``dataset``'s notebook-06 files cannot be read, or None when they are there (files only, no loading)."""
    s = cell_settings(cfg, dataset)
    try:
        folder = resolve_data_dir(dataset, cfg["data_dir"])
    except DataError as e:
        return str(e)
    if folder is None:
        if s["train_file"] != "train.npz":
            return (f"no data folder (data_dir / $MVLIB_DATA / the search path) and torchvision has no "
                    f"{s['train_file']!r} for {dataset}")
        return None  # torchvision download; its own errors are clear
    absent = [n for n in (s["train_file"], "test.npz") if not (folder / n).is_file()]
    return f"{folder} lacks {', '.join(absent)}" if absent else None


def cells(cfg: dict[str, Any]) -> list[tuple[str, str, str, list[int]]]:
    """``(model, norm, dataset, seeds)`` of the grid: every ``appendix_seeds`` for the CIFAR-10 cells of
    ``appendix_seed_models``, the first seed elsewhere (the trimming is the profile's, and the tables say it)."""
    out = []
    for dataset in cfg["appendix_datasets"]:
        for model in cfg["appendix_models"]:
            many = dataset == "cifar10" and model in cfg["appendix_seed_models"]
            seeds = list(cfg["appendix_seeds"]) if many else cfg["appendix_seeds"][:1]
            for norm in cfg["appendix_norms"]:
                out.append((model, norm, dataset, seeds))
    return out


def _cell_cfg(cfg: dict[str, Any], model: str, norm: str, dataset: str, seed: int) -> dict[str, Any]:
    from .run_setup import run_config
    return run_config(cfg, **cell_settings(cfg, dataset), norm=norm, seed=seed,
                      width=relative_width(model, cfg["appendix_width"]),
                      agc_clip=cfg["appendix_agc_clip"] if norm in cfg["appendix_agc_norms"] else 0.0)


def downsample_options(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """The model options of ``appendix_downsample`` (ResNet-18s only; ReActNet-A has no 1x1 downsample shortcut).

    ``real`` adds none, so a cell's parameters stay what they were before the key existed.
    """
    kind = cfg["appendix_downsample"]
    return {} if kind == "real" or model == "reactneta" else {"binary_downsample": kind}


def run_cell(cfg: dict[str, Any], model: str, norm: str, dataset: str, seed: int | None = None, log=print):
    """Train (or reuse) one cell and seed of the grid; returns ``(model, run)``.

    ReActNet-A is built at the same fraction of its paper width as the
    ResNet-18s (``relative_width``). Adaptive gradient clipping applies to
    the norms in ``appendix_agc_norms`` (the official scripts clip every cell).
    """
    from .experiment import train_recipe  # experiment imports the trainer; keep this module light
    seed = cfg["appendix_seeds"][0] if seed is None else seed
    return train_recipe(_cell_cfg(cfg, model, norm, dataset, seed), STEP, model, variant_name(norm),
                        model_options=downsample_options(cfg, model) or None, log=log)


def run_floor(cfg: dict[str, Any], model: str, dataset: str, log=print):
    """The shortcut-only network of ``model`` (no BN, every binary branch skipped), trained like a w/o-BN cell."""
    from .experiment import train_recipe
    c = _cell_cfg(cfg, model, "none", dataset, cfg["appendix_seeds"][0])
    return train_recipe(c, STEP, model, FLOOR, model_options={"shortcut_only": True, **downsample_options(cfg, model)},
                        log=log)


def branch_ratio_rows(cfg: dict[str, Any], run, batch: int = 64) -> list[dict[str, Any]]:
    """Per block, the binary-branch / shortcut rms ratio of a cell at initialization and after training.

    Measured on the first ``batch`` validation images of the cell's data;
    the initial model is the one the run started from (same seed, same build).
    """
    import torch

    from ..models import build_model
    from ..models.diagnostics import branch_ratios
    from .run_setup import load_run_model, loaders
    p = run.params
    c = _cell_cfg(cfg, p["model"], p["norm"], p["dataset"], p["seed"])
    x = next(iter(loaders(c)[1]))[0][:batch]
    torch.manual_seed(p["seed"])
    init = build_model(p["model"], num_classes=p["num_classes"], width=p["width"], norm=p["norm"],
                       **(p.get("model_options") or {}))
    rows = []
    for when, net in (("init", init), ("end", load_run_model(run))):
        with torch.no_grad():
            measured = branch_ratios(net.eval(), x)
        for r in measured:
            rows.append({"model": p["model"], "variant": run.metrics["variant"], "dataset": p["dataset"],
                         "seed": p["seed"], "when": when, **r})
    return rows
