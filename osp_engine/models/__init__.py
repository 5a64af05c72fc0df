"""Model registry: a name -> builder table, and the input shape each family expects.

`build_model(name, num_classes, image_size, in_channels)` returns a freshly initialised network.
CIFAR-family models are the official code's definitions; `digits-resnet8` is the demo's residual
network for 8x8 one-channel digits (`digits-resnet14`, 4x wider and deeper, the earlier demo's); `tv-<name>` is every classification model torchvision lists
(`torchvision.models.list_models(module=torchvision.models)`), built with weights=None (never a
download) and the dataset's class count; `timm-<name>` every convolutional classifier of timm, when
installed (timm_zoo.py, imported only then). Attention models (ViT, Swin, MaxViT) are listed but
refused when a run starts (groups.check_convolutional).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..method.catalog import TIMM_PREFIX, TORCHVISION_CLASSIFIERS

from .cifar_resnet import CifarResNet
from .mobilenetv2 import MobileNetV2
from .vgg import VGG


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int, int, int], nn.Module]  # (num_classes, image_size, in_channels) -> model
    family: str                                   # "cifar", "digits" or "imagenet"


_TV_OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True},     # one output, no warning
               "inception_v3": {"aux_logits": False, "init_weights": True}}


def _torchvision(arch: str) -> Callable[[int, int, int], nn.Module]:
    def build(num_classes: int, image_size: int, in_channels: int) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **_TV_OPTIONS.get(arch, {}))

    return build


def torchvision_names() -> list[str]:
    """Every classification model torchvision lists, in its own order (catalog.py keeps the list torch-free)."""
    return list(TORCHVISION_CLASSIFIERS)


def _cifar_resnet(depth: int) -> Callable[[int, int, int], nn.Module]:
    return lambda nc, size, ch: CifarResNet(depth, nc, pool=max(size // 4, 1), in_channels=ch)


MODELS: dict[str, ModelSpec] = {
    "resnet20": ModelSpec(_cifar_resnet(20), "cifar"),
    "resnet32": ModelSpec(_cifar_resnet(32), "cifar"),
    "resnet56": ModelSpec(_cifar_resnet(56), "cifar"),
    "resnet110": ModelSpec(_cifar_resnet(110), "cifar"),
    "vgg16": ModelSpec(lambda nc, size, ch: VGG("vgg16", nc), "cifar"),
    "vgg19": ModelSpec(lambda nc, size, ch: VGG("vgg19", nc), "cifar"),
    "mobilenetv2": ModelSpec(lambda nc, size, ch: MobileNetV2(nc), "cifar"),
    "digits-resnet14": ModelSpec(lambda nc, size, ch: CifarResNet(14, nc, (32, 64, 128), pool=2, in_channels=ch),
                                 "digits"),
    "digits-resnet8": ModelSpec(lambda nc, size, ch: CifarResNet(8, nc, (16, 32, 64), pool=2, in_channels=ch),
                                "digits"),
}
MODELS.update({f"tv-{arch}": ModelSpec(_torchvision(arch), "imagenet") for arch in torchvision_names()})


def build_model(name: str, num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    """A fresh, randomly initialised model; KeyError names the known models (ConfigError for a timm
    name when timm is missing or does not know it)."""
    if name.startswith(TIMM_PREFIX):
        from .timm_zoo import build_timm

        return build_timm(name, num_classes, image_size, in_channels)
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name].build(num_classes, image_size, in_channels)
