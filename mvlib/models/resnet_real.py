"""Real-valued CIFAR ResNets (18, 34): the distillation teachers of the ``paper`` profile.

ReActNet's official code distils every binary student from a real-valued
**ResNet-34** (``liuzechun/ReActNet``, ``resnet/1_step1/train.py:33``
``--teacher default='resnet34'`` and ``:60`` ``models.__dict__[args.teacher](pretrained=True)``,
an ImageNet-pretrained torchvision model). On CIFAR there is no published
teacher checkpoint, so the pipeline trains this network first and records it
like any other run (notebook 01, variant ``teacher-resnet34``).

Architecture: the CIFAR ResNet of He et al. (CVPR 2016) as the binary
networks' skeleton has it (:mod:`mvlib.models.resnet18`): a 3x3 stride-1
stem without max-pool, four stages of two-convolution basic blocks
(widths w, 2w, 4w, 8w; [2, 2, 2, 2] blocks for ResNet-18, [3, 4, 6, 3] for
ResNet-34), a 1x1 stride-2 convolution + BN on the shortcut where the shape
changes, global average pool and a linear classifier. ``width`` 64 is the
standard network (21.3 M parameters for ResNet-34).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, two 3x3 convolutions."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class RealResNet(nn.Module):
    """A real-valued CIFAR ResNet of ``depth`` (``"resnet18"`` or ``"resnet34"``)."""

    def __init__(self, depth: str = "resnet34", num_classes: int = 10, width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown depth {depth!r}; choose one of {sorted(DEPTHS)}")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, cin = [], width
        for stage, n in enumerate(DEPTHS[depth]):
            cout = width * 2 ** stage
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for b in blocks:  # each residual branch starts as zero: the network starts as its shortcuts (Goyal et al.)
            nn.init.zeros_(b.bn2.weight)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
