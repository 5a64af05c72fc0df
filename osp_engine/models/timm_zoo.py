"""timm's convolutional classifiers by name: `timm-<name>`, built with pretrained=False (never a download).

Imported only when a timm model is named, built or listed: timm takes seconds to import, and the demo
must not pay for it. Which models count as convolutional is decided per timm module (catalog.py,
TIMM_CNN_FAMILIES); a model of those that still holds an attention layer is refused when a run starts.
"""
from __future__ import annotations

import warnings

from torch import nn

from ..method.catalog import TIMM_CNN_FAMILIES, TIMM_PREFIX
from ..method.config import ConfigError


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm models need timm, which is not installed: pip install timm") from None
    return timm


def timm_classifiers() -> list[tuple[str, str]]:
    """(`timm-<name>`, timm module) for every convolutional classifier the installed timm lists."""
    timm = _timm()
    module_of = timm.models._registry._model_to_module
    return [(TIMM_PREFIX + n, module_of[n]) for n in timm.list_models() if module_of.get(n) in TIMM_CNN_FAMILIES]


def build_timm(name: str, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    """A fresh `timm-<name>` with num_classes outputs and in_channels input channels; ConfigError if
    timm is missing or the name is not one of its convolutional classifiers."""
    timm = _timm()
    arch = name[len(TIMM_PREFIX):]
    module = timm.models._registry._model_to_module.get(arch)
    if module is None:
        raise ConfigError(f"unknown timm model {arch!r}: `python -m osp_engine models` lists the timm-<name> models")
    if module not in TIMM_CNN_FAMILIES:
        raise ConfigError(f"timm model {arch!r} ({module}) is not a convolutional classifier: osp prunes CNN channels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def timm_parameters(name: str, num_classes: int = 10) -> int:
    """Parameters of `timm-<name>` with num_classes outputs, built on the meta device (no memory, no time)."""
    import torch

    timm = _timm()
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = timm.create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
