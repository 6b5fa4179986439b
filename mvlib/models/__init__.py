"""Model registry: ``build_model(name, num_classes=10, width=None, **options)``.

``width`` is each model's base width: the stage-1 channels of the ResNet-18s
(64 = the paper) and the stem channels of ReActNet-A (32 = the paper; its last
stage has ``32 * width`` channels). ``None`` picks the paper's value
(:data:`PAPER_WIDTHS`).
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn

from ..layers import set_binarization
from ..teacher import study_teacher

from .diagnostics import set_shortcut_only
from .norms import NORMS, variant_name  # re-exported: the norms and their run-record names
from .reactneta import ReActNetA
from .resnet18 import BinaryResNet18, BinaryWeightConv2d
from .resnet_real import RealResNet

MODELS = {
    "reactnet18": partial(BinaryResNet18, "reactnet"),
    "birealnet18": partial(BinaryResNet18, "birealnet"),
    "xnornet18": partial(BinaryResNet18, "xnornet"),
    "reactneta": ReActNetA,
}
PAPER_WIDTHS = {"reactnet18": 64, "birealnet18": 64, "xnornet18": 64, "reactneta": 32}
# real-valued distillation teachers (not binary: no voter, no norm choice). The ResNets train by mvlib.train.fit;
# airbench (mvlib.teacher, flip TTA in eval mode) by its own recipe (mvlib.study.airbench_run), never by fit
TEACHERS = {"resnet18": partial(RealResNet, "resnet18"), "resnet34": partial(RealResNet, "resnet34"),
            "airbench": study_teacher}
TRAINED_BY_OWN_RECIPE = ("airbench",)


def build_teacher(name: str, num_classes: int = 10, width: int = 64) -> nn.Module:
    """A real-valued CIFAR teacher by name (:data:`TEACHERS`); ``width`` is its first stage's channels."""
    try:
        ctor = TEACHERS[name]
    except KeyError:
        raise ValueError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)}") from None
    model = ctor(num_classes=num_classes, width=width)
    model.arch_name = name
    return model


def build_model(name: str, num_classes: int = 10, width: int | None = None, **options) -> nn.Module:
    """Build a registered model by name.

    ``options`` go to the model constructor: ``norm`` (``bn``, ``none``,
    ``bnfree``; see :mod:`mvlib.models.norms`), ``alpha_res`` (bnfree residual
    factor, default 0.2), ``act_binarizer`` (estimator name, default per
    model), ``voter`` (name or module, default ``None``), ``binary_weights`` /
    ``binary_activations`` (default True; False gives step 1 of two-step
    training, or with both False the real-valued teacher of the same shape).
    ResNet-18s only: ``binary_downsample`` (default ``False``, the real 1x1
    shortcut convolution; ``True`` / ``"binary"`` a fully binary 1x1
    ``BinaryConv2d`` that a voter can replace; ``"weights"`` the official
    "BNN - BN = ?" shortcut, binary weights on real activations; see
    :class:`mvlib.models.resnet18.Shortcut`). The default voter layers stay
    the binary 3x3 convolutions (:func:`mvlib.voter_ops.select_layers`).
    ``binary_init`` (``"reactnet"`` U(0, 1e-3) or ``"fanin"`` U(±1/sqrt(N));
    default per norm and style, :func:`mvlib.models.norms.default_binary_init`)
    and ``shortcut_only`` (default ``False``; ``True`` skips every residual
    branch: the floor of notebook 06, :func:`mvlib.models.diagnostics.set_shortcut_only`).
    """
    try:
        ctor = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if width is None:
        width = PAPER_WIDTHS[name]
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    bin_w, bin_a = options.pop("binary_weights", True), options.pop("binary_activations", True)
    shortcut_only = options.pop("shortcut_only", False)
    model = ctor(num_classes=num_classes, width=width, **options)
    set_binarization(model, bin_w, bin_a)
    if shortcut_only:  # the floor a network whose binary branches carry nothing falls to (notebook 06)
        set_shortcut_only(model)
    for m in model.modules():  # the "weights" shortcut is no BinaryConv2d: its weights follow the same switch
        if isinstance(m, BinaryWeightConv2d):
            m.binary_weights = bool(bin_w)
    model.arch_name = name
    return model


def relative_width(name: str, resnet_width: int) -> int:
    """The width of model ``name`` at the same fraction of its paper width as ``resnet_width`` is of 64.

    ``relative_width("reactneta", 64) == 32`` (the paper's ReActNet-A),
    ``relative_width("reactneta", 16) == 8``; ResNet-18s keep ``resnet_width``.
    Lets one configuration key (``appendix_width``) size all four models alike.
    """
    return max(1, resnet_width * PAPER_WIDTHS[name] // PAPER_WIDTHS["reactnet18"])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
