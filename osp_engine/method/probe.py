"""The cost probe: remove one unit of each group from a copy of the model and watch what changes.

Every dimension the FLOPs counter multiplies (flops.py) is read before and after each removal; the
change is that group's coefficient. A removal that breaks the forward pass (a split with sizes fixed
in the model's code, a reshape to a fixed channel count, a residual added to part of the channels) or
changes which layers run, or changes the shape of one of the model's outputs (its channels are the
output, as a detector head's last convolution's are), marks the group KEPT WHOLE: the removal is
undone, the group is never pruned, and its channels stay constants of the cost model. The reason names the layer and the line
of its code that failed (failure.describe).

One copy serves all groups, each probed from the same state and every removal undone (probecopy.py);
groups touching each layer they share the same way are removed together and observed in one forward
pass, a shared factor's change divided among them by the channels each removed there. Every factor
is linear in the group counts, so a coefficient does not depend on which other units are gone (the
cost check of randomly pruned copies confirms it).
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
from torch import nn

from .flops import CostModel, cost_model
from .groups import Group, KeptWhole, UnsupportedModel
from .probecopy import ProbeCopy, compatible_batches


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


def probe_groups(model: nn.Module, groups: list[Group], example: torch.Tensor,
                 progress: Callable[[int, int], None] | None = None) -> Probe:
    """Probe every group of `model` (not touched; example: a batch of one). progress(done, total) as it goes."""
    probe = ProbeCopy(model, example)
    result = Probe(probe.layout, probe.observed.copy(), [dict() for _ in probe.observed])
    probed = [g for g in groups if not g.whole and g.n_units > 1]    # a group of one unit never loses it
    skipped = len(groups) - len(probed)
    change = _changes(probe, probed, lambda done: progress and progress(skipped + done, len(groups)))
    for g in groups:
        delta = change.get(id(g), g.whole)
        if isinstance(delta, str) and delta:
            result.whole.append(KeptWhole(g.name, g.size, delta))
            continue
        g.gid = len(result.prunable)
        result.prunable.append(g)
        if not isinstance(delta, str):
            for f in np.flatnonzero(delta):
                result.coef[f][g.gid] = Fraction(int(delta[f]), g.unit)
    return result


def _changes(probe: ProbeCopy, groups: list[Group], progress: Callable[[int], None]) -> dict[int, np.ndarray | str]:
    """id(group) -> the factors' change removing its unit 0 causes (before - after), or why it must be
    kept whole. Groups that touch a bare parameter go one by one first (their removals stay); the
    others in batches that touch each layer they share the same way, one forward pass each. A layer
    whose change cannot be divided among the groups of a batch that can have caused it is, from then
    on, a layer each of them touches alone; a batch that fails otherwise goes one by one. Planned
    again whenever the copy had to be rebuilt."""
    change: dict[int, np.ndarray | str] = {}
    shared: dict[int, set] = defaultdict(set)          # id(group) -> layers it cannot share with others
    pending = list(groups)
    while pending:
        rebuilds = probe.rebuilds
        plans = [(g, probe.plan(g)) for g in pending]
        change.update({id(g): plan for g, plan in plans if isinstance(plan, str)})
        alone = [g for g, plan in plans if not isinstance(plan, str) and plan[1] is None]
        for g in alone:
            change[id(g)] = probe.remove_unit(g)
        queue = [] if alone else [(g, plan) for g, plan in plans if not isinstance(plan, str)]   # else: plan again
        while queue and probe.rebuilds == rebuilds:
            for batch in compatible_batches(queue, shared):
                if not _observe_batch(probe, batch, change, shared):
                    break                                  # layers to keep apart: batch the rest again
                progress(len(change))
                if probe.rebuilds != rebuilds:
                    break                                  # the copy was rebuilt: plan again
            queue = [(g, plan) for g, plan in queue if id(g) not in change]
        pending = [g for g in pending if id(g) not in change]
    return change


def _observe_batch(probe: ProbeCopy, batch: list, change: dict, shared: dict) -> bool:
    """Probe `batch` (together, or one by one if it cannot be told apart) into `change`; False, and the
    layers its groups must not share added to `shared`, if its changes cannot be divided among them."""
    together = probe.remove_units(batch) if len(batch) > 1 else None
    if isinstance(together, list):
        for layer, ids in together:
            for i in ids:
                shared[i].add(layer)
        return False
    for g, _ in batch:
        change[id(g)] = together[id(g)] if together is not None else probe.remove_unit(g)
    return True


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
