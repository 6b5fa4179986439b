"""Normalization choices for the models: ``bn``, ``none`` and ``bnfree``.

A model asks this module for its normalization layers, its real and binary
convolutions and its residual-branch scalings, so ``norm`` is a constructor
argument and not a copy of each model. This is the one place where the three
variants differ.

``bn``
    BatchNorm after every convolution (the models as published).
``none`` (variant name ``nobn``)
    Every BatchNorm removed, nothing else changed but two things. The real
    convolutions that lose their BN get a bias (BN's shift is the only affine
    term they lose; the BNN_NoBN ``Qaw_*_none.py`` models have none, a
    zero-initialized bias changes nothing at init). The binary convolutions'
    latent weights start at ``nn.Conv2d``'s ``U(-1/sqrt(N), 1/sqrt(N))``
    (``binary_init="fanin"``, :func:`init_binary_weight_`) instead of
    ReActNet's ``U(0, 1e-3)``: without a BN after it, a binary convolution
    outputs ``alpha * s`` with ``alpha = mean|W|``, about 1e-2 of the
    shortcut at ``U(0, 1e-3)``, so the network would start as its shortcut
    path. BNN_NoBN trains its w/o-BN networks in two steps, and its binary
    step starts from step 1's real weights, which began at the ``fanin``
    scale; see :func:`init_binary_weight_`. XNOR-Net's pre-norm block (BN
    before the sign, none after the convolution) takes ``fanin`` with BN too
    (:func:`default_binary_init`). Scalings and activations are untouched.
``bnfree`` (variant name ``bnfree``)
    "BNN - BN = ?" (Chen et al., CVPR Workshops 2021), which carries the
    normalizer-free ResNets over to binary networks ("Characterizing signal
    propagation to close the performance gap in unnormalized ResNets",
    Brock, De & Smith, ICLR 2021, *NF-ResNets*):

    * **scaled weight standardization** on every convolution, per output
      channel i with fan-in ``N = C_in * k * k``::

          W_hat_i = gamma * (W_i - mean(W_i)) / ((std(W_i) + eps) * sqrt(N))

      (population std), so ``mean(W_hat_i) = 0`` and
      ``Var(W_hat_i) = gamma^2 / N`` up to ``eps``. A learnable per-channel
      gain ``g_i`` (init 1) multiplies the result. Real convolutions (stem,
      1x1 shortcuts) convolve with ``g * W_hat``.
    * **binary convolutions** binarize the standardized weight:
      ``w = sign(W_hat)``, ``alpha_i = mean|W_hat_i|`` (detached) and
      ``y = g_i * alpha_i * s`` with ``s`` the integer dot product. Taking
      alpha from ``W_hat`` rather than from the raw ``W`` is the choice of the
      official BNN_NoBN code (``HardBinaryScaledStdConv2d``); it makes
      ``alpha_i ~ sqrt(2/pi) / sqrt(N)`` independent of the raw weights'
      scale (they start at ~1e-3), so ``alpha * s`` has O(1) variance at
      init, which is what the signal-propagation scalings below assume.
      The gain is applied after the integer sum (and after a voter, where
      one is set), never folded into the weights, so the tie rule of
      docs/SEMANTICS.md holds. The clipped STE of the weight acts on ``W_hat``
      and back-propagates through the standardization into ``W``.
    * **signal-propagation scaling** of every residual block
      ``x_next = x + alpha_res * f(x / beta)``: ``beta = sqrt(Var(x))``, the
      *expected* variance, tracked analytically (:class:`SignalPropagation`):
      it starts at 1 after the stem, grows by ``alpha_res^2`` per block and is
      reset to 1 at each transition (downsampling / projection) block, whose
      shortcut takes the *scaled* input ``x / beta``.
    * no normalization layer anywhere; RSign, RPReLU and the classifier are
      kept as they are. Adaptive gradient clipping (:mod:`mvlib.agc`) is the
      trainer's part.

Defaults and their sources:

* ``alpha_res = 0.2`` (:data:`BNFREE_ALPHA`): NF-ResNets' default and the
  ``alpha=0.2`` of the BNN_NoBN ReActNet-18 / ReActNet-A models.
* ``gamma = 1.0`` (:data:`WS_GAMMA`): the BNN_NoBN code's value. NF-ResNets
  use the nonlinearity's gain (e.g. ~1.71 for ReLU); sign and RPReLU have
  none that the paper uses.
* ``eps = 1e-5`` (:data:`WS_EPS`): added to the std, as in the BNN_NoBN code
  (timm's ``ScaledStdConv2d`` of 2021). With the binary weights' init
  ``U(0, 1e-3)`` (std ~2.9e-4) this makes ``Var(W_hat) * N`` about 0.93
  rather than 1 at init; the tests assert the exact formula.
* real bnfree convolutions carry a bias, like NF-ResNets' ``WSConv2D``
  (the BNN_NoBN code has none; a zero-initialized bias changes nothing at init).
* no activation gain: NF-ResNets scale each nonlinearity's output to unit
  variance ("scaled activations", gamma); the BNN_NoBN code does not (every
  ``ScaledStdConv2d`` / ``HardBinaryScaledStdConv2d`` keeps ``gamma=1.0``,
  ``layers.py`` l. 38 and 62; PReLU unscaled). Consequence, as in their code:
  a transition's standardized 1x1 shortcut (zero-mean weights) cancels the
  mean of the non-centred post-RPReLU signal, so the shortcut's rms falls
  from ~1 to ~0.1 over the four stages of ReActNet-18 and the branch /
  shortcut ratio (:mod:`mvlib.models.diagnostics`) rises from 0.2 to ~1.5.
* the binary convolutions keep ReActNet's ``U(0, 1e-3)`` init: the
  standardization divides the scale out of the forward pass.

Deviation from the BNN_NoBN code, on purpose: its ReActNet-18 leaves out the
``+alpha_res^2`` of the first block of each stage and its ReActNet-A applies the
reset one sub-block late; here every block follows NF-ResNets' rule exactly.
The resulting betas differ by at most a factor ``sqrt(1 + 2 * 0.04)``.

File references above are to https://github.com/VITA-Group/BNN_NoBN at commit
d277784 and https://github.com/liuzechun/ReActNet.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import BinaryConv2d

NORMS = ("bn", "none", "bnfree")
# the ``variant`` a run record carries for each norm
VARIANT_NAMES = {"bn": "bn", "none": "nobn", "bnfree": "bnfree"}

BNFREE_ALPHA = 0.2  # residual-branch factor, NF-ResNets / BNN_NoBN
WS_GAMMA = 1.0  # weight-standardization gain constant, BNN_NoBN
WS_EPS = 1e-5  # added to the per-channel std, BNN_NoBN / timm

# what "a normalization layer" means for the bnfree / none checks
NORM_LAYER_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


def variant_name(norm: str) -> str:
    """Run-record name of a norm: ``bn``, ``nobn``, ``bnfree``."""
    check_norm(norm)
    return VARIANT_NAMES[norm]


def normalization_layers(model: nn.Module) -> list[str]:
    """Names of every BatchNorm / InstanceNorm / GroupNorm / LayerNorm module in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, NORM_LAYER_TYPES)]


# --------------------------------------------------------------------------
# Scaled weight standardization
# --------------------------------------------------------------------------
def standardize_weight(w: torch.Tensor, gamma: float = WS_GAMMA, eps: float = WS_EPS) -> torch.Tensor:
    """``gamma * (W - mean_i) / ((std_i + eps) * sqrt(fan_in))`` per output channel i.

    ``std`` is the population std over the ``fan_in = w[0].numel()`` weights
    of channel i. Differentiable (the gradient goes through mean and std).
    """
    dims = tuple(range(1, w.dim()))
    std, mean = torch.std_mean(w, dim=dims, keepdim=True, unbiased=False)
    return (w - mean) * (gamma / math.sqrt(w[0].numel())) / (std + eps)


class ScaledStdConv2d(nn.Conv2d):
    """Real convolution with scaled weight standardization: ``conv(x, g * W_hat) + b``.

    ``W_hat`` from :func:`standardize_weight`; ``b`` starts at zero; ``g`` a learnable gain per
    output channel (shape ``[C_out, 1, 1, 1]`` as in NF-ResNets, so adaptive
    gradient clipping treats each channel's gain as its own unit).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 gamma: float = WS_GAMMA, eps: float = WS_EPS):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)  # NF-ResNets' WSConv2D starts with a zero bias
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.gamma, self.eps = gamma, eps

    def standardized_weight(self) -> torch.Tensor:
        return standardize_weight(self.weight, self.gamma, self.eps)

    def forward(self, x):
        return F.conv2d(x, self.gain * self.standardized_weight(), self.bias,
                        self.stride, self.padding, self.dilation, self.groups)


class ScaledStdBinaryConv2d(BinaryConv2d):
    """Binary convolution on standardized weights: ``y = g * alpha * round(conv(sign(x+b), sign(W_hat)))``.

    Only the :meth:`latent_weight` hook changes (it returns ``W_hat``), so
    ``sign``, ``alpha = mean|W_hat|``, the integer sum and the voter are
    :class:`mvlib.layers.BinaryConv2d`'s own; the learnable gain ``g``
    (per output channel, init 1) multiplies the result afterwards.
    """

    def __init__(self, *args, gamma: float = WS_GAMMA, eps: float = WS_EPS, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))
        self.gamma, self.eps = gamma, eps

    def latent_weight(self):
        return standardize_weight(self.weight, self.gamma, self.eps)

    def forward(self, x):
        return super().forward(x) * self.gain.view(1, -1, 1, 1)


# --------------------------------------------------------------------------
# Factories used by the models
# --------------------------------------------------------------------------
def make_norm(norm: str, channels: int) -> nn.Module:
    """BatchNorm2d for ``bn``; identity for ``none`` and ``bnfree``."""
    check_norm(norm)
    return nn.BatchNorm2d(channels) if norm == "bn" else nn.Identity()


def make_real_conv(norm: str, cin: int, cout: int, k: int, stride: int, padding: int) -> nn.Module:
    """Real-valued convolution (stem, 1x1 shortcuts); bias only where no BN follows.

    ``bnfree`` gives a :class:`ScaledStdConv2d`.
    """
    check_norm(norm)
    if norm == "bnfree":
        return ScaledStdConv2d(cin, cout, k, stride, padding, bias=True)
    return nn.Conv2d(cin, cout, k, stride, padding, bias=(norm != "bn"))


def make_binary_conv(norm: str, cin: int, cout: int, k: int, stride: int, padding: int,
                     act_binarizer: str = "approxsign", learnable_shift: bool = True,
                     voter=None, binary_init: str = "reactnet") -> BinaryConv2d:
    """Binary convolution: plain for ``bn`` / ``none``, standardized for ``bnfree``.

    ``binary_init`` sets its latent weights (:func:`init_binary_weight_`).
    """
    check_norm(norm)
    cls = ScaledStdBinaryConv2d if norm == "bnfree" else BinaryConv2d
    conv = cls(cin, cout, k, stride, padding, act_binarizer, learnable_shift, voter)
    if binary_init not in BINARY_INITS:
        raise ValueError(f"unknown binary_init {binary_init!r}; choose one of {BINARY_INITS}")
    if binary_init != "reactnet":  # BinaryConv2d starts at ReActNet's init; redrawing it would shift the RNG stream
        init_binary_weight_(conv.weight, binary_init)
    return conv


# --------------------------------------------------------------------------
# Latent weight initialization of the binary convolutions
# --------------------------------------------------------------------------
BINARY_INITS = ("reactnet", "fanin")


def default_binary_init(norm: str, style: str = "reactnet") -> str:
    """``fanin`` where the binary convolution's output reaches the residual sum unnormalized, else ``reactnet``.

    That is ``norm="none"`` (every style) and XNOR-Net's pre-norm block with
    ``bn`` (its BN sits before the sign, none after the convolution). Where a
    BN follows the convolution, or weight standardization divides the scale
    out (``bnfree``), the forward pass does not depend on the latent weights'
    scale and ReActNet's init is kept (so the ``bn`` models stay the ones
    notebook 01 trains).
    """
    check_norm(norm)
    if norm == "none" or (norm == "bn" and style == "xnornet"):
        return "fanin"
    return "reactnet"


@torch.no_grad()
def init_binary_weight_(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Initialize a binary convolution's latent weight ``[C_out, C_in, k, k]`` in place.

    ``reactnet``
        ``U(0, 1e-3)``: ``torch.rand(shape) * 0.001``, the ``HardBinaryConv``
        / ``HardBinaryScaledStdConv2d`` of the ReActNet and BNN_NoBN code
        (BNN_NoBN ``layers.py`` l. 67 and 129; ReActNet
        ``resnet/1_step1/birealnet.py`` l. 56). All weights are positive, so
        ``sign(W) = +1`` everywhere and ``alpha = mean|W| ~ 5e-4``: without a
        normalization after it, ``alpha * s`` is ``~5e-4 * sqrt(N)``, a few
        hundredths of the shortcut.
    ``fanin``
        ``U(-1/sqrt(N), 1/sqrt(N))`` with ``N = C_in * k * k``, the default
        init of ``nn.Conv2d`` (``kaiming_uniform_(a=sqrt(5))``). The BNN_NoBN
        recipe trains in two steps (``script/imagenet_reactnet_A_*.sh``): step
        1 has real weights in ``nn.Conv2d`` / ``ScaledStdConv2d`` layers
        (``models/Qa_*.py``), step 2 binarizes them and starts from step 1's
        weights (``--pretrained``, ``train.py`` l. 116-126), so its binary
        convolutions start at this scale, where ``alpha = 1 / (2 sqrt(N))``
        and ``alpha * s`` has rms ~0.5 on +-1 inputs: the same order as the
        shortcut. One-step training from ``fanin`` is the nearest single-step
        equivalent of that start.
    """
    if kind == "reactnet":
        return weight.copy_(torch.rand_like(weight) * 1e-3)
    if kind == "fanin":
        bound = 1.0 / math.sqrt(weight[0].numel())
        return weight.uniform_(-bound, bound)
    raise ValueError(f"unknown binary_init {kind!r}; choose one of {BINARY_INITS}")


class SignalPropagation:
    """Expected-variance bookkeeping of NF-ResNets for ``x_next = x + alpha * f(x / beta)``.

    Call :meth:`step` once per residual block, in forward order; it returns
    ``(beta, alpha)`` for that block, where the block scales its branch input
    by ``1 / beta`` and its branch output by ``alpha``:

    * ``beta = sqrt(v)`` with ``v`` the expected variance of the block input
      (``v = 1`` after the stem);
    * a ``transition`` block (stride 2 or a projection shortcut) feeds its
      shortcut the scaled input too, so its output variance is ``1 + alpha^2``
      (``v`` is reset); any other block adds ``alpha^2``.

    For norms other than ``bnfree`` it returns ``(1.0, 1.0)`` and tracks
    nothing, so the models need no branch on the norm.
    """

    def __init__(self, norm: str, alpha: float = BNFREE_ALPHA):
        check_norm(norm)
        if alpha <= 0:
            raise ValueError(f"alpha_res must be > 0, got {alpha!r}")
        self.active = norm == "bnfree"
        self.alpha = float(alpha)
        self.var = 1.0

    def step(self, transition: bool) -> tuple[float, float]:
        if not self.active:
            return 1.0, 1.0
        beta = math.sqrt(self.var)
        if transition:
            self.var = 1.0
        self.var += self.alpha ** 2
        return beta, self.alpha


def scale_branch_input(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``x / beta``, skipped (same tensor) when ``beta == 1``."""
    return x if beta == 1.0 else x * (1.0 / beta)


def scale_branch_output(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * y``, skipped (same tensor) when ``alpha == 1``."""
    return y if alpha == 1.0 else y * alpha
