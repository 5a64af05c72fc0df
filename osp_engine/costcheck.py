"""Never silently wrong: the cost model against Torch-Pruning's counter on physically pruned copies.

At the start of every run (before its folder exists) a few random channel assignments are pruned
physically from copies of the model and counted with `tp.utils.count_ops_and_params`; the FLOPs and
parameters from counts must equal the counter's, and the pruned copy must run forward. Otherwise the
model is refused with one line naming the layer type the cost model could not cost.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .flops import CostModel, layer_flops
from .groups import Group, UnsupportedModel, build_graph


def random_keep(groups: list[Group], rng: np.random.Generator) -> list[np.ndarray]:
    """Per group a (C_g,) bool keep mask of whole units, each kept with a probability drawn in
    [0.2, 0.9], at least one unit kept."""
    keep = []
    for g in groups:
        units = rng.random(g.n_units) < rng.uniform(0.2, 0.9)
        units[rng.integers(g.n_units)] = True
        keep.append(units[np.arange(g.size) % g.n_units])
    return keep


def pruned_copy(model: nn.Module, groups: list[Group], keep: list[np.ndarray], example: torch.Tensor) -> nn.Module:
    """A copy of `model` with every channel not in `keep` physically removed (model is not touched)."""
    twin = copy.deepcopy(model).eval()
    graph = build_graph(twin, example)
    for g, kept in zip(groups, keep):
        drop = np.flatnonzero(~kept).tolist()
        if drop:
            root = twin.get_submodule(g.name)
            graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs=drop).prune()
    return twin


def _culprit(cost: CostModel, counts: np.ndarray, twin: nn.Module, counted: dict) -> str:
    """The first layer whose FLOPs from counts differ from the counter's, as 'Type (name)'."""
    predicted: dict[str, float] = defaultdict(float)
    kinds = {}
    for name, kind, value in layer_flops(cost, counts):
        predicted[name] += float(value)
        kinds[name] = kind
    for name, m in twin.named_modules():
        if name in predicted and counted.get(m) is not None and predicted[name] != float(counted[m]):
            return f"{kinds[name]} ({name})"
    for name, m in twin.named_modules():
        if name not in predicted and not list(m.children()) and counted.get(m):
            return f"{type(m).__name__} ({name})"
    return "a layer it does not see"


def check_cost_model(model: nn.Module, groups: list[Group], cost: CostModel, example: torch.Tensor,
                     trials: int = 2, seed: int = 0) -> None:
    """Raise UnsupportedModel unless FLOPs and params from counts equal the counter on `trials`
    randomly pruned copies, and each copy runs forward. example: a batch of one."""
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        keep = random_keep(groups, rng)
        counts = np.array([int(k.sum()) for k in keep], dtype=np.int64)
        try:
            twin = pruned_copy(model, groups, keep, example)
            with torch.no_grad():
                twin(example)
        except UnsupportedModel:
            raise
        except Exception as e:
            raise UnsupportedModel(f"the pruned model does not run ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
        flops, params, by_layer, _ = tp.utils.count_ops_and_params(twin, example, layer_wise=True)
        if cost.flops(counts) != int(flops):
            raise UnsupportedModel(f"the FLOPs model cannot cost {_culprit(cost, counts, twin, by_layer)}: "
                                   f"{cost.flops(counts)} FLOPs from counts, {int(flops)} counted on the pruned model")
        if cost.params(counts) != int(params):
            raise UnsupportedModel(f"the FLOPs model cannot count the parameters: {cost.params(counts)} from "
                                   f"counts, {int(params)} counted on the pruned model")
