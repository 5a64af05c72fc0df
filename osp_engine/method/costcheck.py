"""Never silently wrong: the cost model against Torch-Pruning's counter on physically pruned copies.

At the start of every run (before its folder exists) a few random channel assignments are pruned
physically from copies of the model and counted with `tp.utils.count_ops_and_params`; the FLOPs and
parameters from counts must equal the counter's, and the pruned copy must run forward. Otherwise
`CheckFailed` names the layers at fault and the groups whose channels reach them: prepare_network
keeps those groups whole and checks again, and refuses the model when no group can be named.
"""
from __future__ import annotations

import copy
import traceback
from collections import defaultdict
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from .failure import describe
from .flops import CostModel, layer_flops, parameter_sizes
from .groups import Group, UnsupportedModel, remove_together
from .graph import build_graph
from .tp import tp


def random_keep(groups: list[Group], rng: np.random.Generator) -> list[np.ndarray]:
    """Per group a (C_g,) bool keep mask of whole units, each kept with a probability drawn in
    [0.2, 0.9], at least one unit kept."""
    keep = []
    for g in groups:
        units = rng.random(g.n_units) < rng.uniform(0.2, 0.9)
        units[rng.integers(g.n_units)] = True
        keep.append(units[g.unit_of().numpy()])
    return keep


def pruned_copy(model: nn.Module, groups: list[Group], keep: list[np.ndarray], example: torch.Tensor) -> nn.Module:
    """A copy of `model` with every channel not in `keep` physically removed (model is not touched)."""
    twin = copy.deepcopy(model).eval()
    graph = build_graph(twin, example)
    remove_together(graph, [(twin.get_submodule(g.name), np.flatnonzero(~kept).tolist()) for g, kept in zip(groups, keep)])
    return twin


class CheckFailed(UnsupportedModel):
    """A randomly pruned copy disagreed with the cost model or did not run. suspects: indices of the
    groups whose channels reach the layers at fault (empty when none can be named)."""

    def __init__(self, message: str, suspects: set[int]) -> None:
        super().__init__(message)
        self.suspects = suspects


def _groups_in(cost: CostModel, names: set[str]) -> set[int]:
    """Indices of the groups whose counts enter the charges of the layers (or parameters) `names`."""
    one = len(cost.sizes)
    return {k for name, _, form in cost.layers if name in names for pair in form for k in pair if k != one}


def _mismatches(cost: CostModel, counts: np.ndarray, twin: nn.Module, counted: dict) -> list[str]:
    """Names of the layers whose FLOPs from counts differ from the counter's, in forward order."""
    predicted: dict[str, Fraction] = defaultdict(Fraction)
    for name, _, value in layer_flops(cost, counts):
        predicted[name] += value
    return [name for name, m in twin.named_modules()
            if name in predicted and counted.get(m) is not None and predicted[name] != counted[m]]


def _layers_in_trace(e: BaseException, twin: nn.Module) -> set[str]:
    """Names of `twin`'s modules on the failing call stack, and of everything inside the innermost one."""
    names = {id(m): n for n, m in twin.named_modules()}
    on_stack = [names[id(f.f_locals["self"])] for f, _ in traceback.walk_tb(e.__traceback__)
                if isinstance(f.f_locals.get("self"), nn.Module) and id(f.f_locals["self"]) in names]
    inner = on_stack[-1] if on_stack else None
    if not inner:
        return set()
    return {n for n, _ in twin.named_modules() if n == inner or n.startswith(inner + ".")}


def _member_groups(groups: list[Group], layers: set[str]) -> set[int]:
    """Indices of the groups with a weight slice in one of `layers`."""
    return {i for i, g in enumerate(groups) if any(m.layer.rsplit(".", 1)[0] in layers or m.layer in layers
                                                   for m in g.members) or set(g.layers) & layers}


def check_cost_model(model: nn.Module, groups: list[Group], cost: CostModel, example: torch.Tensor,
                     trials: int = 2, seed: int = 0) -> None:
    """Raise CheckFailed unless FLOPs and params from counts equal the counter on `trials` randomly
    pruned copies, and each copy runs forward. example: a batch of one."""
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        keep = random_keep(groups, rng)
        counts = np.array([int(k.sum()) for k in keep], dtype=np.int64)
        twin = None
        try:
            twin = pruned_copy(model, groups, keep, example)
            with torch.no_grad():
                twin(example)
        except UnsupportedModel:
            raise
        except Exception as e:
            ran = twin if twin is not None else model
            raise CheckFailed(f"a pruned copy does not run: {describe(e, ran)}",
                              _member_groups(groups, _layers_in_trace(e, ran))) from None
        flops, params, by_layer, _ = tp.utils.count_ops_and_params(twin, example, layer_wise=True)
        if cost.flops(counts) != int(flops):
            wrong = _mismatches(cost, counts, twin, by_layer)
            where = f"{wrong[0]} and {len(wrong) - 1} more layers" if len(wrong) > 1 else (wrong[0] if wrong else "a layer it does not see")
            raise CheckFailed(f"Torch-Pruning's prune of a random sub-network disagrees with the cost model at {where}: "
                              f"{cost.flops(counts)} FLOPs from counts, {int(flops)} counted", _groups_in(cost, set(wrong)))
        if cost.params(counts) != int(params):
            sizes = {n: p.numel() for n, p in twin.named_parameters()}
            wrong = {name for name, size in parameter_sizes(cost, counts).items() if name in sizes and size != sizes[name]}
            raise CheckFailed(f"Torch-Pruning's prune of a random sub-network disagrees with the parameter count: "
                              f"{cost.params(counts)} from counts, {int(params)} counted", _groups_in(cost, wrong))
