"""Binary ResNet-18s for CIFAR: ReActNet-18, Bi-RealNet-18, XNORNet-18.

All three share one skeleton, the CIFAR ResNet-18 of "BNN - BN = ?" (Chen et al.,
CVPRW 2021) and its ReActNet-18:

* stem: real 3x3 conv, stride 1, no max-pool, then the normalization;
* 16 *single-convolution* binary blocks in four stages of four
  (widths w, 2w, 4w, 8w; the first block of stages 2-4 has stride 2), each
  with its own shortcut;
* downsampling shortcut: AvgPool 2 -> real 1x1 conv -> normalization
  (Bi-Real Net's real-valued shortcut, Liu et al. ECCV 2018);
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
:mod:`mvlib.models.norms`, which holds all of it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import RPReLU
from .norms import (BNFREE_ALPHA, SignalPropagation, make_binary_conv, make_norm, make_real_conv,
                    scale_branch_input, scale_branch_output)

STYLES = {
    # style: (activation estimator, learnable RSign shift, RPReLU, norm position)
    "reactnet": ("approxsign", True, True, "post"),
    "birealnet": ("approxsign", False, False, "post"),
    "xnornet": ("ste", False, False, "pre"),
}


class Shortcut(nn.Module):
    """Identity, or AvgPool 2 -> real 1x1 conv -> norm when shape changes."""

    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.body = None
        if stride != 1 or cin != cout:
            self.body = nn.Sequential(
                nn.AvgPool2d(2) if stride != 1 else nn.Identity(),
                make_real_conv(norm, cin, cout, 1, 1, 0),
                make_norm(norm, cout),
            )

    def forward(self, x):
        return x if self.body is None else self.body(x)


class BinaryBlock(nn.Module):
    """One binary 3x3 convolution with its own shortcut (see the module docstring)."""

    def __init__(self, cin, cout, stride, style, norm, act_binarizer=None, voter=None,
                 beta=1.0, alpha_res=1.0):
        super().__init__()
        est, shift, rprelu, pos = STYLES[style]
        self.pos = pos
        # branch input / beta, branch output * alpha_res (1.0 unless norm="bnfree")
        self.beta, self.alpha_res = beta, alpha_res
        self.pre_norm = make_norm(norm, cin) if pos == "pre" else nn.Identity()
        self.conv = make_binary_conv(norm, cin, cout, 3, stride, 1, act_binarizer or est, shift, voter)
        self.norm = make_norm(norm, cout) if pos == "post" else nn.Identity()
        self.shortcut = Shortcut(cin, cout, stride, norm)
        self.act = RPReLU(cout) if rprelu else nn.Identity()

    def forward(self, x):
        xin = scale_branch_input(x, self.beta)
        out = scale_branch_output(self.norm(self.conv(self.pre_norm(xin))), self.alpha_res)
        # NF-ResNets: a projection shortcut takes the scaled input, identity the raw one
        res = self.shortcut(x if self.shortcut.body is None else xin)
        if isinstance(self.act, RPReLU):  # RPReLU(out + res) with the addition fused in
            return self.act(out, res)
        return self.act(out + res)


class BinaryResNet18(nn.Module):
    """CIFAR binary ResNet-18 with 16 single-conv blocks; ``style`` picks the block."""

    def __init__(self, style="reactnet", num_classes=10, width=64, norm="bn",
                 act_binarizer=None, voter=None, in_channels=3, alpha_res=BNFREE_ALPHA):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown block style {style!r}; choose one of {sorted(STYLES)}")
        self.style, self.width, self.norm_kind = style, width, norm
        self.stem = nn.Sequential(make_real_conv(norm, in_channels, width, 3, 1, 1), make_norm(norm, width))
        blocks, cin = [], width
        sp = SignalPropagation(norm, alpha_res)  # (1.0, 1.0) per block unless bnfree
        for stage, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for i in range(4):
                stride = 2 if (stage > 0 and i == 0) else 1
                beta, alpha = sp.step(transition=(stride != 1 or cin != cout))
                blocks.append(BinaryBlock(cin, cout, stride, style, norm, act_binarizer, voter, beta, alpha))
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
