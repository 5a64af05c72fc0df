"""The FLOPs-cost table that weights saliency: S^_g(c) = S_g(c) * (1 - pi_g), pi = softmax(cost / 1e6).

cost_g is the FLOPs (MACs) saved per channel when all but one channel of group g are removed, every
other group left dense. Two variants (docs/method.md, 'Official behaviour' 1):

- corrected: every candidate group is weighted by its own cost.
- official (ocspruner/cost.py:24-31, read at ocspruner/pruner.py:256): the loop runs over the candidate
  groups but reads Torch-Pruning's list of ALL groups, the classifier's included. Candidate i (in
  Torch-Pruning's candidate order) gets the cost of all-groups entry i: with the classifier first,
  candidate 0 gets the classifier's cost, candidate i > 0 the cost of candidate i - 1, and the last
  candidate's own cost is never used. The softmax runs over this shifted table.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .flops import CostModel
from .groups import Group, KeptWhole, remove_channels
from .graph import build_graph
from .tp import tp


def flops_weights(costs: np.ndarray, tp_rank: np.ndarray) -> np.ndarray:
    """pi_g = exp(cost_g / 1e6) / sum_h exp(cost_h / 1e6), (G,) float64 by gid.

    Summed left to right in Torch-Pruning's order, as the official code does, so that pi is bit-equal
    to it. Only where that sum overflows (a cost above ~700 M MACs per channel, where the official code
    raises OverflowError) is the maximum subtracted first.
    """
    order = np.argsort(tp_rank)                                     # gids in Torch-Pruning's order
    by_rank = [float(costs[g]) for g in order]
    try:
        exps = [math.exp(c / 1e6) for c in by_rank]
        total = sum(exps)
        pi_by_rank = [e / total for e in exps]
    except OverflowError:
        z = np.array(by_rank) / 1e6
        e = np.exp(z - z.max())
        pi_by_rank = list(e / e.sum())
    pi = np.empty(len(by_rank))
    pi[order] = pi_by_rank
    return pi


def measured_cost(model: nn.Module, example: torch.Tensor, root: str) -> float:
    """FLOPs saved per channel removed from the group rooted at `root`, by pruning a copy and counting.

    Used once per run, for the all-groups entry that is not a candidate (the classifier's), which
    the count-based CostModel does not cover. A one-channel group saves nothing: 0.0.
    """
    m = copy.deepcopy(model).eval()
    layer = m.get_submodule(root)
    graph = build_graph(m, example)
    handler = graph.get_pruner_of_module(layer)
    channels = handler.get_out_channels(layer)
    if channels < 2:
        return 0.0
    dense, _ = tp.utils.count_ops_and_params(m, example_inputs=example)
    remove_channels(graph, layer, list(range(channels - 1)))
    pruned, _ = tp.utils.count_ops_and_params(m, example_inputs=example)
    return float(dense - pruned) / (channels - 1)


def cost_table(model: nn.Module, groups: list[Group], cost: CostModel, example: torch.Tensor, variant: str,
               whole: list[KeptWhole] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(costs, pi), each (G,) float64 by gid, for `variant`. example: a batch of one; whole: the groups
    kept whole, whose entries of Torch-Pruning's list (official) cost 0."""
    own = cost.cost_per_channel()                                   # corrected: each group its own
    tp_rank = np.array([g.tp_rank for g in groups], dtype=np.int64)
    costs = own
    if variant == "official":                                       # a group kept whole saves nothing: 0
        by_root = {g.name: own[g.gid] for g in groups}
        by_root.update({k.name: 0.0 for k in whole})
        costs = np.array([by_root[g.listed_root] if g.listed_root in by_root
                          else measured_cost(model, example, g.listed_root) for g in groups], dtype=np.float64)
    return costs, flops_weights(costs, tp_rank)
