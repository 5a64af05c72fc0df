"""MobileNetV2 for 32x32 inputs, as in the official code (CIFAR variant).

A 1x1 stem conv with padding 1 (so 34x34 maps, as the official definition has it), inverted
residual bottlenecks (expand 1x1 - depthwise 3x3 - project 1x1, ReLU6), a 1x1 conv to 1280
channels, global average pooling and a 1x1 conv classifier. Input (N, 3, 32, 32) -> (N, classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearBottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, t: int = 6) -> None:
        super().__init__()
        mid = in_ch * t
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid), nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, out_ch, 1), nn.BatchNorm2d(out_ch),
        )
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        return out + x if self.use_skip else out


def _stage(repeat: int, in_ch: int, out_ch: int, stride: int, t: int) -> nn.Sequential:
    blocks = [LinearBottleneck(in_ch, out_ch, stride, t)]
    blocks += [LinearBottleneck(out_ch, out_ch, 1, t) for _ in range(repeat - 1)]
    return nn.Sequential(*blocks)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.stage1 = LinearBottleneck(32, 16, 1, 1)
        self.stage2 = _stage(2, 16, 24, 2, 6)
        self.stage3 = _stage(3, 24, 32, 2, 6)
        self.stage4 = _stage(4, 32, 64, 2, 6)
        self.stage5 = _stage(3, 64, 96, 1, 6)
        self.stage6 = _stage(3, 96, 160, 1, 6)
        self.stage7 = LinearBottleneck(160, 320, 1, 6)
        self.conv1 = nn.Sequential(nn.Conv2d(320, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.conv2 = nn.Conv2d(1280, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4, self.stage5, self.stage6, self.stage7):
            x = stage(x)
        x = F.adaptive_avg_pool2d(self.conv1(x), 1)
        return self.conv2(x).flatten(1)
