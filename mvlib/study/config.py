"""Flat, literal, typed configuration (in the spirit of nanoGPT's configurator).

A configuration is one flat dict of literal values. :data:`SCHEMA` names every
key with its type, default and meaning; a profile (``configs/<profile>.yaml``)
sets some of them; overrides (command line, papermill parameters) set others.
An unknown key or a value of the wrong type is an error *before* any work
starts, with the key named.

Notebooks follow one convention so that papermill's injected parameters are
checked too (papermill itself only warns about unknown ones)::

    # cell "imports"
    from mvlib.study.config import notebook_config
    _names_before_parameters = set(globals())
    # cell tagged "parameters"
    profile = "cpu"
    # next cell
    cfg = notebook_config(globals(), _names_before_parameters)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

# key: (type, default, meaning with units). Types: int, float, str, bool, list (of literals).
SCHEMA: dict[str, tuple[type, Any, str]] = {
    # ---- where and how -------------------------------------------------
    "profile": (str, "cpu", "profile name (ci, cpu, paper)"),
    "data_dir": (str, "", "folder with train.npz/test.npz; '' = $MVLIB_DATA or torchvision download"),
    "results_dir": (str, "results", "where run records go (relative to the repository root)"),
    "device": (str, "auto", "auto, cpu, cuda or cuda:N"),
    "seed": (int, 0, "random seed"),
    "progress": (bool, True, "tqdm progress bars (turned off in batch runs)"),
    "threads": (int, 0, "torch CPU threads; 0 = leave torch's default"),
    # ---- data ------------------------------------------------------------
    "dataset": (str, "cifar10", "cifar10 or cifar100"),
    "train_per_class": (int, 0, "class-balanced train subset: first k images per class; 0 = all"),
    "test_per_class": (int, 0, "class-balanced test subset; 0 = the full test split"),
    "train_file": (str, "train.npz", "train file name inside data_dir (cifar100 here: train_subset.npz)"),
    "augment": (bool, True, "pad-4 random crop + horizontal flip"),
    # ---- baseline training (notebook 01) ---------------------------------
    "models": (list, ["reactnet18", "birealnet18"], "models trained in notebook 01"),
    "width": (int, 64, "base width (channels of stage 1); 64 = ResNet-18"),
    "epochs": (int, 1, "baseline training epochs"),
    "batch_size": (int, 128, "training batch (images)"),
    "eval_batch_size": (int, 500, "evaluation batch (images)"),
    "optimizer": (str, "adam", "adam or sgd"),
    "lr": (float, 1e-3, "peak learning rate"),
    "momentum": (float, 0.9, "SGD momentum"),
    "schedule": (str, "cosine", "cosine or linear decay to 0 over all steps"),
    "warmup_steps": (int, 0, "linear warm-up steps (optimizer steps)"),
    "weight_decay": (float, 0.0, "decoupled weight decay, on conv weights only"),
    "label_smoothing": (float, 0.0, "label smoothing of the cross-entropy"),
    "two_step": (bool, False, "ReActNet two-step: step 1 binary activations + real weights, step 2 both binary"),
    "distill": (bool, False, "knowledge distillation from a real-valued teacher trained by the same code"),
    "teacher_epochs": (int, 0, "epochs of the real-valued teacher (distill=True)"),
    # ---- appendix (notebook 06) -----------------------------------------
    "norm": (str, "bn", "normalization: bn, none (variant nobn: every BN removed) or bnfree (BNN - BN = ?)"),
    "agc_clip": (float, 0.0, "adaptive gradient clipping factor lambda, classifier excluded; 0 = off "
                 "(BNN_NoBN scripts: 0.02)"),
    "appendix_models": (list, ["xnornet18", "birealnet18", "reactnet18", "reactneta"], "models of notebook 06"),
    "appendix_norms": (list, ["bn", "none", "bnfree"], "norms of notebook 06 (variants bn, nobn, bnfree)"),
    "appendix_datasets": (list, ["cifar10", "cifar100"], "datasets of notebook 06"),
    "appendix_epochs": (int, 1, "training epochs per appendix cell"),
    "appendix_width": (int, 64, "ResNet-18 base width in notebook 06; 64 = the paper; ReActNet-A gets "
                       "the same fraction of its paper width (mvlib.models.relative_width: 64 -> 32)"),
    "appendix_train_per_class": (int, 0, "class-balanced train subset per class in notebook 06; 0 = all"),
    "cifar100_train_file": (str, "train_subset.npz", "CIFAR-100 train file inside its data folder"),
    "appendix_cifar100_train_per_class": (int, 0, "CIFAR-100 train images per class in notebook 06; "
                                          "0 = all of cifar100_train_file (100 per class here)"),
    "appendix_test_per_class": (int, 0, "CIFAR-10 test images per class in notebook 06; 0 = the full split"),
    "appendix_cifar100_test_per_class": (int, 0, "CIFAR-100 test images per class in notebook 06; "
                                         "0 = the full split"),
    "appendix_batch_size": (int, 0, "training batch (images) in notebook 06; 0 = batch_size"),
    "appendix_threads": (int, 0, "torch CPU threads in notebook 06; 0 = the threads key. 1 at small "
                         "width: 2 threads on 2 shared, busy cores ran 10-20x slower (OpenMP spin-waits)"),
    # ---- hardware cost (notebook 07) -------------------------------------
    "hw_widths": (list, [16, 64], "ReActNet-18 base widths whose voter fan-ins (C_in*9) are synthesized"),
    "hw_groups": (list, [2, 4, 8, 16], "hierarchical voter outer fan-ins G synthesized"),
    "hw_ties": (list, ["pos", "neg", "first"], "outer tie rules of the hierarchical voters synthesized"),
    "hw_jobs": (int, 2, "parallel Yosys processes on a synthesis-cache miss"),
    "hw_allow_synth": (bool, True, "synthesize on a cache miss (needs Yosys); False = cached results only"),
    "hw_check_vectors": (int, 2000, "random vectors per netlist check (plus threshold, tie, exhaustive ones)"),
    # ---- voter study (notebooks 02-04)
    "mv_models": (list, ["reactnet18", "birealnet18"], "baselines (from notebook 01) the voter notebooks use"),
    "mv_threads": (int, 0, "torch CPU threads in notebooks 02-04; 0 = the threads key. 1 in cpu: a width-16 "
                   "training step through the voter took 3.4 s with 1 thread, 15-23 s with 2 on 2 busy shared cores"),
    "mv_output_scales": (list, ["none", "alpha", "matched"], "voter output scales of the naive rows "
                         "(none = ±1, alpha = weight scale, matched = float conv's mean |output| per channel)"),
    "mv_surrogate_norm": (str, "batch_std", "voter surrogate pre-activation u = s / c: batch_std (measured default, "
                          "see mvlib/voters.py), sqrt_fanin, fanin"),
    "mv_calib_batches": (int, 4, "training batches that calibrate the matched output scale"),
    "mv_recal_batches": (int, 20, "training batches of BN recalibration (+recal rows)"),
    "mv_sensitivity_scales": (list, ["none", "matched"], "output scales of the one-layer-at-a-time sweep"),
    "mv_sensitivity_test_per_class": (int, 0, "test images per class of the sensitivity sweep; 0 = all"),
    "mv_retrain_estimators": (list, ["approxsign", "ste"], "voter surrogates retrained (retrain-approx, -ste)"),
    "mv_retrain_epochs": (int, 1, "epochs of retraining through the voter"),
    "mv_retrain_lr": (float, 5e-4, "peak learning rate of retraining through the voter"),
    "mv_retrain_train_per_class": (int, 0, "train images per class for retraining; 0 = all"),
    "hmv_groups": (list, [2, 4, 8, 16], "hierarchical voter outer fan-ins G (must divide the stage-1 width)"),
    "hmv_ties": (list, ["pos", "neg", "first"], "outer tie rules of the hierarchical voter"),
    "hmv_nested": (list, [[4, 2]], "nested fan-ins (G1, G2, ...) evaluated besides the single-level ones"),
    "hmv_sweep_test_per_class": (int, 0, "test images per class of the G x tie sweep; 0 = all"),
    "hmv_recal": (bool, True, "also evaluate the G x tie sweep after BN recalibration"),
    "hmv_disagreement_batches": (int, 1, "test batches (of the sweep subset) for disagreement and tie rates"),
    "hmv_retrain_groups": (list, [4], "G retrained through the hierarchical voter"),
    "hmv_retrain_ties": (list, ["pos"], "tie rules retrained through the hierarchical voter"),
    # ---- kernels (notebook 05)
    "kernel_batches": (list, [1, 16, 128], "batches of the per-layer kernel benchmark (images)"),
    "kernel_reps": (int, 5, "timed calls per measurement after a warm-up; the best is reported"),
    "kernel_threads": (int, 0, "threads for torch and Numba in the kernel benchmark; 0 = all logical CPUs"),
    "kernel_clock": (str, "wall", "wall, or process (CPU time, needs kernel_threads=1) on a shared machine"),
    "kernel_network_width": (int, 64, "width of the ReActNet-18 of the whole-network benchmark"),
    "kernel_network_batch": (int, 128, "batch of the whole-network benchmark (images)"),
}


def _type_name(t: type) -> str:
    return t.__name__


def check_value(key: str, value: Any) -> Any:
    """Check one key and value against the schema; ints are accepted for floats."""
    if key not in SCHEMA:
        raise KeyError(f"unknown configuration key {key!r}; known keys: {', '.join(sorted(SCHEMA))}")
    typ = SCHEMA[key][0]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool):
        raise TypeError(f"configuration key {key!r} must be int, got bool {value!r}")
    if not isinstance(value, typ):
        raise TypeError(f"configuration key {key!r} must be {_type_name(typ)}, got {type(value).__name__} {value!r}")
    if typ is list:
        for item in value:
            if not isinstance(item, (int, float, str, bool, list)):
                raise TypeError(f"configuration key {key!r}: list items must be literals, got {item!r}")
    return value


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: check_value(k, v) for k, v in cfg.items()}


def load_profile(profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- ``configs/<profile>.yaml`` <- overrides; every key and type checked."""
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"unknown profile {profile!r}: no {path}; known profiles: {known}")
    with open(path) as f:
        prof = yaml.safe_load(f) or {}
    if not isinstance(prof, dict):
        raise TypeError(f"{path} must hold a flat mapping of keys to literals")
    cfg = {k: v[1] for k, v in SCHEMA.items()}
    try:
        cfg.update(validate(prof))
    except (KeyError, TypeError) as e:
        raise type(e)(f"{path}: {e.args[0]}") from None
    cfg.update(validate(dict(overrides or {})))
    cfg["profile"] = profile
    return cfg


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_config(namespace: dict[str, Any], names_before: set[str]) -> dict[str, Any]:
    """Resolve a notebook's configuration from its parameters (and papermill's injected ones).

    Every public name defined after ``names_before`` was taken is a parameter:
    ``profile`` picks the profile, every other name must be a schema key of
    the right type. Raises before any work starts otherwise.
    """
    params = {k: v for k, v in namespace.items()
              if k not in names_before and not k.startswith("_") and k not in _IPYTHON_NAMES
              and not callable(v) and type(v).__name__ != "module"}
    profile = params.pop("profile", "cpu")
    return load_profile(profile, params)


def parse_cli_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.01", "models=[reactnet18]"]`` -> typed dict (YAML literals)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return validate(out)
