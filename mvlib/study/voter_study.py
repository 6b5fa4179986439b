"""The majority-voter study of notebooks 02-04: substitution, recalibration, retraining, hierarchy.

Each function here is one kind of row of ``results/summary.csv`` (or one
table a notebook plots), so a notebook only chooses parameters and calls:

* :func:`substitute` — a trained baseline with a voter put in (all binary 3x3
  convolutions or a subset), optionally with matched output scale and/or BN
  recalibration, evaluated and recorded (evaluation-only run record);
* :func:`layer_sensitivity` — the voter in one layer at a time;
* :func:`retrain` — training through the voter from the baseline's weights;
* :func:`disagreement_table` — hierarchical vs exact voter on real activations.

Every row belongs to one baseline, hence to one seed; the notebooks loop
over the baselines of ``seeds`` (main rows) or ``sweep_seeds`` (sweeps and
ablations), and :mod:`mvlib.study.deck_pattern` turns the rows into means,
paired differences and verdicts. Sweeps are read on the validation split;
the test split is evaluated for the main rows only.

Variant names (``variant`` in the run records): ``naive``,
``naive-alpha``, ``naive-matched``, ``naive+recal``, ``retrain-approx``,
``retrain-ste``; hierarchical voters prefix their tag ``hmv-g{G}-tie{rule}-`` (nested
fan-ins as ``hmv-g4x2-...``; :meth:`mvlib.voter_spec.VoterSpec.variant`).

A voter is a :class:`mvlib.voter_spec.VoterSpec` throughout; a run record keeps its parameters
(:meth:`~mvlib.voter_spec.VoterSpec.to_dict`). The voters notebook 04 sweeps and retrains come from the
configuration by :func:`sweep_voters` and :func:`retrained_voters`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from ..voter_ops import calibrate_matched_scale, recalibrate_bn, set_voter, voter_disagreement
from ..voter_spec import DEFAULT_SURROGATE_NORM, VoterSpec
from . import records
from .config import recipe_for
from .experiment import evaluate_record, train_run
from .run_setup import apply_process_settings, load_run_model, loaders, resolve_device, run_config, with_seed
from .progress import say

ESTIMATOR_TAGS = {"approxsign": "approx", "ste": "ste"}


def voter_spec(fanins: int | Sequence[int] | None = None, tie: str = "pos", estimator: str = "approxsign",
               norm: str = DEFAULT_SURROGATE_NORM, output_scale: str = "none") -> VoterSpec:
    """The voter of the study's rows: ``fanins=None`` is the exact voter (``mv``), otherwise the hierarchical one."""
    options = {"estimator": estimator, "norm": norm, "output_scale": output_scale}
    return VoterSpec.exact(**options) if fanins is None else VoterSpec.hierarchical(fanins, tie, **options)


def sweep_voters(cfg: dict[str, Any]) -> list[VoterSpec]:
    """Notebook 04's G x tie grid: every ``hmv_groups`` G, then every ``hmv_nested`` tree, whose leaf blocks divide
    the width (every layer's input channels are a multiple of it), each with every ``hmv_ties`` rule.

    The configuration keeps one list per notebook (the sweep, the retrained subset, the front, the synthesized
    circuits differ by design and by profile); this turns its keys into voters, in the order the runs are made.
    """
    shapes = [(g,) for g in cfg["hmv_groups"]] + [tuple(f) for f in cfg["hmv_nested"]]
    return [voter_spec(f, tie, norm=cfg["mv_surrogate_norm"]) for f in shapes if cfg["width"] % math.prod(f) == 0
            for tie in cfg["hmv_ties"]]


def retrained_voters(cfg: dict[str, Any]) -> list[VoterSpec]:
    """Notebook 04's retrained voters: ``hmv_retrain_groups`` x ``hmv_retrain_ties``, G dividing the width."""
    return [voter_spec(g, tie, norm=cfg["mv_surrogate_norm"]) for g in cfg["hmv_retrain_groups"]
            for tie in cfg["hmv_retrain_ties"] if cfg["width"] % g == 0]


def naive_suffix(output_scale: str, recal: bool) -> str:
    """``naive``, ``naive-alpha``, ``naive-matched``; ``+recal`` appended after BN recalibration."""
    base = "naive" if output_scale == "none" else f"naive-{output_scale}"
    return base + ("+recal" if recal else "")


def study_cfg(cfg: dict[str, Any], baseline: records.Run | None = None) -> dict[str, Any]:
    """``cfg`` for the voter notebooks: ``threads`` from ``mv_threads`` (no effect on results) and,
    given a baseline, its network's recipe (:func:`mvlib.study.config.recipe_for`: teacher, batch,
    optimizer, weight decay of its notebook-01 runs) and its seed (a substituted or retrained row
    belongs to its baseline's seed)."""
    c = {**cfg, "threads": cfg["mv_threads"]} if cfg.get("mv_threads", 0) > 0 else cfg
    if baseline is None:
        return c
    return with_seed(recipe_for(c, baseline.params["model"]), baseline.params["seed"])


def _sweep_cfg(cfg: dict[str, Any], baseline: records.Run, val_per_class: int | None) -> dict[str, Any]:
    c = study_cfg(cfg, baseline)
    return c if val_per_class is None else run_config(c, val_eval_per_class=val_per_class)


def prepared_model(cfg: dict[str, Any], baseline: records.Run, spec: VoterSpec | None, layers=None,
                   recal: bool = False):
    """The baseline's model with ``spec`` on ``layers``, scale calibrated and BN recalibrated as asked.

    Calibration and recalibration read training batches of ``cfg`` (its seed's data order).
    """
    dev = resolve_device(cfg)
    model = load_run_model(baseline, dev)
    set_voter(model, spec, layers)
    train_loader = loaders(cfg)[0]
    if spec is not None and spec.output_scale == "matched":
        calibrate_matched_scale(model, train_loader, cfg["mv_calib_batches"])
    if recal:
        recalibrate_bn(model, train_loader, cfg["mv_recal_batches"])
    return model.eval()


def substitute(cfg: dict[str, Any], step: str, baseline: records.Run, spec: VoterSpec, recal: bool = False,
               layers=None, sweep_val_per_class: int | None = None, variant: str | None = None,
               log=say) -> records.Run:
    """Evaluate the baseline with the voter substituted (no training) and write its run record.

    The record's parameters name the source run, the voter spec, the layers
    and the calibration batches, so each configuration has its own identity;
    a finished record of the same identity is reused without preparing the
    model. Main rows are evaluated on validation and test; a sweep
    (``sweep_val_per_class`` given) on that many validation images per
    class only.
    """
    c = _sweep_cfg(cfg, baseline, sweep_val_per_class)
    apply_process_settings(c)
    model_name = baseline.params["model"]
    variant = variant or spec.variant(naive_suffix(spec.output_scale, recal))
    params = {"source_run": baseline.run_id, "model": model_name, "voter": spec.to_dict(),
              "voter_layers": layers if layers is None or isinstance(layers, str) else list(layers),
              "calib_batches": cfg["mv_calib_batches"] if spec.output_scale == "matched" else 0,
              "recal_batches": cfg["mv_recal_batches"] if recal else 0}
    return evaluate_record(c, step, lambda: prepared_model(c, baseline, spec, layers, recal), model_name, variant,
                           params, test=sweep_val_per_class is None,
                           log=lambda line: log(f"{model_name} seed {c['seed']} {variant}: {line}"))


def layer_sensitivity(cfg: dict[str, Any], baseline: records.Run, spec: VoterSpec, val_per_class: int,
                      log=say) -> pd.DataFrame:
    """Top-1/top-5 on validation with the voter in one binary convolution at a time (plus none and all)."""
    from ..layers import binary_convs
    from ..train import evaluate
    c = _sweep_cfg(cfg, baseline, val_per_class)
    apply_process_settings(c)
    dev = resolve_device(c)
    train_loader, val_loader, _, _ = loaders(c)
    model = load_run_model(baseline, dev)
    names = [n for n, _ in binary_convs(model)]
    rows = []
    for i, name in [(-1, "none")] + list(enumerate(names)) + [(len(names), "all")]:
        set_voter(model, None)
        if name != "none":
            set_voter(model, spec, None if name == "all" else [i])
            if spec.output_scale == "matched":
                calibrate_matched_scale(model, train_loader, cfg["mv_calib_batches"])
        ev = evaluate(model, val_loader, dev)
        rows.append({"model": baseline.params["model"], "seed": c["seed"], "index": i, "layer": name,
                     "output_scale": spec.output_scale, "val_top1": ev["top1"], "val_top5": ev["top5"],
                     "val_images": ev["n"]})
    set_voter(model, None)
    log(f"sensitivity of {baseline.params['model']} seed {c['seed']} ({spec.output_scale}): "
        f"{len(names)} layers")
    return pd.DataFrame(rows)


def retrain(cfg: dict[str, Any], step: str, baseline: records.Run, spec: VoterSpec,
            variant: str | None = None, test: bool = True, log=say):
    """Train through the voter from the baseline's weights (``cfg``'s ``mv_retrain_*`` keys); (model, run).

    The run has the baseline's seed. BN running statistics are first
    re-estimated under the voter (:func:`mvlib.voter_ops.recalibrate_bn`,
    ``mv_recal_batches``): training normalizes by batch statistics anyway, but
    a short retraining would otherwise evaluate with running statistics still
    partly those of the popcount network, whose scale (alpha * s) differs from
    the voter's ±1.
    """
    c = run_config(study_cfg(cfg, baseline), epochs=cfg["mv_retrain_epochs"], lr=cfg["mv_retrain_lr"],
                   train_per_class=cfg["mv_retrain_train_per_class"])
    model_name = baseline.params["model"]
    variant = variant or spec.variant(f"retrain-{ESTIMATOR_TAGS[spec.estimator]}")
    recal_loader = loaders(c)[0]
    return train_run(c, step, model_name, variant, init_from=baseline, voter=spec.to_dict(),
                     prepare=lambda model: recalibrate_bn(model, recal_loader, cfg["mv_recal_batches"]),
                     extra={"prepare": "recalibrate_bn", "recal_batches": cfg["mv_recal_batches"]}, test=test,
                     log=lambda line: log(f"{model_name} seed {c['seed']} {variant}: {line}"))


def disagreement_table(cfg: dict[str, Any], baseline: records.Run, groups: Sequence, ties: Sequence[str],
                       batches: int, val_per_class: int | None = None) -> pd.DataFrame:
    """Per layer, fan-ins and tie rule: disagreement with the exact voter, outer and exact tie rates.

    Measured on the baseline (popcount) network's own activations, on
    validation images (the first ``batches`` batches of the ``val_per_class`` subset).
    """
    c = _sweep_cfg(cfg, baseline, val_per_class)
    apply_process_settings(c)
    _, val_loader, _, _ = loaders(c)
    model = load_run_model(baseline, resolve_device(c))
    rows = []
    for g in groups:
        for r in voter_disagreement(model, val_loader, g, list(ties), batches):
            rows.append({"model": baseline.params["model"], **r})
    return pd.DataFrame(rows)


def surrogate_norm_probe(model, loader, norms: Sequence[str], batches: int = 2, estimator: str = "approxsign",
                         device: str = "cpu") -> pd.DataFrame:
    """What each surrogate normalization does to the backward pass of a trained model under the exact voter.

    Per binary convolution and normalization ``c`` (u = s / c): ``in_window``,
    the fraction of pre-activations with a non-zero surrogate derivative
    (|u| < 1), and ``grad_ratio``, the norm of the loss gradient of the
    layer's latent weight under the voter divided by the same norm in the
    popcount network on the same images (1 = the voter leaves the optimizer's
    step size as the baseline was trained with; << 1 = vanishing gradients).
    """
    import torch
    import torch.nn.functional as F

    from ..layers import binary_convs

    data = [(x.to(device), y.to(device)) for i, (x, y) in zip(range(batches), loader)]

    def grads():
        model.zero_grad(set_to_none=True)
        model.train()  # BN on batch statistics, as in retraining
        for x, y in data:
            F.cross_entropy(model(x), y).backward()
        out = {n: m.weight.grad.norm().item() for n, m in binary_convs(model)}
        model.zero_grad(set_to_none=True)
        return out

    state = {k: v.clone() for k, v in model.state_dict().items()}
    set_voter(model, None)
    ref = grads()
    rows = []
    for norm in norms:
        set_voter(model, voter_spec(estimator=estimator, norm=norm))
        seen: dict[str, list] = {}

        def hook(name, cnorm=norm):
            def fn(conv, inp, _out):
                with torch.no_grad():
                    s = conv.integer_sums(inp[0])
                    fanin = conv.in_channels * conv.kernel_size ** 2
                    c = {"sqrt_fanin": fanin ** 0.5, "fanin": float(fanin)}.get(cnorm)
                    if c is None:
                        c = s.transpose(0, 1).reshape(s.shape[1], -1).std(1).clamp_min(1.0).view(1, -1, 1, 1)
                    seen.setdefault(name, []).append(((s / c).abs() < 1).float().mean().item())
            return fn
        handles = [m.register_forward_hook(hook(n)) for n, m in binary_convs(model)]
        g = grads()
        for h in handles:
            h.remove()
        for i, (n, _) in enumerate(binary_convs(model)):
            rows.append({"norm": norm, "index": i, "layer": n, "in_window": sum(seen[n]) / len(seen[n]),
                         "grad_ratio": g[n] / ref[n] if ref[n] > 0 else float("nan")})
    set_voter(model, None)
    model.load_state_dict(state)
    model.eval()
    return pd.DataFrame(rows)
