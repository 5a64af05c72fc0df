"""CIFAR ResNet-20/32/56/110 as defined by the official OCSPruner code.

Basic blocks whose inner ReLU is a module and whose post-add ReLU is functional (so the FLOPs counter
sees exactly the ReLUs the official numbers include), a 1x1 conv + BN projection shortcut where the
shape changes, global 8x8 average pooling and one linear classifier.
Input (N, 3, 32, 32) -> logits (N, num_classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)           # out first, as the official block: TP's group order follows it


class CifarResNet(nn.Module):
    """Three stages of (depth - 2) / 6 basic blocks at 16, 32 and 64 channels.

    `pool` is the side of the last stage's maps (8 for 32x32 inputs); `in_channels` the image channels.
    """

    def __init__(self, depth: int, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64),
                 pool: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv_1_3x3 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.avgpool = nn.AvgPool2d(pool)
        self.classifier = nn.Linear(widths[-1], num_classes)
        _init_official(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        x = self.avgpool(x)
        return self.classifier(x.flatten(1))


def _init_official(model: nn.Module) -> None:
    """He-normal convs (fan-out), BN gamma 1 / beta 0, Kaiming linear with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
