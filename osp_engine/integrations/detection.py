"""torchvision's detectors in a detection loop of one's own: the part of a detector that osp prunes.

    from osp_engine.integrations.detection import backbone_input, prunable_part

    part = prunable_part(model)                           # the detector's own layers, not a copy
    example = backbone_input(model, images[:1])           # (1, 3, H, W) as the detector's transform makes it
    with osp_engine.attach(part, example, num_classes=None, epochs=E, metric="mAP") as pruner:
        ...                                               # train `model` as usual, calling pruner's hooks

A one-stage detector (RetinaNet, FCOS, SSD, SSDlite) is pruned as its backbone, FPN and head together,
from the images to the head's raw outputs: the backbone, the FPN and the head's inner convolutions lose
channels; the head's last convolutions, whose channels the box coder reads as anchors x classes and
anchors x 4, are kept whole (their reshape into anchors is cut). A two-stage detector (Faster, Mask and
Keypoint R-CNN) is pruned as its backbone: its box head reads the FPN's channels through RoIAlign, which
the trace cannot follow, so the FPN's outputs are kept whole and the body beneath them is pruned.
"""
from __future__ import annotations

import torch
from torch import nn

from ..method.config import ConfigError


class BackboneAndHead(nn.Module):
    """A one-stage detector's backbone and head as one network: images (N, 3, H, W), as the detector's
    transform makes them, to the head's raw outputs (a dict of per-anchor tensors), before the box coder
    and non-maximum suppression. It holds the detector's modules: pruning it prunes the detector."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)                  # an OrderedDict of maps, or one map
        return self.head(list(features.values()) if isinstance(features, dict) else [features])


def prunable_part(detector: nn.Module) -> nn.Module:
    """The network of `detector` to attach: BackboneAndHead for a one-stage detector, the backbone for a
    two-stage one; ConfigError for anything else."""
    if hasattr(detector, "roi_heads") and hasattr(detector, "backbone"):
        return detector.backbone
    if hasattr(detector, "head") and hasattr(detector, "backbone") and hasattr(detector, "transform"):
        return BackboneAndHead(detector)
    raise ConfigError(f"{type(detector).__name__}: not a torchvision detector (a backbone with a head or RoI "
                      f"heads); attach your own network with num_classes=None instead")


def backbone_input(detector: nn.Module, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The batch the detector's backbone sees for `images` ((3, H, W) tensors in [0, 1]): resized and
    normalised by the detector's own transform, padded to a common size. Its first image is attach's example."""
    with torch.no_grad():
        batch, _ = detector.transform(list(images))
    return batch.tensors
