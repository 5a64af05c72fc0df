"""VGG-16/19 with BatchNorm for 32x32 inputs, as in the official code's CIFAR benchmarks.

Five conv blocks (conv3x3+bias, BN, ReLU; the block's last ReLU is functional). Max-pools follow
the first three blocks only (32 -> 16 -> 8 -> 4, the fourth pool is skipped on 32x32 inputs), blocks
four and five run at 4x4, then adaptive average pooling to 1x1 and one Linear(512, classes).
Input (N, 3, 32, 32) -> logits (N, num_classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONFIGS: dict[str, list[list[int]]] = {
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], in_ch: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_ch = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, name: str, num_classes: int = 10) -> None:
        super().__init__()
        cfg = CONFIGS[name]
        in_chs = [3] + [b[-1] for b in cfg[:-1]]
        self.blocks = nn.ModuleList(_block(b, c) for b, c in zip(cfg, in_chs))
        self.pools = nn.ModuleList(nn.MaxPool2d(2, 2) for _ in range(3))
        self.pool_out = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = F.relu(block(x))
            if i < len(self.pools):
                x = self.pools[i](x)
        return self.classifier(torch.flatten(self.pool_out(x), 1))
