"""Coupled channel groups with their weight slices, from Torch-Pruning's DependencyGraph.

A `Group` is the set of channels that must go together (docs/method.md, 'Groups'): its producing convs'
output filters, its BatchNorms, the input slices of every consumer, across residual adds. Channel j
of a group is its ORIGINAL channel id j (the root layer's output index at build time), so masks stay
comparable epoch to epoch. Each `Member` is one weight tensor slice family that saliency reads and
the regulariser shrinks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

PRODUCER, CONSUMER, BATCHNORM = "producer", "consumer", "bn"


@dataclass
class Member:
    """One weight slice family of a group.

    weight: the parameter (conv/linear weight or BN gamma); dim: 0 for a producer's filters and BN,
    1 for a consumer's input slices; fan: elements per slice before scaling (producer n_d = C_in*k*k,
    consumer m_d = C_out*k*k, BN 1); param_index[i] is the slice index in `weight` that carries group
    channel group_index[i] (both (n,) int64, on the weight's device).
    """
    layer: str
    kind: str
    weight: nn.Parameter
    dim: int
    fan: int
    param_index: torch.Tensor
    group_index: torch.Tensor


@dataclass
class Group:
    gid: int
    name: str                 # the root layer's name
    size: int                 # C_g, channels at build time
    members: list[Member]
    root: nn.Module
    layers: list[str]         # names of layers whose OUTPUT channels are this group (producers, BNs)
    tp_rank: int = 0          # position in Torch-Pruning's own group order (the official cost table uses it)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def find_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """The last conv/linear whose output size is num_classes: never pruned (docs/method.md)."""
    found = None
    for m in model.modules():
        out = getattr(m, "out_features", None) or getattr(m, "out_channels", None)
        if isinstance(m, (nn.Linear, nn.Conv2d)) and out == num_classes:
            found = m
    if found is None:
        raise ValueError(f"no classifier with {num_classes} outputs found in the model")
    return found


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def _slice_fan(weight: torch.Tensor, dim: int) -> int:
    return weight.numel() // weight.shape[dim]


ROOT_TYPES = (nn.Conv2d, nn.Linear)


def all_group_roots(model: nn.Module, graph: tp.DependencyGraph) -> list[str]:
    """Root layer names of EVERY group, the classifier's included, in Torch-Pruning's order."""
    names = {m: n for n, m in model.named_modules()}
    return [names.get(g.items[0].dep.target.module, "?") for g in graph.get_all_groups(root_module_types=ROOT_TYPES)]


def build_groups(model: nn.Module, graph: tp.DependencyGraph, classifier: nn.Module) -> list[Group]:
    """Every prunable group of `model`, in forward order, with members for saliency and shrink."""
    names = {m: n for n, m in model.named_modules()}
    groups: list[Group] = []
    for tp_group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=ROOT_TYPES):
        members: list[Member] = []
        layers: list[str] = []
        root = tp_group.items[0].dep.target.module
        size = len(tp_group.items[0].idxs)
        for dep, idxs in tp_group.items:
            m = dep.target.module
            if m not in names:
                continue                                  # traced functional ops carry no weights
            is_out = graph.is_out_channel_pruning_fn(dep.handler)
            pidx = torch.tensor([getattr(i, "idx", i) for i in idxs], dtype=torch.long)
            gidx = torch.tensor([getattr(i, "root_idx", i) for i in idxs], dtype=torch.long)
            dev = m.weight.device if getattr(m, "weight", None) is not None else pidx.device
            pidx, gidx = pidx.to(dev), gidx.to(dev)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.affine:
                    members.append(Member(names[m], BATCHNORM, m.weight, 0, 1, pidx, gidx))
                layers.append(names[m])
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if is_out:
                    members.append(Member(names[m], PRODUCER, m.weight, 0, _slice_fan(m.weight, 0), pidx, gidx))
                    layers.append(names[m])
                elif not _is_depthwise(m):                # a depthwise conv rides along as a producer
                    members.append(Member(names[m], CONSUMER, m.weight, 1, _slice_fan(m.weight, 1), pidx, gidx))
        groups.append(Group(0, names.get(root, "?"), size, members, root, layers, tp_rank=len(groups)))
    order = {m: i for i, m in enumerate(model.modules())}
    groups.sort(key=lambda g: order.get(g.root, len(order)))   # input-to-output order, for the views
    for gid, g in enumerate(groups):
        g.gid = gid
    return groups


def prune_groups(graph: tp.DependencyGraph, groups: list[Group], keep: list[torch.Tensor]) -> None:
    """Physically remove every channel not kept. keep[g]: (C_g,) bool over original ids.

    Groups are disjoint, so pruning one never renumbers another's channels.
    """
    for group, kept in zip(groups, keep):
        drop = torch.nonzero(~kept.cpu()).flatten().tolist()
        if not drop:
            continue
        handler = graph.get_pruner_of_module(group.root).prune_out_channels
        graph.get_pruning_group(group.root, handler, idxs=drop).prune()
