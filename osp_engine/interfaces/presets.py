"""Named configurations: the demo and the official scripts' recipes (docs/method.md, 'Defaults')."""
from __future__ import annotations

import dataclasses

from ..method.config import Config, ConfigError

_CIFAR = dict(epochs=300, batch_size=128, lr=0.1, lr_schedule="multistep", milestones=(0.3, 0.6, 0.8, 0.9),
              gamma=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, reg=1e-4, reg_delta=1e-4,
              threshold=0.999)
_R56 = dict(_CIFAR, target=0.50, reg_interval=3, l_max=0.70, sl_start=30, sl_end=120, monitor_start=1)
_IMAGENET = dict(dataset="imagenet", epochs=130, batch_size=256, lr=0.1, lr_schedule="cosine",
                 momentum=0.9, nesterov=True, weight_decay=1e-4, target=0.45, reg=1e-4, reg_delta=1e-4,
                 reg_interval=2, sl_auto=True, sl_start=10, sl_end=50, monitor_start=2, threshold=0.999)

PRESETS: dict[str, dict] = {
    # The whole cycle on the bundled digits in 4-11 s of training on 2 CPU cores (benchmarks/bench_demo.py). The
    # regulariser is much stronger than the paper's (0.01 vs 1e-4) so that the sub-network settles
    # within 24 short epochs, and the search is osp's fill: on a network of 16-64 channels a threshold
    # cut moves by whole channels worth 1-2 % of the FLOPs, and missed 50 % by up to 2.3 pp (docs/method.md).
    "demo": dict(model="digits-resnet8", dataset="digits", epochs=24, batch_size=64, lr=0.1,
                 lr_schedule="multistep", milestones=(0.5, 0.75), gamma=0.1, weight_decay=5e-4,
                 target=0.5, l_max=0.75, monitor_start=1, reg=0.01, reg_delta=0.01, reg_interval=1,
                 sl_start=4, sl_end=16, threshold=0.999, device="cpu", search="fill",
                 keep_checkpoints=1,              # for branches: about 0.6 MB per searched epoch before the prune
                 candidate_every=2, speed_budget_s=0.2),              # every other epoch: 5 % of an epoch, not 10 % (bench_candidate)
    "cifar10-resnet56": dict(_R56, model="resnet56", dataset="cifar10"),
    "cifar10-resnet32": dict(_CIFAR, model="resnet32", dataset="cifar10", target=0.55, reg_interval=1,
                             l_max=0.75, sl_start=30, sl_end=110, monitor_start=2),
    "cifar10-resnet110": dict(_R56, model="resnet110", dataset="cifar10"),
    "cifar10-vgg16": dict(_R56, model="vgg16", dataset="cifar10", target=0.60, l_max=0.75),
    "cifar100-vgg19": dict(_R56, model="vgg19", dataset="cifar100", target=0.60, l_max=0.75),
    "cifar10-mobilenetv2": dict(_R56, model="mobilenetv2", dataset="cifar10"),
    "imagenet-resnet18": dict(_IMAGENET, model="tv-resnet18"),
    "imagenet-resnet50": dict(_IMAGENET, model="tv-resnet50"),
}

# The guided lesson: the demo at 95 % of the FLOPs removed (per-layer floor 5 %), where its measured sweep
# tells a story (docs/studio.md, 'Lesson': pruning at epoch 1 ended 9.8 pp above the stable epoch's
# prune over 3 seeds), pausing at each moment the lesson explains.
PRESETS["lesson"] = dict(PRESETS["demo"], target=0.95, l_max=0.95, pause_at="searched,regularizer,stability,pruned")

DESCRIPTIONS: dict[str, str] = {
    "demo": "digits (bundled), 24 epochs on CPU: the whole cycle in 4-11 s of training on 2 cores",
    "lesson": "the demo at 95 % of the FLOPs removed, pausing at each moment the guided lesson explains",
    "cifar10-resnet56": "paper recipe: 300 epochs, target 0.50, reg every 3 epochs, L_max 0.70",
    "cifar10-resnet32": "official script: target 0.55, reg every epoch, sl_end 110",
    "cifar10-resnet110": "ResNet-56's recipe on ResNet-110",
    "cifar10-vgg16": "ResNet-56's recipe on VGG-16-BN, target 0.60",
    "cifar100-vgg19": "ResNet-56's recipe on VGG-19-BN / CIFAR-100, target 0.60",
    "cifar10-mobilenetv2": "ResNet-56's recipe on MobileNetV2",
    "imagenet-resnet18": "130 epochs cosine, target 0.45, automatic regulariser start, sl_end 50",
    "imagenet-resnet50": "ResNet-18's ImageNet recipe on ResNet-50",
}


def get_preset(name: str) -> Config:
    """The preset as a validated Config; ConfigError names the known presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} (see `presets`)")
    return dataclasses.replace(Config(), **PRESETS[name], preset=name)
