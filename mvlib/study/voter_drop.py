"""Why the voter hurts one network more than the other (notebook 08): convention, architecture, scale.

The deck's substituted voter costs ReActNet-18 8.4 points and Bi-RealNet-18 58.7. The ``naive`` row hands the
voter's bare ±1 to a BN fitted to ``alpha * s``, so its drop depends on the scale of the latent weights, which the
float network does not fix. Each function is one kind of row (per network and seed, a *drop* = float top-1 -
voter top-1 on the same split, so paired per seed), recorded through :mod:`mvlib.study.experiment`:

* :func:`rescale_checks`, :func:`rescale_sweep` -- experiment 1: weights times k, the BN compensating
  (:func:`mvlib.voter_analysis.rescale_binary_weights`): the float logits are unchanged, the naive drop is not;
* :func:`convention_rows` -- experiment 2: rows free of the weight scale (``naive-matched``, ``naive+recal``,
  ``threshold`` = the BN folded into the voter's threshold) beside ``naive`` and ``naive-alpha``;
* :func:`train_variants`, :func:`variant_rows` -- experiments 3-4: networks of one shared recipe that differ in
  one factor (binary 1x1 downsample, width, epochs);
* :func:`flip_table`, :func:`layer_damage` -- experiment 5: per layer, sign flips after the BN and damage;
* :func:`ordering_table`, :func:`factor_verdicts` -- the verdicts.

The 01 baselines' main rows are read on the test split (the ``naive*`` ones are notebook 02's records, reused);
the k sweep and the trained variants on validation.
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch

from ..voter_analysis import calibrate_threshold_voters, layer_sign_flips, rescale_binary_weights
from ..voter_ops import set_voter
from . import records
from .experiment import evaluate_record, train_recipe
from .run_setup import data_identity, load_run_model, loaders, resolve_device, run_config, run_params, with_seed
from .progress import say
from .voter_study import layer_sensitivity, study_cfg, substitute, voter_spec

STEP, TRAIN_STEP, NAIVE_STEP = "08_voter_drop", "08_voter_drop_train", "02_naive_majority_voter"
MODELS = ("reactnet18", "birealnet18")
# convention -> (output scale of the voter's ±1, BN recalibrated); "threshold" is the BN-folded voter
CONVENTIONS = {"naive": ("none", False), "naive-alpha": ("alpha", False), "naive-matched": ("matched", False),
               "naive+recal": ("none", True)}


def k_label(k: float) -> str:
    """``1/8``, ``1/2``, ``1``, ``8``: the rescaling factor as the rows and logs label it."""
    k = float(k)
    return f"1/{1 / k:g}" if k < 1 and float(1 / k).is_integer() else f"{k:g}"


def _row(factor, condition, ref: dict, run: records.Run, split: str, **extra) -> dict[str, Any]:
    """One per-seed drop row: the float network's and the voter's top-1 on ``split`` and their difference."""
    key = "top1" if split == "test" else "val_top1"
    m = run.metrics
    return {"factor": factor, "condition": condition, "model": m["model"], "seed": m["seed"], "split": split,
            "baseline": ref[key], "voter": m[key], "drop": ref[key] - m[key], "variant": m["variant"],
            "run_id": run.run_id, "code_hash": m["code_hash"], **extra}


# ---------------------------------------------------------------------------------------------- experiment 1
@torch.no_grad()
def _logits(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    out = [(model.eval()(x), y) for x, y in loader]
    return torch.cat([o for o, _ in out]), torch.cat([y for _, y in out])


def rescale_checks(cfg: dict, baseline: records.Run, ks, log=say) -> list[dict[str, Any]]:
    """The proof of experiment 1: the rescaled *float* network against its baseline on the whole test split and
    the k sweep's validation images. One record per ``k != 1`` (variant ``float-k<k>``): largest absolute logit
    difference and differing top-1 predictions per split, and its own top-1 (baseline logits computed once)."""
    c = run_config(study_cfg(cfg, baseline), val_eval_per_class=cfg["vd_sweep_val_per_class"])
    name, dev, data = baseline.params["model"], resolve_device(c), data_identity(c)
    ref: dict = {}  # the baseline's logits per split and its model, made when a record is missing
    out = []
    for k in (float(k) for k in ks if float(k) != 1.0):
        params = run_params(c, source_run=baseline.run_id, model=name, weight_scale=k, voter=None,
                            evaluated_on="val+test")
        with records.claim_run(STEP, name, f"float-k{k:g}", params, data, c["results_dir"], force=c["force"],
                               device=dev) as run:
            if not run.finished:
                t0 = time.time()
                if "model" not in ref:
                    ref["model"] = load_run_model(baseline, dev)
                base = ref["model"]
                scaled = rescale_binary_weights(base, k)
                _, val, test, _ = loaders(c)
                metrics = {}
                for split, loader, key in (("val", val, "val_top1"), ("test", test, "top1")):
                    if split not in ref:
                        ref[split] = _logits(base, loader)
                    (la, y), lb = ref[split], _logits(scaled, loader)[0]
                    metrics.update({key: 100.0 * int((lb.argmax(1) == y).sum()) / len(y),  # as train.evaluate
                                    f"{split}_max_abs_logit_diff": float((la - lb).abs().max()),
                                    f"{split}_differing_predictions": int((la.argmax(1) != lb.argmax(1)).sum()),
                                    f"{split}_images": len(y)})
                run.finish({"model": name, "variant": f"float-k{k:g}", "profile": c["profile"],
                            "dataset": c["dataset"], "weight_scale": k, **metrics,
                            "seconds": round(time.time() - t0, 1), "evaluation_only": True})
                log(f"{name} seed {c['seed']} k={k_label(k)}: test logits differ by <= "
                    f"{metrics['test_max_abs_logit_diff']:.2g}, {metrics['test_differing_predictions']} predictions")
            out.append({**run.metrics, "k": k, "run_id": run.run_id})
    return out


def rescale_sweep(cfg: dict, baselines: dict, ks, log=say) -> pd.DataFrame:
    """Experiment 1: the ``naive`` voter (bare ±1) on each baseline rescaled by each ``k``, on validation.

    ``baselines``: ``{model: {seed: run}}``. The validation subset is
    ``vd_sweep_val_per_class`` (0 = all); the float reference is the baseline
    on the same images (its own record when a subset is used).
    """
    rows = []
    spec = voter_spec(norm=cfg["mv_surrogate_norm"], output_scale="none")
    for name, by_seed in baselines.items():
        for seed, base in by_seed.items():
            c = run_config(study_cfg(cfg, base), val_eval_per_class=cfg["vd_sweep_val_per_class"])
            dev = resolve_device(c)
            ref = base.metrics if c["val_eval_per_class"] == base.params["val_eval_per_class"] else evaluate_record(
                c, STEP, lambda: load_run_model(base, dev), name, "float",
                {"source_run": base.run_id, "model": name, "voter": None}, test=False, log=log).metrics
            for k in map(float, ks):
                def build(k=k):
                    model = rescale_binary_weights(load_run_model(base, dev), k, inplace=True)
                    return set_voter(model, spec).eval()
                run = evaluate_record(c, STEP, build, name, f"naive-k{k:g}",
                                      {"source_run": base.run_id, "model": name, "voter": spec.to_dict(),
                                       "voter_layers": None, "weight_scale": k, "calib_batches": 0,
                                       "recal_batches": 0}, test=False,
                                      log=lambda line, k=k: log(f"{name} seed {seed} naive k={k_label(k)}: {line}"))
                rows.append(_row("a", f"naive, k = {k_label(k)}", ref, run, "val", k=k))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- experiment 2
def threshold_row(cfg: dict, step: str, baseline: records.Run, levels: str = "conditional", layers=None,
                  val_per_class: int | None = None, test: bool | None = None, log=say) -> records.Run:
    """The BN-folded threshold voter on ``layers`` (vote = sign(BN(alpha * s)) exactly), evaluated and recorded:
    :func:`mvlib.voter_analysis.calibrate_threshold_voters` on ``mv_calib_batches`` training batches; on
    ``val_per_class`` validation images per class (None: all) and, unless ``test`` is False (default: only when
    ``val_per_class`` is None), on the test split."""
    c = study_cfg(cfg, baseline) if val_per_class is None else run_config(study_cfg(cfg, baseline),
                                                                         val_eval_per_class=val_per_class)
    name, dev, spec = baseline.params["model"], resolve_device(c), {"name": "threshold"}
    variant = ("threshold" + ("" if levels == "conditional" else f"-{levels}")
               + ("" if layers in (None, "3x3") else "-with1x1" if layers == "all" else f"-{layers}"))

    def build():
        model = set_voter(load_run_model(baseline, dev), spec, layers)
        calibrate_threshold_voters(model, loaders(c)[0], cfg["mv_calib_batches"], levels)
        return model.eval()
    params = {"source_run": baseline.run_id, "model": name, "voter": spec, "threshold_levels": levels,
              "voter_layers": layers if layers is None or isinstance(layers, str) else list(layers),
              "calib_batches": cfg["mv_calib_batches"], "recal_batches": 0}
    test = val_per_class is None if test is None else test
    return evaluate_record(c, step, build, name, variant, params, test=test,
                           log=lambda line: log(f"{name} seed {c['seed']} {variant}: {line}"))


def _convention_runs(cfg, step, base, conventions, levels, layers=None, val_per_class=None, log=say):
    """``[(convention, run)]``: the voter rows of one trained network (``threshold`` expands to its levels)."""
    out = []
    for conv in conventions:
        if conv == "threshold":
            out += [(conv + ("" if lv == "conditional" else f"-{lv}"),
                     threshold_row(cfg, STEP, base, lv, layers, val_per_class, log=log)) for lv in levels]
        else:
            scale, recal = CONVENTIONS[conv]
            spec = voter_spec(norm=cfg["mv_surrogate_norm"], output_scale=scale)
            out.append((conv, substitute(cfg, step, base, spec, recal=recal, layers=layers,
                                         sweep_val_per_class=val_per_class, log=log)))
    return out


def convention_rows(cfg: dict, baselines: dict, log=say) -> pd.DataFrame:
    """Experiment 2 on the 01 baselines, test split: notebook 02's rows (reused) and the threshold voter (its
    validation numbers, which no verdict reads, on the k sweep's subset)."""
    conventions = [v for v in CONVENTIONS if v == "naive+recal" or CONVENTIONS[v][0] in cfg["mv_output_scales"]]
    rows = []
    for by_seed in baselines.values():
        for base in by_seed.values():
            runs = _convention_runs(cfg, NAIVE_STEP, base, conventions, [], log=log) + [
                ("threshold" + ("" if lv == "conditional" else f"-{lv}"),
                 threshold_row(cfg, STEP, base, lv, val_per_class=cfg["vd_sweep_val_per_class"], test=True, log=log))
                for lv in cfg["vd_threshold_levels"]]
            for conv, run in runs:
                rows.append(_row("a" if conv in ("naive", "naive-alpha") else "d", f"01 baselines: {conv}",
                                 base.metrics, run, "test", convention=conv, point="01 baselines", kind="real",
                                 layers="3x3", recipe="01 baselines", width=base.params["width"],
                                 epochs=base.params["epochs"]))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ experiments 3-4
def recipe_cfg(cfg: dict, point: str = "reference") -> dict:
    """The shared recipe of the trained variants (``vd_train_*``) at one point: reference, wide or long."""
    return run_config(study_cfg(cfg), width=cfg["vd_wide_width" if point == "wide" else "vd_train_width"],
                      epochs=cfg["vd_train_epochs"] * (cfg["vd_long_factor"] if point == "long" else 1),
                      train_per_class=cfg["vd_train_per_class"], val_eval_per_class=cfg["vd_train_val_per_class"])


def recipe_label(c: dict, kind: str = "real") -> str:
    return f"w{c['width']}-e{c['epochs']}-{kind}1x1"


def train_variant(c: dict, model_name: str, kind: str = "real", log=say) -> records.Run:
    """One network of the shared recipe ``c`` (its seed) with a real (``kind="real"``) or binary 1x1 downsample,
    trained as notebook 01's baselines are (:func:`mvlib.study.experiment.train_recipe`: two-step, distillation,
    when ``c`` asks for them; the networks' own ``model_recipes`` are not applied: both networks share this
    recipe), in step ``08_voter_drop_train``, evaluated on validation only."""
    opts = {} if kind == "real" else {"binary_downsample": kind}
    variant = recipe_label(c, kind)
    return train_recipe(c, TRAIN_STEP, model_name, variant, model_options=opts or None, test=False,
                        log=lambda line: log(f"{model_name} seed {c['seed']} {variant}: {line}"))[1]


def train_variants(cfg: dict, log=say) -> list[dict[str, Any]]:
    """Experiments 3-4: the reference and each ``vd_downsample_kinds`` on ``vd_train_seeds``; wide and long on
    ``vd_scale_seeds``. Returns ``[{point, kind, cfg, model, seed, run}]``."""
    plan = [("reference", k, cfg["vd_train_seeds"]) for k in ["real"] + list(cfg["vd_downsample_kinds"])]
    plan += [(p, "real", cfg["vd_scale_seeds"]) for p in ("wide", "long")]
    out = []
    for point, kind, seeds in plan:
        for seed in seeds:
            c = with_seed(recipe_cfg(cfg, point), seed)
            for name in MODELS:
                out.append({"point": point, "kind": kind, "cfg": c, "model": name, "seed": seed,
                            "run": train_variant(c, name, kind, log)})
    return out


def variant_rows(cfg: dict, trained: list[dict], log=say) -> pd.DataFrame:
    """Each trained variant's voter rows (``vd_conventions``) on its validation split; a binary 1x1 variant
    both with the voter in the 3x3 convolutions only and in 3x3 + 1x1 (``kind="binary"``)."""
    rows = []
    for t in trained:
        c, run = t["cfg"], t["run"]
        for layers in (["3x3", "all"] if t["kind"] == "binary" else ["3x3"]):
            for conv, r in _convention_runs(c, STEP, run, cfg["vd_conventions"], cfg["vd_threshold_levels"],
                                            layers, c["val_eval_per_class"], log):
                factor = "b" if t["point"] == "reference" else "c"
                where = "3x3" if layers == "3x3" else "3x3+1x1"
                rows.append(_row(factor, f"{recipe_label(c, t['kind'])}, voter {where}: {conv}", run.metrics, r,
                                 "val", recipe=recipe_label(c, t["kind"]), point=t["point"], kind=t["kind"],
                                 layers=where, convention=conv, width=c["width"], epochs=c["epochs"]))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- experiment 5
def flip_table(cfg: dict, baselines: dict, ks, log=say) -> pd.DataFrame:
    """Experiment 5: :func:`mvlib.voter_analysis.layer_sign_flips` of each baseline rescaled by each k, on
    ``vd_flip_batches`` validation batches (only ``flip_none`` may move with k)."""
    rows = []
    for name, by_seed in baselines.items():
        for seed, base in by_seed.items():
            c = study_cfg(cfg, base)
            val, model = loaders(c)[1], load_run_model(base, resolve_device(c))
            for k in map(float, ks):
                flips = layer_sign_flips(rescale_binary_weights(model, k), val, cfg["vd_flip_batches"], "all")
                rows += [{"model": name, "seed": seed, "k": k, "index": i, **r} for i, r in enumerate(flips)]
            log(f"{name} seed {seed}: sign flips after the BN, per layer")
    return pd.DataFrame(rows)


def layer_damage(cfg: dict, baselines: dict, seeds, log=say) -> pd.DataFrame:
    """Per layer, the validation top-1 lost with the naive voter in that layer alone (notebook 02's sweep,
    :func:`mvlib.study.voter_study.layer_sensitivity`, on the ``seeds`` baselines and its validation subset)."""
    frames = []
    for by_seed in baselines.values():
        for seed in seeds:
            s = layer_sensitivity(cfg, by_seed[seed], voter_spec(norm=cfg["mv_surrogate_norm"]),
                                  cfg["mv_sensitivity_val_per_class"], log=log)
            none = float(s[s["layer"] == "none"]["val_top1"].iloc[0])
            s = s[(s["index"] >= 0) & (s["layer"] != "all")]
            frames.append(s.assign(damage=none - s["val_top1"]))
    return pd.concat(frames, ignore_index=True)


def damage_lines(flips: pd.DataFrame, damage: pd.DataFrame, top: int = 3) -> list[str]:
    """Per network: the layers that lose the most alone, their sign-flip rates, and the rank correlation
    (Spearman, over layers) of the damage with each convention's flip rate at k = 1."""
    lines = []
    for net in MODELS:
        f = flips[(flips["model"] == net) & (flips["k"] == 1.0)].groupby("index").mean(numeric_only=True)
        d = damage[damage["model"] == net].groupby("index")["damage"].mean()
        if f.empty or d.empty:
            continue
        worst = d.sort_values(ascending=False).index[:top]
        rho = {c: f[c].reindex(d.index).corr(d, method="spearman") for c in ("flip_none", "flip_matched")}
        lines.append(f"**{net}**: the voter alone in layer " + ", ".join(
            f"{i} costs {d[i]:.1f} points (±1 flips {f['flip_none'][i]:.0%} of the BN's signs, matched "
            f"{f['flip_matched'][i]:.0%})" for i in worst)
            + f"; over all layers the damage ranks with the ±1 flip rate at Spearman ρ = {rho['flip_none']:+.2f} "
            f"(matched: {rho['flip_matched']:+.2f}).")
    return lines
