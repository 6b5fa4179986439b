"""ReActNet-A for CIFAR: the MobileNetV1-based binary network of ReActNet.

"ReActNet: Towards Precise Binary Neural Network with Generalized Activation
Functions" (Liu, Shen, Savvides & Cheng, ECCV 2020), Fig. 2 and its public
code; the ``bn`` / ``none`` / ``bnfree`` variants as in "BNN - BN = ?"
(Chen et al., CVPRW 2021).

ReActNet-A keeps MobileNetV1's channel plan but replaces each depthwise-separable
pair (depthwise 3x3 + pointwise 1x1) by two *full* binary convolutions, each a
residual sub-block with its own shortcut::

    out1 = RPReLU1( norm(BinConv3x3(RSign(x)))  + shortcut1(x) )   C -> C
    out2 = RPReLU2( norm(BinConv1x1(RSign(out1))) + shortcut2(out1) ) C -> C or 2C

* ``shortcut1`` is the identity, or AvgPool 2 when the block has stride 2
  (parameter-free: no real 1x1 convolution anywhere in the body);
* the *reduction block* (``C -> 2C``) has two binary 1x1 convolutions
  ``C -> C`` on the same binarized input, each added to ``out1``, and
  concatenates the two: ``[conv_a(a) + out1, conv_b(a) + out1]``. Here the
  pair is one ``BinaryConv2d(C, 2C, 1)``: every quantity of a binary
  convolution (sign, alpha, gain, BN statistics) is per output channel, so
  its first C outputs are ``conv_a`` and its last C are ``conv_b`` exactly,
  and one RSign shift is shared as in the original code (one
  ``move21`` before both convolutions); ``shortcut2`` is ``[out1, out1]``;
* stem: real 3x3 conv -> norm, no activation (ReActNet's ``firstconv3x3``);
  head: global average pool -> linear (``classifier``).

Channels (``width`` = the stem's channels; ``width=32`` is the paper's
MobileNetV1 plan)::

    stem 32 | 64 | 128 128 | 256 256 | 512 x6 | 1024 1024
    = width * (1 | 2 | 4 4 | 8 8 | 16 x6 | 32 32)

13 blocks; blocks 2, 4, 6 and 12 (the first of the 128, 256, 512 and 1024
stages) have stride 2, as in the paper. CIFAR adjustment: the stem has stride
1 (ImageNet: 2) so that a 32x32 input reaches the blocks at 32x32 and leaves
them at 2x2 (32 -> 16 -> 8 -> 4 -> 2); ``stem_stride=2`` restores the paper's
overall downsampling ratio (ending at 1x1). Activations use ApproxSign, RSign
and RPReLU as in ReActNet.

Parameters at ``width=32`` (``count_parameters``; 28,253,184 of them binary
weights): 28,328,842 (``bn``), 28,306,986 (``none``), 28,317,930 (``bnfree``)
with 10 classes; +92,250 with 100 classes. The ImageNet ReActNet-A (1000
classes) has ~29.3M, the same body. ``width=8``: 1,784,746 (``bn``, 10 classes).

With ``norm="bnfree"`` each sub-block is ``x + alpha_res * f(x / beta)`` with
``beta`` from :class:`mvlib.models.norms.SignalPropagation` (one step per
sub-block; the stride-2 3x3 sub-block is the transition, its AvgPool
shortcut takes ``x / beta``), weights standardized, no BN. With
``norm="none"`` the binary latent weights start at ``nn.Conv2d``'s
``U(-1/sqrt(N), 1/sqrt(N))`` (``binary_init``, see
:func:`mvlib.models.norms.init_binary_weight_`). BNN_NoBN's models:
``models/Qaw_reactnet_A_{bn,none,bf}.py``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import RPReLU
from .norms import (BNFREE_ALPHA, SignalPropagation, check_norm, default_binary_init, make_binary_conv,
                    make_norm, make_real_conv, scale_branch_input, scale_branch_output)

# MobileNetV1 channel plan of ReActNet-A in units of ``width`` (stem first).
CHANNEL_MULTS = (1, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32)
PAPER_WIDTH = 32  # the stem's channels in ReActNet-A (and MobileNetV1)


class ReActABlock(nn.Module):
    """One ReActNet-A block: binary 3x3 sub-block (C -> C) then binary 1x1 sub-block (C -> C or 2C).

    Args:
        cin, cout: channels in and out; ``cout`` is ``cin`` or ``2 * cin``.
        stride: 1 or 2 (on the 3x3 convolution; the shortcut is AvgPool 2).
        norm: ``bn``, ``none`` or ``bnfree``.
        act_binarizer: activation estimator of both RSigns.
        voter: voter of the 3x3 convolution (the MV replaces 3x3 outputs,
            docs/SEMANTICS.md); the 1x1 convolution keeps the popcount.
        betas, alpha_res: bnfree scalings of the two sub-blocks (1.0 otherwise).
        binary_init: latent-weight init of both binary convolutions
            (:func:`mvlib.models.norms.init_binary_weight_`).
    """

    def __init__(self, cin, cout, stride, norm, act_binarizer="approxsign", voter=None,
                 betas=(1.0, 1.0), alpha_res=1.0, binary_init="reactnet"):
        super().__init__()
        if cout not in (cin, 2 * cin):
            raise ValueError(f"ReActNet-A block maps C -> C or 2C, got {cin} -> {cout}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride, self.doubling = stride, cout == 2 * cin
        self.beta1, self.beta2 = betas
        self.alpha_res = alpha_res
        self.conv3x3 = make_binary_conv(norm, cin, cin, 3, stride, 1, act_binarizer, True, voter, binary_init)
        self.norm1 = make_norm(norm, cin)
        self.pool = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.act1 = RPReLU(cin)
        self.conv1x1 = make_binary_conv(norm, cin, cout, 1, 1, 0, act_binarizer, True, None, binary_init)
        self.norm2 = make_norm(norm, cout)
        self.act2 = RPReLU(cout)
        # False = the shortcut-only network (diagnostics.set_shortcut_only): both branches skipped
        self.branch_enabled = True

    def forward(self, x):
        xin = scale_branch_input(x, self.beta1)
        # the downsampling shortcut sees the scaled input (bnfree transition); identity the raw one
        short = self.pool(xin) if self.stride == 2 else x
        if not self.branch_enabled:
            out1 = self.act1(short)
            return self.act2(torch.cat([out1, out1], 1) if self.doubling else out1)
        out = scale_branch_output(self.norm1(self.conv3x3(xin)), self.alpha_res)
        out1 = self.act1(out + short)
        out = scale_branch_output(self.norm2(self.conv1x1(scale_branch_input(out1, self.beta2))), self.alpha_res)
        short = torch.cat([out1, out1], 1) if self.doubling else out1
        return self.act2(out + short)


class ReActNetA(nn.Module):
    """ReActNet-A with a CIFAR stem (see the module docstring).

    Args:
        num_classes: classifier outputs (10 for CIFAR-10, 100 for CIFAR-100).
        width: stem channels; every stage scales with it (32 = the paper).
        norm: ``bn``, ``none`` (variant ``nobn``) or ``bnfree``.
        act_binarizer: activation estimator (default ApproxSign, as ReActNet).
        voter: voter for the binary 3x3 convolutions (``None`` = popcount).
        in_channels: image channels.
        stem_stride: 1 for CIFAR (default), 2 as on ImageNet.
        alpha_res: bnfree residual factor (NF-ResNets' 0.2).
        binary_init: latent-weight init of the binary convolutions, ``reactnet``
            or ``fanin``; None = the norm's default
            (:func:`mvlib.models.norms.default_binary_init`: ``fanin`` for ``none``).
    """

    def __init__(self, num_classes=10, width=PAPER_WIDTH, norm="bn", act_binarizer=None, voter=None,
                 in_channels=3, stem_stride=1, alpha_res=BNFREE_ALPHA, binary_init=None):
        super().__init__()
        check_norm(norm)
        self.width, self.norm_kind = width, norm
        self.binary_init = binary_init or default_binary_init(norm)
        chans = [width * m for m in CHANNEL_MULTS]
        self.stem = nn.Sequential(make_real_conv(norm, in_channels, chans[0], 3, stem_stride, 1),
                                  make_norm(norm, chans[0]))
        sp = SignalPropagation(norm, alpha_res)  # (1.0, 1.0) per sub-block unless bnfree
        blocks = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            # stride 2 where a stage begins, except 32 -> 64 (the paper's rule)
            stride = 2 if (cout != cin and cout != 2 * width) else 1
            beta1, alpha = sp.step(transition=(stride == 2))
            beta2, _ = sp.step(transition=False)
            blocks.append(ReActABlock(cin, cout, stride, norm, act_binarizer or "approxsign", voter,
                                      (beta1, beta2), alpha, self.binary_init))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(chans[-1], num_classes)

    def forward(self, x):
        if x.device.type == "cpu" and x.dim() == 4:
            # as BinaryResNet18: channels-last lets oneDNN and mvlib.fused skip a reorder per layer
            # (1.3x per training step, 3x per evaluation at width 4 on one thread); values are the same
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.blocks(self.stem(x))
        return self.classifier(self.pool(x).flatten(1))
