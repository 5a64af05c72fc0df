"""The cost probe: remove one unit of each group in turn from one copy of the model and watch what changes.

Every dimension the FLOPs counter multiplies (flops.py) is read before and after each removal; the
change is that group's coefficient. A removal that breaks the forward pass (a split with sizes fixed
in the model's code, a reshape to a fixed channel count, a residual added to part of the channels) or
changes which layers run marks the group KEPT WHOLE: the removal is undone, the group is never
pruned, and its channels stay constants of the cost model. The reason names the layer and the line
of its code that failed (failure.describe).

One copy serves all groups: a removal is undone by restoring the state of the modules it touched (the
weights Torch-Pruning replaced, the split and concatenation sizes it rewrote), checked by observing
the copy again; where that cannot be done, the copy is rebuilt and the kept removals replayed.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
from torch import nn

from .failure import describe
from .flops import CostModel, cost_model, flat, observe
from .groups import Group, KeptWhole, UnsupportedModel, pruning_group, remove_channels
from .graph import build_graph


@dataclass
class Probe:
    """What the probe saw. layout: per counted call and parameter (name, type, [factor lists]) of the
    dense model; dense: (F,) its factor values; coef[i]: {prunable index: change of factor i per channel}."""
    layout: list
    dense: np.ndarray
    coef: list[dict[int, Fraction]]
    prunable: list[Group] = field(default_factory=list)     # gids renumbered 0..G-1
    whole: list[KeptWhole] = field(default_factory=list)


    def keep_whole(self, indices: set[int], reason: str) -> None:
        """Move the prunable groups at `indices` to the groups kept whole: their counts become constants."""
        renumber, prunable = {}, []
        for i, g in enumerate(self.prunable):
            if i in indices:
                self.whole.append(KeptWhole(g.name, g.size, reason))
            else:
                renumber[i] = g.gid = len(prunable)
                prunable.append(g)
        self.prunable = prunable
        self.coef = [{renumber[k]: v for k, v in c.items() if k in renumber} for c in self.coef]


def _snapshot(tp_group) -> list | None:
    """The state of every module the removal will touch (None if it touches a bare parameter, which
    Torch-Pruning re-registers in the graph itself: that removal cannot be undone by restoring modules)."""
    saved, seen = [], set()
    for item in tp_group.items:
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


class _Copy:
    """The probe's copy of the model with its graph; `undo` returns it to the last accepted state."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model, self.example = model, example
        self.kept: list[tuple[str, list[int]]] = []          # accepted removals, to replay on a rebuild
        self._rebuild()

    def _rebuild(self) -> None:
        self.copy = copy.deepcopy(self.model).eval()
        self.graph = build_graph(self.copy, self.example)
        for name, drop in self.kept:
            remove_channels(self.graph, self.copy.get_submodule(name), drop)

    def remove_unit(self, g: Group, calls: list, before: np.ndarray) -> tuple[np.ndarray | None, str]:
        """Remove unit 0 of `g` (channels 0, n, 2n, ...): (the factors observed after, "") if the model still
        runs the same layers, else (None, why) with the removal undone. before: the factors observed now."""
        drop = list(range(0, g.size, g.n_units))
        saved, reason = None, ""
        try:
            tp_group = pruning_group(self.graph, self.copy.get_submodule(g.name), drop)
            saved = _snapshot(tp_group)
            remove_channels(self.graph, self.copy.get_submodule(g.name), drop, tp_group)
            calls_g, shapes_g = observe(self.copy, self.example)
            after = np.array(flat(calls_g + shapes_g), dtype=np.int64)
            if [c[:2] for c in calls_g] != [c[:2] for c in calls] or len(after) != len(before):
                reason = "removing a channel changes which layers run (the forward depends on the widths)"
        except UnsupportedModel:
            raise
        except Exception as e:
            reason = describe(e, self.copy)
        if not reason:
            self.kept.append((g.name, drop))
            return after, ""
        self.undo(saved, before)
        return None, reason

    def undo(self, saved, expected: np.ndarray) -> None:
        """Back to the state whose observation is `expected`, by restoring modules or else rebuilding."""
        if saved is not None:
            _restore(saved)
            try:
                if np.array_equal(np.array(flat(sum(observe(self.copy, self.example), [])), dtype=np.int64), expected):
                    return
            except Exception:
                pass
        self._rebuild()


def probe_groups(model: nn.Module, groups: list[Group], example: torch.Tensor,
                 progress: Callable[[int, int], None] | None = None) -> Probe:
    """Probe every group of `model` (not touched; example: a batch of one). progress(done, total) after each."""
    probe = _Copy(model, example)
    calls, shapes = observe(probe.copy, example)
    layout = calls + shapes
    before = np.array(flat(layout), dtype=np.int64)
    result = Probe(layout, before.copy(), [dict() for _ in before])
    for i, g in enumerate(groups):
        reason = g.whole
        if not reason and g.n_units > 1:              # a group of one unit never loses it: no coefficient
            after, reason = probe.remove_unit(g, calls, before)
            if not reason:
                for f in np.flatnonzero(after != before):
                    result.coef[f][len(result.prunable)] = Fraction(int(before[f] - after[f]), g.unit)
                before = after
        if reason:
            result.whole.append(KeptWhole(g.name, g.size, reason))
        else:
            g.gid = len(result.prunable)
            result.prunable.append(g)
        if progress is not None:
            progress(i + 1, len(groups))
    return result


def timed_progress(say: Callable[[str], None] | None, what: str, after_s: float = 2.0):
    """A progress(done, total) that says '<what>: done/total (s)' every 2 s once `after_s` has passed."""
    start, last = time.perf_counter(), [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter() - start
        if say is not None and now >= after_s and (now - last[0] >= 2.0 or done == total):
            last[0] = now
            say(f"{what}: {done}/{total} groups probed ({now:.0f} s)")

    return progress


def build_cost_model(model: nn.Module, groups: list[Group], example: torch.Tensor) -> CostModel:
    """The cost model of `groups` (probed on a copy of `model`); UnsupportedModel if one must be kept whole."""
    probe = probe_groups(model, groups, example)
    if probe.whole:
        raise UnsupportedModel(f"group {probe.whole[0].name} must be kept whole: {probe.whole[0].reason}")
    return cost_model(probe)
