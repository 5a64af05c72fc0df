"""The probe's copy of the model: remove units of groups, observe what the counter would multiply, undo.

A removal is undone by restoring the state of the modules it touched (the weights Torch-Pruning
replaced, the split and concatenation sizes it rewrote), checked by comparing the graph's channel
counts with those before it; where that cannot be done, the copy is rebuilt and the removals left in
place replayed. Every group is thus probed from the same state, and Torch-Pruning's index mapping is
built once. Groups that touch each layer they share the same way (on a DenseNet, every earlier layer's
new channels are input channels of the later layers) are removed together and observed in one forward
pass, each factor's change going to the groups that touched its layer, in proportion to the channels
each removed there.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .failure import describe
from .flops import counted_layers, flat, observe
from .graph import build_graph
from .groups import Group, UnsupportedModel, pruning_group, remove_channels, remove_together
from .mapping import counts_unchanged

CHANGED_LAYERS = "removing a channel changes which layers run (the forward depends on the widths)"
CHANGED_OUTPUT = "its channels reach the model's output: removing one changes an output's shape"


def unit_zero(g: Group) -> list[int]:
    """The channels of unit 0 of `g`: 0, n, 2n, ... for n interleaved units; 0 .. unit - 1 when blocked."""
    return torch.nonzero(g.unit_of() == 0).flatten().tolist()


class ProbeCopy:
    """A copy of the model with its graph. observed: (F,) the factors observing it gives now; owner[f]:
    (the counted call, its layer) factor f belongs to, or (None, the layer holding the parameter)."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model, self.example = model, example
        self.kept: list[tuple[str, list[int]]] = []          # removals left in place, to replay on a rebuild
        self.rebuilds = -1                                   # times the copy was made again (plans go stale)
        self._rebuild()
        self.calls, shapes, self.outputs = observe(self.copy, example)
        self.layout = self.calls + shapes
        self.observed = np.array(flat(self.layout), dtype=np.int64)
        # owner[f]: the counted call (its index) or, for a parameter's shape, the layer holding it
        self.owner = [(i, name) if i < len(self.calls) else (None, name.rpartition(".")[0])
                      for i, (name, _, terms) in enumerate(self.layout) for term in terms for _ in term]
        self.links = producers(self.copy, example)
        if [name for name, _ in self.links] != [c[0] for c in self.calls]:
            self.links = None                            # the two forward passes differ: no batches
        self.weightless = {n for n, m in self.copy.named_modules() if next(m.parameters(), None) is None}

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self.copy = copy.deepcopy(self.model).eval()
        self.graph = build_graph(self.copy, self.example)
        self.names = {m: n for n, m in self.copy.named_modules()}
        for name, drop in self.kept:
            remove_channels(self.graph, self.copy.get_submodule(name), drop)

    def plan(self, g: Group):
        """Torch-Pruning's group removing unit 0 of `g` now, and how it touches each layer: {layer name:
        {Torch-Pruning handler (remove its input channels, its output channels, ...): indices it removes}}
        (None if it touches a bare parameter: that removal cannot be undone by restoring modules); or why
        Torch-Pruning cannot group it. A traced concatenation or split has no factor of its own: not listed."""
        try:
            tp_group = pruning_group(self.graph, self.copy.get_submodule(g.name), unit_zero(g))
        except UnsupportedModel:
            raise
        except Exception as e:
            return describe(e, self.copy)
        if any(isinstance(item.dep.target.module, nn.Parameter) for item in tp_group.items):
            return tp_group, None
        touches: dict[str, dict] = {}
        for item in tp_group.items:
            name = self.names.get(item.dep.target.module)
            if name is not None:
                counts = touches.setdefault(name, {})
                counts[item.dep.handler] = counts.get(item.dep.handler, 0) + len(item.idxs)
        return tp_group, touches

    def remove_units(self, batch: list[tuple[Group, object]]) -> dict[int, np.ndarray] | list | None:
        """Remove unit 0 of every (group, its plan) of `batch` at once (a layer two of them touch, touched
        the same way: `compatible_batches`) and observe: id(group) -> the factors' change it caused
        (before - after); or [(layer, {id(group), ...})] for the layers whose change cannot be shared
        among the groups that can have caused it: batch those apart; or None if the layers run changed, an
        output changed shape or the forward failed: probe them one by one. The copy is restored either way.

        A factor several groups can have changed is shared in proportion to the indices each removed
        where it acts (`_causes`): a factor is a tensor dimension, which loses the same amount per
        channel whichever group the channel belongs to (a concatenation's channels all have its height
        and width). A share that is not a whole number is no such dimension: batch those apart."""
        if self.links is None:
            return None
        touched: dict[str, dict[int, tuple[int, int]]] = {}   # layer -> {id(group): (indices, of them outputs)}
        for g, (tp_group, touches) in batch:
            for layer, counts in touches.items():
                out = sum(k for handler, k in counts.items() if self.graph.is_out_channel_pruning_fn(handler))
                touched.setdefault(layer, {})[id(g)] = (sum(counts.values()), out)
        saved = _snapshot([item for _, (tp_group, _) in batch for item in tp_group.items])
        try:
            remove_together(self.graph, [(self.copy.get_submodule(g.name), unit_zero(g)) for g, _ in batch],
                            [tp_group for _, (tp_group, _) in batch])
            after = self._observe()
        except UnsupportedModel:
            raise
        except Exception:
            after = None
        self.undo(saved)
        if after is None or isinstance(after, str):
            return None
        change = {id(g): np.zeros_like(self.observed) for g, _ in batch}
        ambiguous: dict[str, set] = {}
        for f in np.flatnonzero(after != self.observed):
            causes, delta = self._causes(*self.owner[f], touched), int(self.observed[f] - after[f])
            total = sum(causes.values())
            if not causes:
                return None                          # a change no group of the batch explains
            if total == 0 or any(delta * weight % total for weight in causes.values()):
                ambiguous[self.owner[f][1]] = set(causes)
                continue
            for i, weight in causes.items():
                change[i][f] = delta * weight // total
        return list(ambiguous.items()) if ambiguous else change

    def _causes(self, call: int | None, layer: str, touched: dict) -> dict[int, int]:
        """{id(group): indices it removed where it can have changed a factor of counted call `call` of
        `layer` (None: a parameter of `layer`)}: the groups that touched the layer, else (an activation, a
        pool: a layer without weights, which Torch-Pruning does not list) those that removed output
        channels of the calls feeding this call, through calls of layers without weights. A layer with
        weights whose output channels no group removed kept them: nothing comes through it. Calls, not
        names: a ReLU module used three times in a block is fed by three different layers."""
        if layer in touched:
            return {i: indices for i, (indices, _) in touched[layer].items()}
        found: dict[int, int] = {}
        todo, seen = list(self.links[call][1]) if call is not None else [], set()
        while todo:
            j = todo.pop()
            if j in seen:
                continue
            seen.add(j)
            name, feeding = self.links[j]
            if name in touched:
                for i, (_, out) in touched[name].items():
                    if out:
                        found[i] = found.get(i, 0) + out
            elif name in self.weightless:
                todo += feeding
        return found

    def remove_unit(self, g: Group) -> np.ndarray | str:
        """Remove unit 0 of `g` alone: the factors' change it caused (before - after), or why not (the
        forward fails, the layers run change). Undone, except a removal that cannot be undone by
        restoring modules (it re-registers a bare parameter): left in place if it worked, and
        `observed` becomes what it gave."""
        drop, saved = unit_zero(g), None
        try:
            tp_group = pruning_group(self.graph, self.copy.get_submodule(g.name), drop)
            saved = _snapshot(tp_group.items)
            remove_channels(self.graph, self.copy.get_submodule(g.name), drop, tp_group)
            after = self._observe()
            if isinstance(after, str):
                self.undo(saved)
                return after
        except UnsupportedModel:
            raise
        except Exception as e:
            reason = describe(e, self.copy)
            self.undo(saved)
            return reason
        change = self.observed - after
        if saved is None:
            self.kept.append((g.name, drop))
            self.observed = after
        else:
            self.undo(saved)
        return change

    def _observe(self) -> np.ndarray | str:
        """The factors observing the copy gives now, or why they cannot be compared: it no longer runs
        the same layers, or an output changed shape (its channels are the model's output)."""
        calls, shapes, outputs = observe(self.copy, self.example)
        after = np.array(flat(calls + shapes), dtype=np.int64)
        if [c[:2] for c in calls] != [c[:2] for c in self.calls] or len(after) != len(self.observed):
            return CHANGED_LAYERS
        if outputs != self.outputs:
            return CHANGED_OUTPUT
        return after

    def undo(self, saved) -> None:
        """Back to the state before the last removal: restore its modules, or else rebuild the copy."""
        if saved is not None:
            _restore(saved)
            if counts_unchanged(self.graph):
                return
        self._rebuild()


def _snapshot(items) -> list | None:
    """The state of every module Torch-Pruning's `items` will touch (None if one is a bare parameter,
    which Torch-Pruning re-registers in the graph itself: that cannot be undone by restoring modules)."""
    saved, seen = [], set()
    for item in items:
        m = item.dep.target.module
        if isinstance(m, nn.Parameter):
            return None
        if id(m) not in seen:
            seen.add(id(m))
            saved.append((m, {k: copy.copy(v) if isinstance(v, (dict, list)) else v for k, v in vars(m).items()}))
    return saved


def _restore(saved: list) -> None:
    for m, state in saved:
        vars(m).clear()
        vars(m).update(state)


def producers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, set[int]]]:
    """Per counted call, in forward order: (its layer's name, the indices of the counted calls whose
    outputs reach its input through uncounted operations only: an addition, a concatenation, an
    in-place activation), from one forward pass with autograd recording, walked back from the
    input's grad_fn to the nearest counted call's output."""
    names = {m: n for n, m in model.named_modules()}
    made_by: dict[int, int] = {}                 # id(grad_fn of a counted call's output) -> the call's index
    alive: list = []                             # those grad_fns, kept so that no id is reused
    found: list[tuple[str, set[int]]] = []

    def hook(m, inp, out):
        feeding = _upstream(inp[0].grad_fn, made_by, exclude=out) if inp and isinstance(inp[0], torch.Tensor) else set()
        found.append((names[m], feeding))
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made_by[id(out.grad_fn)] = len(found) - 1
            alive.append(out.grad_fn)

    hooks = [m.register_forward_hook(hook) for m in counted_layers(model)]
    try:
        with torch.enable_grad():
            model(example.detach().requires_grad_(False))
    finally:
        for h in hooks:
            h.remove()
    return found


def _upstream(fn, made_by: dict[int, int], exclude: torch.Tensor, limit: int = 2000) -> set[int]:
    """The counted calls nearest upstream of autograd node `fn` (the input's own producer
    first: an in-place activation's input is already its output, so `exclude`'s grad_fn is skipped)."""
    own = getattr(exclude, "grad_fn", None)
    found, todo, seen = set(), [fn], set()
    while todo and len(seen) < limit:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if fn is not own and id(fn) in made_by:
            found.add(made_by[id(fn)])
            continue
        todo += [next_fn for next_fn, _ in fn.next_functions]
    return found


def compatible_batches(plans: list[tuple[Group, object]], exclusive: dict[int, set] | None = None) -> list[list]:
    """(group, plan) pairs in batches, first fit in order, where a layer two plans touch is touched the
    same way by both (the same Torch-Pruning handlers: both remove its input channels, say), so that its
    factors' change can be shared among them by indices. exclusive: {id(group): layers it touches
    alone in any batch}."""
    batches: list[tuple[dict, list]] = []
    for g, plan in plans:
        ways = {layer: frozenset(counts) for layer, counts in plan[1].items()}
        ways.update({layer: id(g) for layer in (exclusive or {}).get(id(g), ())})
        home = next((b for b in batches if all(b[0].get(layer, way) == way for layer, way in ways.items())), None)
        if home is None:
            home = ({}, [])
            batches.append(home)
        home[0].update(ways)
        home[1].append((g, plan))
    return [b[1] for b in batches]
