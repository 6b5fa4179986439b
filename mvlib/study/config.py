"""Flat, literal, typed configuration of the study (in the spirit of nanoGPT's configurator).

A configuration is one flat dict of literal values. :data:`SCHEMA` names every
key with its type, default, meaning, *scope* and *check*; a profile
(``configs/<profile>.yaml``) sets some of them; overrides (command line,
papermill parameters) set others. An unknown key, a value of the wrong type or
out of range is an error *before* any work starts, with the key named.

Scopes say what a key is for, and so what enters a run's identity
(:func:`mvlib.study.run_setup.run_params`):

* ``exec`` -- how and where things run (threads, device, progress, folders);
  never part of a result's identity;
* ``data`` and ``train`` -- what a training run computes from; *all* of them
  enter every training run's identity (derived from this table, no hand-kept
  list);
* ``study`` -- which runs a notebook makes (models, seeds, grids, budgets of
  later steps); they enter a run's identity through the run's own arguments.

Floats may be written as ``1e-3`` (YAML reads that as a string; it is
converted). Notebooks list their main parameters with ``None`` (= the
profile's value) so that ``papermill --help-notebook`` shows them::

    # cell "imports"
    from mvlib.study.config import notebook_config
    _names_before_parameters = set(globals())
    # cell tagged "parameters"
    profile = "cpu"
    seeds = None
    # next cell
    cfg = notebook_config(globals(), _names_before_parameters)
"""
from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import yaml

from ..binarizers import BINARIZERS
from ..data import DATASETS
from ..environment import REPO_ROOT
from ..models import MODELS, NORMS, TEACHERS
from ..voter_analysis import THRESHOLD_LEVELS
from ..voter_spec import OUTPUT_SCALES, SURROGATE_NORMS, TIE_RULES

CONFIG_DIR = REPO_ROOT / "configs"
# files of configs/ that are laid over a profile rather than being one (configs/smoke.yaml: --smoke)
OVERLAYS = ("smoke",)
# the choices the library knows, so that a configuration is refused before the library would refuse it
MODEL_NAMES, ESTIMATORS, TEACHER_NAMES = tuple(MODELS), tuple(BINARIZERS), tuple(TEACHERS)
# the voter rows of notebook 08 (mvlib.study.voter_drop.CONVENTIONS and the BN-folded "threshold")
VOTER_DROP_CONVENTIONS = ("naive", "naive-alpha", "naive-matched", "naive+recal", "threshold")


class Key(NamedTuple):
    type: type
    default: Any
    doc: str
    scope: str                                 # exec | data | train | study
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None


# ---- checks: each returns a description of the problem or None -----------------------------------
def at_least(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}"


def positive(v):
    return None if v > 0 else "must be > 0"


def in_unit(v):
    return None if 0 <= v < 1 else "must lie in [0, 1)"


def in_closed_unit(v):
    return None if 0 <= v <= 1 else "must lie in [0, 1]"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def each(check):
    def f(items):
        for it in items:
            bad = check(it)
            if bad:
                return f"item {it!r} {bad}"
        return None
    return f


def ints_at_least(lo):
    return each(lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= lo
                else f"must be an int >= {lo}")


def nonempty(check=None):
    def f(items):
        if not items:
            return "must not be empty"
        return check(items) if check else None
    return f


def seed_list(items):
    bad = nonempty(ints_at_least(0))(items)
    if bad:
        return bad
    return None if len(set(items)) == len(items) else "must not repeat a seed"


def fanin_lists(items):
    for f in items:
        if not isinstance(f, list) or not f or ints_at_least(2)(f):
            return f"item {f!r} must be a non-empty list of ints >= 2"
    return None


def model_recipes_check(recipes):
    """``{model: {key: value}}``: known models, training keys only (not seed), each value checked by its key."""
    for model, recipe in recipes.items():
        if model not in MODEL_NAMES:
            return f"names unknown model {model!r}; models are {list(MODEL_NAMES)}"
        if not isinstance(recipe, dict):
            return f"entry {model!r} must be a mapping of training keys to values"
        for k, v in recipe.items():
            if k not in SCHEMA or SCHEMA[k].scope != "train" or k == "seed":
                return f"entry {model!r}: {k!r} is not a training key (allowed: the 'train' keys but seed)"
            try:
                check_value(k, v)
            except (KeyError, TypeError, ValueError) as e:
                return f"entry {model!r}: {e.args[0]}"
    return None


def positive_number(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != float("inf")
    return None if ok else "must be a positive finite number"


def device_name(v):
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else "must be auto, cpu, cuda or cuda:N"


# key: Key(type, default, meaning with units, scope, check)
SCHEMA: dict[str, Key] = {
    # ---- where and how ---------------------------------------------------------------------------
    "profile": Key(str, "cpu", "profile name (ci, cpu, long, paper)", "exec"),
    "data_dir": Key(str, "", "folder with train.npz/test.npz; '' = $MVLIB_DATA or torchvision download", "exec"),
    "results_dir": Key(str, "results", "where run records go (relative to the repository root)", "exec"),
    "device": Key(str, "auto", "auto, cpu, cuda or cuda:N", "exec", device_name),
    "progress": Key(bool, True, "tqdm progress bars (turned off in batch runs)", "exec"),
    "threads": Key(int, 0, "torch CPU threads; 0 = leave torch's default", "exec", at_least(0)),
    "ddp_procs": Key(int, 1, "data-parallel ranks per training run: > 1 trains each run under torchrun with that many "
                     "processes (one per GPU; gloo on CPU); the result is one process's up to floating-point order",
                     "exec", at_least(1)),
    "study_jobs": Key(int, 1, "notebooks the pipeline runs at once (each on cores/jobs torch threads; the "
                      "timing notebook 05 alone); no effect on results beyond floating-point order", "exec",
                      at_least(1)),
    "study_steps": Key(list, [], "the notebooks this profile's study runs, by number or name ([] = every one): a "
                       "profile that answers some of the claims only", "exec",
                       each(lambda v: None if isinstance(v, str) else 'must be a string: a number such as "01" '
                                                                       '(quoted in YAML) or a name')),
    "force": Key(bool, False, "retrain / re-evaluate even where a finished run of the same identity exists", "exec"),
    "artifacts": Key(bool, False, "every finished training run is also written as an artifact, "
                     "<results_dir>/artifacts/<profile>/<step>/<run_id>.npz (weights, record, validation and test "
                     "predictions; mvlib.study.run_artifacts); a run trained under other code is reused once its "
                     "artifact reproduces those predictions, and a retraining starts from the weights of its "
                     "source's artifact", "exec"),
    "reuse_artifacts": Key(str, "verified", "with artifacts: verified (reuse a run of other code whose artifact "
                           "reproduces its predictions; train again, with one line, where it does not), strict (the "
                           "same, but a difference stops the run) or off (only runs of this code are reused)", "exec",
                           one_of("verified", "strict", "off")),
    "eval_engine": Key(bool, True, "evaluate binary ResNet-18s on the CPU with cuda_numba's bit-exact inference "
                       "engine (the float model's logits, ~9x faster with hierarchical voters); others: the float "
                       "model", "exec"),
    "eval_batch_size": Key(int, 500, "evaluation batch (images); eval-mode results do not depend on it", "exec",
                           at_least(1)),
    # ---- data -------------------------------------------------------------------------------------
    "dataset": Key(str, "cifar10", "cifar10 or cifar100", "data", one_of(*DATASETS)),
    "train_file": Key(str, "train.npz", "train file name inside data_dir (cifar100 here: train_subset.npz)", "data"),
    "val_per_class": Key(int, 500, "validation images per class held out of the train file (its last ones); "
                         "never trained on, every choice is made on them", "data", at_least(1)),
    "train_per_class": Key(int, 0, "class-balanced train subset: first k images per class outside the "
                           "validation split; 0 = all", "data", at_least(0)),
    "test_per_class": Key(int, 0, "class-balanced test subset; 0 = the full test split", "data", at_least(0)),
    "val_eval_per_class": Key(int, 0, "validation images per class that evaluations use (sweeps take a subset); "
                              "0 = the whole validation split", "data", at_least(0)),
    "augment": Key(bool, True, "pad-4 random crop + horizontal flip", "data"),
    # ---- one training run -------------------------------------------------------------------------
    "seed": Key(int, 0, "seed of one run: initialization, data order, augmentation", "train", at_least(0)),
    "width": Key(int, 64, "base width (channels of stage 1); 64 = ResNet-18", "train", at_least(1)),
    "epochs": Key(int, 1, "baseline training epochs", "train", at_least(1)),
    "batch_size": Key(int, 128, "training batch (images)", "train", at_least(1)),
    "optimizer": Key(str, "adam", "adam (decoupled weight decay, AdamW), adam-l2 (torch's Adam with the decay as an "
                     "L2 term in the gradient: the official ReActNet / Bi-Real code) or sgd", "train",
                     one_of("adam", "adam-l2", "sgd")),
    "lr": Key(float, 1e-3, "peak learning rate", "train", positive),
    "precision": Key(str, "fp32", "training forward precision: fp32, or bf16 (torch.autocast: real-valued convolutions "
                     "and matmuls in bf16, binary convolutions exact, their backward convolutions in bf16); bf16 "
                     "pays only where the CPU has bf16 units (AVX512-BF16, AMX) or on a GPU: without them oneDNN's "
                     "bf16 convolutions are many times slower than fp32 (python -m mvlib.bench.train_throughput "
                     "--bf16 measures it)", "train", one_of("fp32", "bf16")),
    "compile": Key(bool, False, "train under torch.compile (inductor): the binary layers' elementwise passes fused "
                   "by the compiler instead of numba; another rounding order, hence part of a run's identity; "
                   "the first step compiles (about a minute on 2 cores); evaluation stays eager "
                   "(python -m mvlib.bench.train_throughput --compile measures the gain)", "train"),
    "momentum": Key(float, 0.9, "SGD momentum", "train", in_unit),
    "schedule": Key(str, "cosine", "cosine or linear decay to 0 over all steps", "train", one_of("cosine", "linear")),
    "warmup_steps": Key(int, 0, "linear warm-up steps (optimizer steps)", "train", at_least(0)),
    "weight_decay": Key(float, 0.0, "weight decay on conv weights only (decoupled for adam, L2 for adam-l2 and sgd)",
                        "train", at_least(0.0)),
    "step2_weight_decay": Key(float, -1.0, "weight decay of step 2 of two-step training; -1 = weight_decay "
                              "(the official ReActNet scripts: 1e-5 in step 1, 0 in step 2)", "train", at_least(-1.0)),
    "checkpoint_pick": Key(str, "last", "which epoch's weights a training run keeps: last, or best_val (the best "
                           "validation top-1; the official code picks the best on the test set)", "train",
                           one_of("last", "best_val")),
    "label_smoothing": Key(float, 0.0, "label smoothing of the cross-entropy", "train", in_unit),
    "two_step": Key(bool, False, "ReActNet two-step: step 1 binary activations + real weights, step 2 both binary",
                    "train"),
    "distill": Key(bool, False, "knowledge distillation from a real-valued teacher trained by the same code", "train"),
    "kd_weight": Key(float, 1.0, "distilling: the student's loss is kd_weight x the distillation loss + (1 - "
                     "kd_weight) x the cross-entropy with the labels (label_smoothing applies); 1 = ReActNet's "
                     "distillation loss alone (computed alone: no cross-entropy term)", "train", in_closed_unit),
    "teacher_epochs": Key(int, 0, "epochs of the real-valued teacher (distill=True); airbench: passes of its own "
                          "recipe (airbench94: 10)", "train", at_least(0)),
    "teacher_model": Key(str, "same", "the teacher: same (the student's network with real weights and activations, "
                         "the student's recipe), a real CIFAR ResNet (resnet18, resnet34: ReActNet's teacher) "
                         "trained with the teacher_* recipe, or airbench (mvlib.teacher's net, trained by its own "
                         "recipe on the student's training split: teacher_epochs and teacher_width apply, the other "
                         "teacher_* recipe keys do not; batch 1024, so >= 1024 training images; measured and "
                         "distilled from with its flip TTA)", "train", one_of("same", *TEACHER_NAMES)),
    "teacher_width": Key(int, 64, "base width of a resnet teacher (64 = the standard network); airbench: its first "
                         "block's width (64 = airbench94's 64/256/256, the others scale with it)", "train",
                         at_least(1)),
    "teacher_optimizer": Key(str, "sgd", "optimizer of a resnet teacher (not airbench's)", "train",
                             one_of("adam", "adam-l2", "sgd")),
    "teacher_lr": Key(float, 0.1, "peak learning rate of a resnet teacher (cosine to 0; not airbench's)", "train",
                      positive),
    "teacher_weight_decay": Key(float, 5e-4, "weight decay of a resnet teacher (not airbench's)", "train",
                                at_least(0.0)),
    "teacher_batch_size": Key(int, 128, "training batch (images) of a resnet teacher (not airbench's: 1024)", "train",
                              at_least(1)),
    "teacher_min_val_top1": Key(float, 0.0, "a teacher below this validation top-1 (%) stops the study before any "
                                "student learns from it (airbench: the top-1 of its flip TTA, the forward the "
                                "students learn from)", "train", at_least(0.0)),
    "norm": Key(str, "bn", "normalization: bn, none (variant nobn: every BN removed) or bnfree (BNN - BN = ?)",
                "train", one_of(*NORMS)),
    "agc_clip": Key(float, 0.0, "adaptive gradient clipping factor lambda of a training run, classifier excluded; "
                    "0 = off (notebook 06 sets it per cell from appendix_agc_clip)", "train", at_least(0.0)),
    # ---- the study: which runs the notebooks make --------------------------------------------------
    "model_recipes": Key(dict, {}, "per-network training recipes for notebook 01: {model: {train key: value}} over "
                         "the profile's values (e.g. Bi-Real's own one-step recipe beside ReActNet's two-step one)",
                         "study", model_recipes_check),
    "models": Key(list, ["reactnet18", "birealnet18"], "models trained in notebook 01", "study",
                  nonempty(each(one_of(*MODEL_NAMES)))),
    "seeds": Key(list, [0], "training seeds of the main rows (baselines, naive rows, retraining); "
                 "rows are means over them", "study", seed_list),
    "sweep_seeds": Key(list, [0], "seeds (a subset of seeds) of the sweeps and ablations: sensitivity, "
                       "G x tie grid, retrain-ste, hierarchical retraining", "study", seed_list),
    # appendix (notebook 06)
    "appendix_models": Key(list, ["xnornet18", "birealnet18", "reactnet18", "reactneta"], "models of notebook 06",
                           "study", nonempty(each(one_of(*MODEL_NAMES)))),
    "appendix_norms": Key(list, ["bn", "none", "bnfree"], "norms of notebook 06 (variants bn, nobn, bnfree)", "study",
                          nonempty(each(one_of(*NORMS)))),
    "appendix_datasets": Key(list, ["cifar10", "cifar100"], "datasets of notebook 06", "study",
                             nonempty(each(one_of(*DATASETS)))),
    "appendix_epochs": Key(int, 1, "training epochs per appendix cell", "study", at_least(1)),
    "appendix_width": Key(int, 64, "ResNet-18 base width in notebook 06; 64 = the paper; ReActNet-A gets the same "
                          "fraction of its paper width (mvlib.models.relative_width: 64 -> 32)", "study", at_least(1)),
    "appendix_train_per_class": Key(int, 0, "class-balanced train subset per class in notebook 06; 0 = all",
                                    "study", at_least(0)),
    "cifar100_train_file": Key(str, "train_subset.npz", "CIFAR-100 train file inside its data folder", "study"),
    "cifar100_val_per_class": Key(int, 10, "CIFAR-100 validation images per class held out of its train file",
                                  "study", at_least(1)),
    "appendix_cifar100_train_per_class": Key(int, 0, "CIFAR-100 train images per class in notebook 06; 0 = all of "
                                             "cifar100_train_file outside its validation split", "study", at_least(0)),
    "appendix_test_per_class": Key(int, 0, "CIFAR-10 test images per class in notebook 06; 0 = the full split",
                                   "study", at_least(0)),
    "appendix_cifar100_test_per_class": Key(int, 0, "CIFAR-100 test images per class in notebook 06; 0 = the full "
                                            "split", "study", at_least(0)),
    "appendix_batch_size": Key(int, 0, "training batch (images) in notebook 06; 0 = batch_size", "study",
                               at_least(0)),
    "appendix_threads": Key(int, 0, "torch CPU threads in notebook 06; 0 = the threads key", "exec", at_least(0)),
    "appendix_seeds": Key(list, [0], "training seeds of notebook 06; the first one for every cell", "study", seed_list),
    "appendix_seed_models": Key(list, ["reactnet18", "birealnet18"], "models whose CIFAR-10 cells run on every "
                                "appendix seed (the others on the first)", "study", each(one_of(*MODEL_NAMES))),
    "appendix_two_step": Key(bool, False, "notebook 06's cells trained in two steps (the BNN-BN scripts: step 1 "
                             "binary activations, step 2 binary weights too, half the epochs each)", "study"),
    "appendix_downsample": Key(str, "real", "1x1 downsample shortcut of notebook 06's ResNet-18 cells: real (fp32 "
                               "conv), weights (binary weights on real activations: the BNN-BN scripts' "
                               "BNN_NoBN networks) or binary (binary weights and activations)", "study",
                               one_of("real", "weights", "binary")),
    "appendix_distill": Key(bool, False, "notebook 06's cells distilled from the teacher of teacher_model (the "
                            "BNN-BN scripts' --loss_type kd)", "study"),
    "appendix_augment": Key(bool, True, "pad-4 crop + flip in notebook 06 (off in cpu: chosen on validation)",
                            "study"),
    "appendix_cifar100_epochs": Key(int, 0, "training epochs of the CIFAR-100 cells; 0 = appendix_epochs", "study",
                                    at_least(0)),
    "appendix_val_eval_per_class": Key(int, 0, "CIFAR-10 validation images per class evaluated after each epoch "
                                       "of a cell (curves); 0 = the whole validation split", "study", at_least(0)),
    "appendix_agc_clip": Key(float, 0.02, "adaptive gradient clipping factor of notebook 06's cells (the BNN-BN "
                             "scripts' 0.02); classifier excluded", "study", at_least(0.0)),
    "appendix_agc_norms": Key(list, ["bnfree"], "norms whose cells use appendix_agc_clip; the official BNN-BN "
                              "scripts clip every cell", "study", each(one_of(*NORMS))),
    "appendix_floors": Key(bool, True, "train the shortcut-only floor of each model and dataset", "study"),
    # hardware cost (notebook 07)
    "hw_widths": Key(list, [16, 64], "ReActNet-18 base widths whose voter fan-ins (C_in*9) are synthesized",
                     "study", nonempty(ints_at_least(1))),
    "hw_groups": Key(list, [2, 4, 8, 16], "hierarchical voter outer fan-ins G synthesized", "study",
                     ints_at_least(2)),
    "hw_ties": Key(list, ["pos", "neg", "first"], "outer tie rules of the hierarchical voters synthesized", "study",
                   each(one_of(*TIE_RULES))),
    "hw_jobs": Key(int, 2, "parallel Yosys processes on a synthesis-cache miss", "exec", at_least(1)),
    "hw_allow_synth": Key(bool, True, "synthesize on a cache miss (needs Yosys); False = cached results only",
                          "exec"),
    "hw_check_vectors": Key(int, 2000, "random vectors per netlist check (plus threshold, tie, exhaustive ones)",
                            "study", at_least(1)),
    # voter study (notebooks 02-04)
    "mv_models": Key(list, ["reactnet18", "birealnet18"], "baselines (from notebook 01) the voter notebooks use",
                     "study", nonempty(each(one_of(*MODEL_NAMES)))),
    "mv_threads": Key(int, 0, "torch CPU threads in notebooks 02-04; 0 = the threads key", "exec", at_least(0)),
    "mv_output_scales": Key(list, ["none", "alpha", "matched"], "voter output scales of the naive rows (none = ±1, "
                            "alpha = weight scale, matched = float conv's mean |output| per channel)", "study",
                            each(one_of(*OUTPUT_SCALES))),
    "mv_surrogate_norm": Key(str, "batch_std", "voter surrogate pre-activation u = s / c: batch_std, sqrt_fanin, "
                             "fanin (chosen on validation: tools/probe_retrain.py)", "study",
                             one_of(*SURROGATE_NORMS)),
    "mv_calib_batches": Key(int, 4, "training batches that calibrate the matched output scale", "study",
                            at_least(1)),
    "mv_recal_batches": Key(int, 20, "training batches of BN recalibration (+recal rows)", "study", at_least(1)),
    "mv_sensitivity_scales": Key(list, ["none", "matched"], "output scales of the one-layer-at-a-time sweep",
                                 "study", each(one_of(*OUTPUT_SCALES))),
    "mv_sensitivity_val_per_class": Key(int, 0, "validation images per class of the sensitivity sweep; 0 = all",
                                        "study", at_least(0)),
    "mv_retrain_estimators": Key(list, ["approxsign", "ste"], "voter surrogates retrained (retrain-approx, -ste); "
                                 "approxsign on every seed, the others on sweep_seeds", "study",
                                 nonempty(each(one_of(*ESTIMATORS)))),
    "mv_retrain_epochs": Key(int, 1, "epochs of retraining through the voter", "study", at_least(1)),
    "mv_retrain_lr": Key(float, 5e-4, "peak learning rate of retraining through the voter", "study", positive),
    "mv_retrain_train_per_class": Key(int, 0, "train images per class for retraining; 0 = all", "study",
                                      at_least(0)),
    "hmv_groups": Key(list, [2, 4, 8, 16], "hierarchical voter outer fan-ins G (must divide the stage-1 width)",
                      "study", ints_at_least(2)),
    "hmv_ties": Key(list, ["pos", "neg", "first"], "outer tie rules of the hierarchical voter", "study",
                    nonempty(each(one_of(*TIE_RULES)))),
    "hmv_nested": Key(list, [[4, 2]], "nested fan-ins (G1, G2, ...) evaluated besides the single-level ones",
                      "study", fanin_lists),
    "hmv_sweep_val_per_class": Key(int, 0, "validation images per class of the G x tie sweep; 0 = all",
                                   "study", at_least(0)),
    "hmv_recal": Key(bool, True, "also evaluate the G x tie sweep after BN recalibration", "study"),
    "hmv_disagreement_batches": Key(int, 1, "validation batches (of the sweep subset) for disagreement and tie rates",
                                    "study", at_least(1)),
    "hmv_retrain_groups": Key(list, [4], "G retrained through the hierarchical voter", "study", ints_at_least(2)),
    "hmv_retrain_ties": Key(list, ["pos"], "tie rules retrained through the hierarchical voter", "study",
                            each(one_of(*TIE_RULES))),
    # accuracy-logic Pareto front (notebook 09)
    "pareto_groups": Key(list, [2, 4, 8, 16], "single-level hierarchical voters G on the front (G must divide the "
                         "stage-1 width)", "study", ints_at_least(2)),
    "pareto_trees": Key(list, [[4, 4], [2, 2, 2, 2]], "voter trees (G1, G2, ...) on the front, outer level first "
                        "(the product must divide the stage-1 width)", "study", fanin_lists),
    "pareto_ties": Key(list, ["pos", "neg", "first"], "tie rules costed (and, with pareto_tie_choice all, retrained) "
                       "for every hierarchical voter", "study", nonempty(each(one_of(*TIE_RULES)))),
    "pareto_tie_choice": Key(str, "all", "tie rules retrained: all, or per voter the one that disagrees least with "
                             "the exact voter on the baselines' validation activations (disagreement)", "study",
                             one_of("all", "disagreement")),
    "pareto_width_fractions": Key(list, [0.75, 0.5], "the control: popcount and exact-voter networks at these "
                                  "fractions of the width, trained by notebook 01's recipe", "study",
                                  nonempty(each(lambda v: None if isinstance(v, float) and 0 < v < 1
                                                else "must be a float in (0, 1)"))),
    "pareto_seeds": Key(list, [0, 1, 2], "training seeds of every point of the front (each needs notebook 01's "
                        "baseline of that seed)", "study", nonempty(ints_at_least(0))),
    "pareto_retrain_train_per_class": Key(int, 0, "train images per class of the retraining every voter point "
                                          "shares (mv_retrain_epochs, mv_retrain_lr); 0 = mv_retrain_train_per_class",
                                          "study", at_least(0)),
    "pareto_val_per_class": Key(int, 0, "validation images per class every point is evaluated on; 0 = the "
                                "profile's (val_eval_per_class)", "study", at_least(0)),
    "pareto_test_per_class": Key(int, 0, "test images per class every point is evaluated on; 0 = the profile's "
                                 "(test_per_class)", "study", at_least(0)),
    # kernels (notebook 05)
    "kernel_batches": Key(list, [1, 16, 128], "batches of the per-layer kernel benchmark (images)", "study",
                          nonempty(ints_at_least(1))),
    "kernel_reps": Key(int, 5, "timed calls per measurement after a warm-up; the best is reported", "study",
                       at_least(1)),
    "kernel_threads": Key(int, 0, "threads for torch and Numba in the kernel benchmark; 0 = all logical CPUs",
                          "exec", at_least(0)),
    "kernel_clock": Key(str, "wall", "wall, or process (CPU time, needs kernel_threads=1) on a shared machine",
                        "exec", one_of("wall", "process")),
    "kernel_network_width": Key(int, 64, "width of the ReActNet-18 of the whole-network benchmark", "study",
                                at_least(1)),
    "kernel_network_batch": Key(int, 128, "batch of the whole-network benchmark (images)", "study", at_least(1)),
    "engine_quick": Key(bool, False, "the inference-engine benchmark in its quick form (batches 1 and 4, width 16, "
                        "2 calls): the ci profile", "study"),
    "engine_lce_python": Key(str, "", "an interpreter with Larq Compute Engine, measured side by side with the "
                             "engine (cuda_numba/bench_network.py says how to make one); '' = not measured", "exec"),
    # ---- why the voter hurts (notebook 08, mvlib.study.voter_drop) ---------------------------------
    "vd_ks": Key(list, [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "weight scales k of experiment 1: every binary "
                 "conv's latent weights times k, its BN's mean times k and variance (and eps) times k^2, so the "
                 "float network is unchanged (powers of two: bit-exact)", "study",
                 nonempty(each(positive_number))),
    "vd_detail_ks": Key(list, [0.125, 0.25, 0.5, 2.0, 4.0, 8.0], "weight scales k of the costlier per-k "
                        "measurements: the float-logit proof on the whole test split and the per-layer sign flips "
                        "(k = 1 always), on the sweep_seeds baselines", "study", each(positive_number)),
    "vd_sweep_val_per_class": Key(int, 0, "validation images per class of the k sweep; 0 = the whole validation "
                                  "split", "study", at_least(0)),
    "vd_threshold_levels": Key(list, ["conditional"], "output levels of the BN-folded threshold voter "
                               "(conditional: mean float output given the vote; symmetric: +-mean|BN| after the BN)",
                               "study", nonempty(each(one_of(*THRESHOLD_LEVELS)))),
    "vd_flip_batches": Key(int, 1, "validation batches (eval_batch_size images each) of the per-layer sign-flip "
                           "count, per baseline and k", "study", at_least(1)),
    "vd_conventions": Key(list, list(VOTER_DROP_CONVENTIONS), "voter rows evaluated on each trained variant of "
                          "experiments 3-4", "study", nonempty(each(one_of(*VOTER_DROP_CONVENTIONS)))),
    "vd_train_width": Key(int, 16, "base width (channels of stage 1) of the trained variants' shared recipe "
                          "(experiments 3-4)", "study", at_least(1)),
    "vd_wide_width": Key(int, 32, "base width of the wide point of experiment 4 (same recipe otherwise)", "study",
                         at_least(1)),
    "vd_train_epochs": Key(int, 1, "training epochs of the shared recipe", "study", at_least(1)),
    "vd_long_factor": Key(int, 3, "the long point of experiment 4 trains this many times vd_train_epochs", "study",
                          at_least(2)),
    "vd_train_per_class": Key(int, 0, "train images per class of the shared recipe; 0 = all outside the validation "
                              "split", "study", at_least(0)),
    "vd_train_val_per_class": Key(int, 0, "validation images per class on which the trained variants and their "
                                  "voter rows are evaluated; 0 = the whole validation split", "study", at_least(0)),
    "vd_train_seeds": Key(list, [0], "seeds of the shared recipe's reference (real 1x1) and binary-1x1 variants",
                          "study", seed_list),
    "vd_scale_seeds": Key(list, [0], "seeds of the wide and long points (the costliest; may be fewer)", "study",
                          seed_list),
    "vd_downsample_kinds": Key(list, ["binary"], "binary 1x1 shortcuts trained beside the real one (binary: fully "
                               "binary, a voter can replace it; weights: the official code's binary weights on "
                               "real activations)", "study", each(one_of("binary", "weights"))),
}

SCOPES = ("exec", "data", "train", "study")


def scope_keys(*scopes: str) -> tuple[str, ...]:
    """The keys of the given scopes, in schema order."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; scopes are {SCOPES}")
    return tuple(k for k, key in SCHEMA.items() if key.scope in scopes)


def did_you_mean(name: str, known, what: str) -> str:
    """``"did you mean 'x'?"`` for the close matches of ``name`` among ``known``, else the list of ``what``."""
    close = difflib.get_close_matches(name, list(known), n=3)
    return (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else f"the {what} are {', '.join(sorted(known))}")


def check_value(key: str, value: Any) -> Any:
    """Check one key and value against the schema; returns the value (ints and '1e-3' strings become floats)."""
    if key not in SCHEMA:
        close = difflib.get_close_matches(key, SCHEMA, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            "the keys are listed in mvlib/study/config.py (SCHEMA) and the profiles in configs/"
        raise KeyError(f"unknown configuration key {key!r}; {hint}")
    spec = SCHEMA[key]
    typ = spec.type
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif typ is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            raise TypeError(f"configuration key {key!r} must be float, got str {value!r}") from None
    if typ is int and isinstance(value, bool):
        raise TypeError(f"configuration key {key!r} must be int, got bool {value!r}")
    if not isinstance(value, typ):
        raise TypeError(f"configuration key {key!r} must be {typ.__name__}, got {type(value).__name__} {value!r}")
    if typ is dict and not all(isinstance(k, str) for k in value):
        raise TypeError(f"configuration key {key!r}: mapping keys must be strings")
    if typ is list:
        for item in value:
            if not isinstance(item, (int, float, str, bool, list)):
                raise TypeError(f"configuration key {key!r}: list items must be literals, got {item!r}")
    if typ is float and not math.isfinite(value):  # inf passes every range check of the form x > 0
        raise ValueError(f"configuration key {key!r} must be a finite number, got {value!r}")
    if spec.check is not None:
        bad = spec.check(value)
        if bad:
            raise ValueError(f"configuration key {key!r} = {value!r}: {bad}")
    return value


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: check_value(k, v) for k, v in cfg.items()}


def check_consistency(cfg: dict[str, Any]) -> None:
    """Rules that tie keys together (after every key passed its own check)."""
    extra = [s for s in cfg["sweep_seeds"] if s not in cfg["seeds"]]
    if extra:
        raise ValueError(f"sweep_seeds {extra} are not in seeds {cfg['seeds']}: the sweeps run on baselines "
                         f"that notebook 01 trains")
    if cfg["two_step"] and cfg["epochs"] < 2:
        raise ValueError("two_step needs epochs >= 2 (half the epochs per step)")
    if cfg["two_step"] and cfg["vd_train_epochs"] < 2:
        raise ValueError("two_step needs vd_train_epochs >= 2 (notebook 08 trains its variants in two steps too)")
    if cfg["appendix_two_step"] and min(cfg["appendix_epochs"], cfg["appendix_cifar100_epochs"] or 2) < 2:
        raise ValueError("appendix_two_step needs appendix_epochs (and appendix_cifar100_epochs) >= 2")
    if (cfg["distill"] or cfg["appendix_distill"]) and cfg["teacher_epochs"] < 1:
        raise ValueError("distill needs teacher_epochs >= 1 (the teacher is trained first)")
    for model, recipe in cfg["model_recipes"].items():  # each network's resolved recipe obeys the same rules
        check_consistency({**cfg, **recipe, "model_recipes": {}})


def check_device_available(device: str) -> None:
    """A ``cuda`` device that this machine does not have is an error before any work starts."""
    if not device.startswith("cuda"):
        return
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ValueError(f"device={device!r}, but this machine has {have} (torch {torch.__version__}); "
                         f"use device=auto or device=cpu")


def recipe_for(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """``cfg`` with ``model``'s entry of ``model_recipes`` applied: the configuration its notebook-01 runs use."""
    return {**cfg, **cfg["model_recipes"].get(model, {})}


def read_settings(path: Path) -> dict[str, Any]:
    """The keys a file of ``configs/`` sets, each checked against the schema (an error names the file)."""
    with open(path) as f:
        prof = yaml.safe_load(f) or {}
    if not isinstance(prof, dict):
        raise TypeError(f"{path} must hold a flat mapping of keys to literals")
    try:
        return validate(prof)
    except (KeyError, TypeError, ValueError) as e:
        raise type(e)(f"{path}: {e.args[0]}") from None


def load_overlay(name: str) -> dict[str, Any]:
    """``configs/<name>.yaml`` of :data:`OVERLAYS`: keys checked, laid over a profile by the caller."""
    if name not in OVERLAYS:
        raise FileNotFoundError(f"unknown overlay {name!r}; {did_you_mean(name, OVERLAYS, 'overlays')}")
    return read_settings(CONFIG_DIR / f"{name}.yaml")


def load_profile(profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- ``configs/<profile>.yaml`` <- overrides; every key, type, range and rule checked."""
    path = CONFIG_DIR / f"{profile}.yaml"
    if profile in OVERLAYS or not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem not in OVERLAYS)
        what = f"{path} is an overlay (--{profile})" if profile in OVERLAYS else f"no {path}"
        raise FileNotFoundError(f"unknown profile {profile!r}: {what}; {did_you_mean(profile, known, 'profiles')}")
    cfg = {k: v.default for k, v in SCHEMA.items()}
    cfg.update(read_settings(path))
    cfg.update(validate(dict(overrides or {})))
    cfg["profile"] = profile
    check_consistency(cfg)
    check_device_available(cfg["device"])
    return cfg


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_FROZEN = "_notebook_parameter_names"


def notebook_config(namespace: dict[str, Any], names_before: set[str]) -> dict[str, Any]:
    """Resolve a notebook's configuration from its parameters (and papermill's injected ones).

    The parameters are the public names defined between the imports cell
    (``names_before``) and the first call of this function; that set is
    frozen in the namespace at the first call, so re-running the
    configuration cell later (after ``cfg`` and other names exist) reads the
    same parameters again. ``profile`` picks the profile; a parameter set to
    ``None`` keeps the profile's value; every other name must be a schema key
    of the right type. Raises before any work starts otherwise.
    """
    names = namespace.get(_FROZEN)
    if names is None:
        names = sorted(k for k, v in namespace.items()
                       if k not in names_before and not k.startswith("_") and k not in _IPYTHON_NAMES
                       and not callable(v) and type(v).__name__ != "module")
        namespace[_FROZEN] = names
    params = {k: namespace[k] for k in names if k in namespace and namespace[k] is not None}
    profile = params.pop("profile", "cpu")
    return load_profile(profile, params)


def parse_cli_overrides(pairs: list[str], allowed: tuple[str, ...] | None = None,
                        command: str = "this command") -> dict[str, Any]:
    """``["epochs=3", "lr=1e-3", "models=[reactnet18]"]`` -> typed dict (YAML literals), checked.

    ``allowed`` restricts the keys to those the command uses: any other known
    key is refused rather than silently ignored.
    """
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    out = validate(out)
    if allowed is not None:
        unused = sorted(set(out) - set(allowed))
        if unused:
            raise KeyError(f"{command} does not use configuration key(s) {unused}; it accepts "
                           f"{', '.join(sorted(allowed))}")
    return out
