"""The prunable network: a model with its groups, exact cost model and FLOPs weights, checked.

`prepare_network` is the one door every model goes through (the registry's, a user's nn.Module
through the API or the hooks): it refuses, with one line naming the reason, a model it cannot
prune exactly (attention layers, an operation Torch-Pruning cannot trace, an input it cannot take,
a layer the cost model cannot cost) before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .costcheck import check_cost_model
from .costs import cost_table
from .flops import CostModel, build_cost_model
from .groups import Group, UnsupportedModel, build_graph, build_groups, find_classifier


@dataclass
class Prunable:
    model: nn.Module
    graph: tp.DependencyGraph
    groups: list[Group]
    cost: CostModel
    pi: np.ndarray            # (G,) FLOPs weights of the saliency, by gid
    example: torch.Tensor     # (1, C, H, W) zeros on the model's device


def check_convolutional(model: nn.Module) -> None:
    """Refuse attention models (ViT, Swin, MaxViT): osp prunes convolutional channels, and
    Torch-Pruning's grouping of their heads is neither exact here nor bounded in memory."""
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__:
            raise UnsupportedModel(f"attention layer {type(m).__name__} ({name}): vision transformers are not "
                                   f"supported, osp prunes the channels of convolutional networks")


def check_input(model: nn.Module, example: torch.Tensor, num_classes: int) -> None:
    """The model must take `example` and return (1, num_classes) logits."""
    shape = "x".join(str(s) for s in example.shape[1:])
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as e:
        raise UnsupportedModel(f"the model cannot take {shape} inputs ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}): use a dataset whose images it accepts") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UnsupportedModel(f"the model returns {got} for one {shape} input, not (1, {num_classes}) logits")


def prepare_network(model: nn.Module, num_classes: int, example: torch.Tensor, variant: str,
                    checks: int = 2) -> Prunable:
    """Groups, cost model (checked against Torch-Pruning's counter `checks` times) and pi for `model`.

    example: (1, C, H, W) on the model's device. UnsupportedModel (one line) if it cannot be pruned exactly.
    """
    check_convolutional(model)
    check_input(model, example, num_classes)
    graph = build_graph(model, example)
    groups = build_groups(model, graph, find_classifier(model, num_classes))
    if not any(g.n_units > 1 for g in groups):
        raise UnsupportedModel("the model has no channel group that can lose a channel: nothing to prune")
    cost = build_cost_model(model, groups, example)
    if checks:
        check_cost_model(model, groups, cost, example, trials=checks)
    _, pi = cost_table(model, graph, groups, cost, example, variant)
    return Prunable(model, graph, groups, cost, pi, example)
