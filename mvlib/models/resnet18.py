"""Binary ResNet-18s for CIFAR: ReActNet-18, Bi-RealNet-18, XNORNet-18.

All three share one skeleton, the CIFAR ResNet-18 of "BNN - BN = ?" (Chen et al.,
CVPRW 2021) and its ReActNet-18:

* stem: real 3x3 conv, stride 1, no max-pool, then the normalization;
* 16 *single-convolution* binary blocks in four stages of four
  (widths w, 2w, 4w, 8w; the first block of stages 2-4 has stride 2), each
  with its own shortcut;
* downsampling shortcut: AvgPool 2 -> real 1x1 conv -> normalization
  (Bi-Real Net's real-valued shortcut, Liu et al. ECCV 2018); a binary 1x1
  convolution there with ``binary_downsample`` (see :class:`Shortcut`);
* real classifier: global average pool -> linear.

The blocks differ only in what surrounds the binary convolution:

``reactnet``  (ReActNet, Liu et al. ECCV 2020)
    ``y = RPReLU(norm(BinConv(RSign(x))) + shortcut(x))``, ApproxSign.
``birealnet`` (Bi-Real Net, Liu et al. ECCV 2018)
    ``y = norm(BinConv(sign(x))) + shortcut(x)``, ApproxSign, no learnable shift.
``xnornet``   (XNOR-Net, Rastegari et al. ECCV 2016, as a ResNet-18 in "BNN - BN = ?")
    ``y = BinConv(sign(norm(x))) + shortcut(x)``: XNOR-Net's block order
    (BatchNorm -> BinActiv -> BinConv), clipped STE, weight scale alpha = mean|W|
    per output channel. XNOR-Net's activation scale K is left out (it is a real
    per-pixel rescaling that would break the integer dot product the voter
    works on; XNOR-Net++ and "BNN - BN = ?" drop it as well). No public code
    defines this network; this is the project's definition.

``norm`` selects the normalization: ``bn`` (BatchNorm), ``none`` (every BN
removed, nothing else changed) or ``bnfree`` ("BNN - BN = ?": scaled weight
standardization, branch scalings ``x + alpha_res * f(x / beta)``, no BN; see
:mod:`mvlib.models.norms`, which holds all of it). ``binary_init`` sets the
binary convolutions' latent weights: ReActNet's ``U(0, 1e-3)`` where a BN or
weight standardization follows the convolution, ``nn.Conv2d``'s
``U(-1/sqrt(N), 1/sqrt(N))`` where its output reaches the residual sum
unnormalized (``none``, and XNOR-Net's pre-norm block), so that the binary
branches start at the shortcut's order of magnitude
(:func:`mvlib.models.norms.default_binary_init`; measured by
:func:`mvlib.models.diagnostics.branch_ratios`). A block's ``branch_enabled``
(False: ``y = act(shortcut(x))``) gives the shortcut-only network
(:func:`mvlib.models.diagnostics.set_shortcut_only`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..binarizers import WeightSTESign
from ..layers import RPReLU
from .norms import (BNFREE_ALPHA, SignalPropagation, default_binary_init, init_binary_weight_, make_binary_conv,
                    make_norm, make_real_conv, scale_branch_input, scale_branch_output, standardize_weight)

STYLES = {
    # style: (activation estimator, learnable RSign shift, RPReLU, norm position)
    "reactnet": ("approxsign", True, True, "post"),
    "birealnet": ("approxsign", False, False, "post"),
    "xnornet": ("ste", False, False, "pre"),
}


DOWNSAMPLE_KINDS = ("real", "binary", "weights")


def downsample_kind(binary_downsample) -> str:
    """``False``/``None`` -> ``"real"``, ``True`` -> ``"binary"``; ``"real"``, ``"binary"``, ``"weights"`` stay."""
    if binary_downsample is None or binary_downsample is False:
        return "real"
    if binary_downsample is True:
        return "binary"
    if binary_downsample not in DOWNSAMPLE_KINDS:
        raise ValueError(f"binary_downsample must be a bool or one of {DOWNSAMPLE_KINDS}, got {binary_downsample!r}")
    return binary_downsample


class BinaryWeightConv2d(nn.Module):
    """Real activations, binary weights with the scale folded in: ``y = conv(x, alpha * sign(W))``.

    The official code's ``HardBinaryConv`` as its ResNet-18 shortcut uses it
    (``binaryconv1x1`` applied to the *real* block input, see :class:`Shortcut`):
    ``alpha = mean|W|`` per output channel (detached), ``sign(W)`` with the
    clipped STE (their ``clamp(W, -1, 1)`` trick), ``alpha`` multiplied into
    the weights before the convolution (VITA-Group/BNN_NoBN ``layers.py``
    l. 131-140). With ``norm="bnfree"`` the latent weight is the standardized
    one and a learnable gain multiplies the folded weights, as in BNN_NoBN's
    ``HardBinaryScaledStdConv2d`` (``layers.py`` l. 74-91).

    It is *not* a :class:`mvlib.layers.BinaryConv2d`: its activations are real,
    so there is no integer dot product, no voter and no bit kernel; the voter
    helpers and the bit-kernel conversion do not see it. ``binary_weights``
    (set by :func:`mvlib.models.build_model` with the other binary layers)
    False gives the real convolution ``conv(x, W)`` of the official step 1
    (``models/Qa_reactnet_18_bn.py`` l. 93-97 has a real ``conv1x1`` there).
    """

    def __init__(self, cin, cout, kernel_size=1, stride=1, padding=0, norm="bn"):
        super().__init__()
        self.stride, self.padding, self.standardize = stride, padding, norm == "bnfree"
        self.weight = nn.Parameter(torch.rand(cout, cin, kernel_size, kernel_size) * 1e-3)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1)) if self.standardize else None
        self.binary_weights = True

    def forward(self, x):
        w = standardize_weight(self.weight) if self.standardize else self.weight
        if self.binary_weights:
            alpha = w.detach().abs().mean((1, 2, 3), keepdim=True)
            w = WeightSTESign.apply(w) * alpha
        if self.gain is not None:
            w = self.gain * w
        return nn.functional.conv2d(x, w, None, self.stride, self.padding)


class Shortcut(nn.Module):
    """Identity, or AvgPool 2 -> 1x1 conv -> norm when the shape changes.

    ``binary_downsample`` picks the 1x1 convolution (default ``False``, the
    module docstring's real shortcut):

    ``False`` / ``"real"``
        a real convolution (Bi-Real Net; the official ReActNet ResNet-18,
        liuzechun/ReActNet ``resnet/2_step2/birealnet.py`` l. 127-131, ``conv1x1``).
    ``True`` / ``"binary"``
        a :class:`mvlib.layers.BinaryConv2d` 1x1 with the block's own
        conventions (its estimator, its RSign shift or none, sign of the
        *pooled* activations, ``y = alpha * round(s)``, docs/SEMANTICS.md): fully
        binary, so a voter can replace its output like the 3x3 ones'
        (``set_voter(model, spec, "all")``; the default layer set stays the
        3x3 convolutions). This goes further than any official code: there
        the shortcut's activations stay real (next item).
    ``"weights"``
        the official "BNN - BN = ?" convention: :class:`BinaryWeightConv2d`
        on the real pooled input (VITA-Group/BNN_NoBN
        ``models/Qaw_reactnet_18_bn.py`` l. 30-32 and 93-98, ``binaryconv1x1``
        = ``HardBinaryConv``; ``layers.py`` l. 131-140 binarizes only the
        weights and folds ``alpha`` into them).
    """

    def __init__(self, cin, cout, stride, norm, binary_downsample=False, act_binarizer="approxsign",
                 learnable_shift=True, binary_init="reactnet"):
        super().__init__()
        self.kind = downsample_kind(binary_downsample)
        self.body = None
        if stride != 1 or cin != cout:
            if self.kind == "binary":
                conv = make_binary_conv(norm, cin, cout, 1, 1, 0, act_binarizer, learnable_shift, None, binary_init)
            elif self.kind == "weights":
                conv = BinaryWeightConv2d(cin, cout, 1, 1, 0, norm)
                if binary_init != "reactnet":  # w/o BN: alpha = mean|W| would shrink the shortcut ~1e-3 at U(0, 1e-3)
                    init_binary_weight_(conv.weight, binary_init)
            else:
                conv = make_real_conv(norm, cin, cout, 1, 1, 0)
            self.body = nn.Sequential(
                nn.AvgPool2d(2) if stride != 1 else nn.Identity(),
                conv,
                make_norm(norm, cout),
            )

    def forward(self, x):
        return x if self.body is None else self.body(x)


class BinaryBlock(nn.Module):
    """One binary 3x3 convolution with its own shortcut (see the module docstring)."""

    def __init__(self, cin, cout, stride, style, norm, act_binarizer=None, voter=None,
                 beta=1.0, alpha_res=1.0, binary_init="reactnet", binary_downsample=False):
        super().__init__()
        est, shift, rprelu, pos = STYLES[style]
        self.pos = pos
        # branch input / beta, branch output * alpha_res (1.0 unless norm="bnfree")
        self.beta, self.alpha_res = beta, alpha_res
        self.pre_norm = make_norm(norm, cin) if pos == "pre" else nn.Identity()
        self.conv = make_binary_conv(norm, cin, cout, 3, stride, 1, act_binarizer or est, shift, voter,
                                     binary_init)
        self.norm = make_norm(norm, cout) if pos == "post" else nn.Identity()
        self.shortcut = Shortcut(cin, cout, stride, norm, binary_downsample, act_binarizer or est, shift, binary_init)
        self.act = RPReLU(cout) if rprelu else nn.Identity()
        # False = the shortcut-only network (diagnostics.set_shortcut_only): the branch is skipped
        self.branch_enabled = True

    def forward(self, x):
        xin = scale_branch_input(x, self.beta)
        # NF-ResNets: a projection shortcut takes the scaled input, identity the raw one
        res = self.shortcut(x if self.shortcut.body is None else xin)
        if not self.branch_enabled:
            return self.act(res)
        out = scale_branch_output(self.norm(self.conv(self.pre_norm(xin))), self.alpha_res)
        if isinstance(self.act, RPReLU):  # RPReLU(out + res) with the addition fused in
            return self.act(out, res)
        return self.act(out + res)


class BinaryResNet18(nn.Module):
    """CIFAR binary ResNet-18 with 16 single-conv blocks; ``style`` picks the block."""

    def __init__(self, style="reactnet", num_classes=10, width=64, norm="bn",
                 act_binarizer=None, voter=None, in_channels=3, alpha_res=BNFREE_ALPHA,
                 binary_init=None, binary_downsample=False):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown block style {style!r}; choose one of {sorted(STYLES)}")
        self.style, self.width, self.norm_kind = style, width, norm
        self.downsample_kind = downsample_kind(binary_downsample)  # "real" (default), "binary", "weights"
        # latent-weight init of the binary convolutions; None = the norm's default (norms.default_binary_init)
        self.binary_init = binary_init or default_binary_init(norm, style)
        self.stem = nn.Sequential(make_real_conv(norm, in_channels, width, 3, 1, 1), make_norm(norm, width))
        blocks, cin = [], width
        sp = SignalPropagation(norm, alpha_res)  # (1.0, 1.0) per block unless bnfree
        for stage, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for i in range(4):
                stride = 2 if (stage > 0 and i == 0) else 1
                beta, alpha = sp.step(transition=(stride != 1 or cin != cout))
                blocks.append(BinaryBlock(cin, cout, stride, style, norm, act_binarizer, voter, beta, alpha,
                                          self.binary_init, self.downsample_kind))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        if x.device.type == "cpu" and x.dim() == 4:
            # oneDNN convolves channels-last tensors without reordering them on every call,
            # and mvlib.fused's kernels need that layout; values do not depend on it.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.blocks(self.stem(x))
        return self.classifier(self.pool(x).flatten(1))
