"""Coupled channel groups with their weight slices, from Torch-Pruning's DependencyGraph.

A `Group` is the set of channels that must go together (docs/method.md, 'Groups'): its producing
layers' output filters, its norms, per-channel scales, the input slices of every consumer, across
residual adds and concatenations. Channel j of a group is its ORIGINAL channel id j (the root
layer's output index at build time), so masks stay comparable epoch to epoch. Each `Member` is one
weight tensor's slice family that saliency reads and the shrink scales: exactly the weight slices
Torch-Pruning's group would remove (biases are removed with them but neither read nor shrunk, as in
the official code).

Channels go in units of `Group.unit` channels, kept or removed whole, laid out one of two ways
(`unit_index`):
- interleaved: where a grouped convolution sits in the group, Torch-Pruning can only remove the same
  local channel from every one of its `unit` channel groups, so unit j is the channel set
  {j + (C / unit) * k : k < unit}. A `torch.chunk` of the group's channels into n equal parts works the
  same way: one channel at the same offset of every part goes at once, so the parts stay equal.
- blocked: where a GroupNorm (of more than one norm group) sits in the group and nothing asks for
  interleaving, unit j is channels [j * unit, (j + 1) * unit), whole norm groups of every GroupNorm,
  and pruning it lowers their num_groups (`_prune_items`). The norm groups left keep their statistics,
  so the pruned model computes what the dense one computes without those channels. Where the norm
  groups do not align with the group's channels, the layout falls back to interleaved (one channel of
  every norm group goes at once, as Torch-Pruning prunes a GroupNorm).

A group whose one-unit removal breaks the model (a split with sizes fixed in its code, a reshape to
a fixed channel count, a residual added to part of the channels) is not pruned at all: the cost
probe (probe.py) keeps it whole and records why as a `KeptWhole`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .graph import UnsupportedModel, find_cuts
from .mapping import channels_moved
from .tp import tp

PRODUCER, CONSUMER, NORM = "producer", "consumer", "norm"


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Member:
    """One weight slice family of a group.

    weight: the parameter; dim: the dimension its slices run along; fan: elements in one channel's
    slice before scaling (producer n_d = C_in*k*k, consumer m_d = C_out*k*k, times the slices per
    channel for a flatten into a Linear; 1 for a norm's gamma); param_index[i] is the index along
    `dim` that carries group channel group_index[i] (both (n,) int64, on the weight's device; a
    channel may own several indices, e.g. 49 columns of a Linear after a 7x7 flatten).
    conv_groups > 1 marks a grouped convolution's input slices: param_index is then the input
    channel number, its slice is the local column (param_index % (C_in / conv_groups)) restricted to
    the rows of its own conv group.
    """
    layer: str
    kind: str
    weight: nn.Parameter
    dim: int
    fan: int
    param_index: torch.Tensor
    group_index: torch.Tensor
    conv_groups: int = 1

    @property
    def shrink_index(self) -> torch.Tensor:
        """(n,) index along `dim` that the shrink scales for each of param_index."""
        if self.conv_groups == 1:
            return self.param_index
        return self.param_index % self.weight.shape[self.dim]


@dataclass
class Group:
    gid: int
    name: str                 # the root layer's name
    size: int                 # C_g, channels at build time
    members: list[Member]
    root: nn.Module
    layers: list[str]         # names of layers whose OUTPUT channels are this group (producers, norms)
    tp_rank: int = 0          # position in Torch-Pruning's own group order (the official cost table uses it)
    unit: int = 1             # channels per removable unit (1, the conv groups of a grouped conv, a norm group's channels)
    blocked: bool = False     # units are contiguous channel blocks (whole norm groups), not interleaved
    whole: str = ""           # why the group must be kept whole, when its structure alone says so
    listed_root: str = ""     # root of entry tp_rank of Torch-Pruning's list of ALL groups, the classifier's
                              # included: the group whose cost the official table gives this one (costs.py)

    @property
    def n_units(self) -> int:
        return self.size // self.unit

    def unit_of(self) -> torch.Tensor:
        """(C_g,) int64: the unit of every channel (`unit_index`)."""
        return torch.from_numpy(unit_index(self.size, self.unit, self.blocked))


def unit_index(size: int, unit: int, blocked: bool) -> np.ndarray:
    """(size,) int64: the unit of each of a group's channels, units of `unit` channels: c // unit when
    blocked (contiguous), else c % (size / unit) (interleaved: one channel at the same offset of every
    part of size / unit channels)."""
    channels = np.arange(size, dtype=np.int64)
    return channels // unit if blocked else channels % (size // unit)


@dataclass(frozen=True)
class KeptWhole:
    """A group that is never marked, shrunk or pruned: its channels stay and still count in the FLOPs."""
    name: str                 # the root layer's name
    size: int                 # its channels
    reason: str               # one line: the layer and operation that break when it loses a unit


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, _CONVS) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def find_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """The last conv/linear whose output size is num_classes: never pruned (docs/method.md)."""
    found = None
    for m in model.modules():
        out = getattr(m, "out_features", None) or getattr(m, "out_channels", None)
        if isinstance(m, (nn.Linear,) + _CONVS) and out == num_classes:
            found = m
    if found is None:
        raise UnsupportedModel(f"no classifier with {num_classes} outputs found in the model: its last "
                               f"Linear or conv must output one value per class")
    return found


def _weight_member(name: str, m: nn.Module, is_out: bool, pidx, gidx, size: int) -> Member | None:
    """The member for one Torch-Pruning item on a module with a weight, or None if it has none."""
    w = getattr(m, "weight", None)
    if not isinstance(w, nn.Parameter):
        return None
    if w.dim() == 1 or isinstance(m, _NORMS):
        return Member(name, NORM, w, w.dim() - 1, 1, pidx, gidx)
    transposed = getattr(m, "transposed", False)
    dim = (1 if transposed else 0) if is_out else (0 if transposed else 1)
    per_channel = len(pidx) // size if len(pidx) % size == 0 else 1
    fan = w.numel() // w.shape[dim] * per_channel
    if not is_out and isinstance(m, _CONVS) and m.groups > 1:
        if is_depthwise(m):
            return None                                    # a depthwise conv rides along as a producer
        return Member(name, CONSUMER, w, dim, fan // m.groups, pidx, gidx, conv_groups=m.groups)
    return Member(name, PRODUCER if is_out else CONSUMER, w, dim, fan, pidx, gidx)


def _equal_parts(item, size: int) -> int:
    """n if this item is a split of ALL the group's channels, in their own order, into n equal parts
    (torch.chunk, or torch.split by C / n); else 1."""
    sizes = getattr(item.dep.target.module, "split_sizes", None)
    if item.dep.target.type != tp.ops.OPTYPE.SPLIT or not sizes or len(sizes) < 2 or len(set(sizes)) != 1:
        return 1
    if sum(sizes) != size or sorted(item.idxs) != sorted(item.root_idxs):
        return 1
    return len(sizes)


def _layout(tp_group, size: int) -> tuple[int, bool]:
    """(channels per unit, blocked) of a group: interleaved units of the lcm of the channel groupings
    Torch-Pruning must respect (grouped convs, equal parts of a chunk, GroupNorms), unless GroupNorms
    are the only ones and their norm groups align with the group's channels: then blocked units of
    whole norm groups (`_norm_block`)."""
    unit, norms = 1, []
    for item in tp_group.items:
        m = item.dep.target.module
        if isinstance(m, _CONVS) and m.groups > 1 and not is_depthwise(m):
            unit = math.lcm(unit, m.groups)
        elif isinstance(m, nn.GroupNorm):
            if m.num_groups > 1:                               # one norm group: any channel may go
                norms.append(item)
        else:
            unit = math.lcm(unit, _equal_parts(item, size))
    if norms and unit == 1 and (block := _norm_block(norms, size)):
        return block, True
    return math.lcm(unit, *(item.dep.target.module.num_groups for item in norms)), False


def _norm_block(norms: list, size: int) -> int:
    """Channels per unit when units of that many contiguous channels of the group are whole norm groups
    of every GroupNorm in `norms` (Torch-Pruning's items): each norm group the group reaches lies in one
    unit and has all its channels in the group. 0 when there is no such unit or it would be the group."""
    per = [item.dep.target.module.num_channels // item.dep.target.module.num_groups for item in norms]
    block = math.lcm(*per)
    if size % block or block == size:
        return 0
    for item, n in zip(norms, per):
        if any(r is None for r in item.root_idxs):
            return 0
        norm_group = np.asarray(item.idxs, dtype=np.int64) // n           # (reached channels,) in the norm
        unit = np.asarray(item.root_idxs, dtype=np.int64) // block         # the same channels' blocked units
        reached = np.unique(norm_group)
        pairs = np.unique(np.stack([norm_group, unit]), axis=1)            # (2, distinct (norm group, unit))
        if (np.bincount(norm_group)[reached] != n).any() or pairs.shape[1] != len(reached):
            return 0
    return block


def build_groups(model: nn.Module, graph: tp.DependencyGraph, classifier: nn.Module | None) -> list[Group]:
    """Every prunable group of `model`, in forward order, with members for saliency and shrink.

    One pass over Torch-Pruning's list of all groups: those with the classifier among the layers that
    lose output channels are not prunable (as Torch-Pruning's `ignored_layers` drops them), but their
    places in the list are what the official cost table reads (`listed_root`). No classifier (a model
    whose output is not logits): every group is listed here, and the probe keeps whole those that
    reach an output."""
    names = {m: n for n, m in model.named_modules()}
    params = {p: n for n, p in model.named_parameters()}
    unwrapped = {p: d for p, d in graph.unwrapped_parameters}
    cuts = find_cuts(graph)
    groups: list[Group] = []
    listed: list[str] = []                                   # every group's root, in Torch-Pruning's order
    for tp_group in graph.get_all_groups(root_module_types=ROOT_TYPES):
        root = tp_group.items[0].dep.target.module
        listed.append(names.get(root, "?"))
        if classifier is not None and any(item.dep.target.module is classifier for item in tp_group.items
                                          if graph.is_out_channel_pruning_fn(item.dep.handler)):
            continue
        size = len(tp_group.items[0].idxs)
        members: list[Member] = []
        layers: list[str] = []
        unmapped = ""                                        # a layer whose channels Torch-Pruning cannot trace back
        for item in tp_group.items:
            m = item.dep.target.module
            if any(r is None for r in item.root_idxs):
                unmapped = unmapped or f"Torch-Pruning cannot map the channels of {item.dep.target.name} to the group's"
                continue
            is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
            dev = next((p.device for p in m.parameters()), None) if isinstance(m, nn.Module) else m.device
            pidx = torch.tensor(item.idxs, dtype=torch.long, device=dev)
            gidx = torch.tensor(item.root_idxs, dtype=torch.long, device=dev)
            if isinstance(m, nn.Parameter):                  # an unwrapped per-channel scale (layer scale)
                if m in unwrapped and m.requires_grad:
                    members.append(Member(params.get(m, "?"), NORM, m, unwrapped[m] % m.dim(), 1, pidx, gidx))
                continue
            if m not in names:
                continue                                     # traced functional ops carry no weights
            member = _weight_member(names[m], m, is_out, pidx, gidx, size)
            if member is not None:
                members.append(member)
            if is_out:                                       # a weight-standardised conv's gain
                members += [Member(f"{names[m]}.{n}", NORM, getattr(m, n), 0, 1, pidx, gidx)
                            for n in channel_parameters(m)]
            if is_out and (member is not None or isinstance(m, _NORMS)):
                layers.append(names[m])
        whole = next((why for item in tp_group.items if (why := cuts.crossed(item, graph))), unmapped)
        group = Group(0, names.get(root, "?"), size, members, root, layers, len(groups), *_layout(tp_group, size), whole)
        group.whole = group.whole or _unit_problem(group)
        groups.append(group)
    for g in groups:
        g.listed_root = listed[g.tp_rank]
    order = {m: i for i, m in enumerate(model.modules())}
    groups.sort(key=lambda g: order.get(g.root, len(order)))   # input-to-output order, for the views
    for gid, g in enumerate(groups):
        g.gid = gid
    return groups


def _unit_problem(group: Group) -> str:
    """Why `group` cannot go in units (then it is kept whole), or "": every unit must map to one local
    slice of each grouped consumer, or the prune would be wrong."""
    if group.size % group.unit:
        return f"group of {group.name} has {group.size} channels, not a multiple of its {group.unit} channel groups"
    units = group.unit_of()
    for mem in group.members:
        if mem.conv_groups > 1:
            local = mem.shrink_index.cpu()
            unit = units[mem.group_index.cpu()]
            if not torch.equal(local, unit % mem.weight.shape[mem.dim]):
                return (f"grouped convolution {mem.layer} reads channels of {group.name} that are not aligned "
                        f"with its {mem.conv_groups} groups")
    return ""


def expand_units(group: Group, keep_units: torch.Tensor) -> torch.Tensor:
    """(C_g,) bool over channels from (n_units,) bool over units."""
    return keep_units[group.unit_of().to(keep_units.device)]


def channel_parameters(m: nn.Module) -> list[str]:
    """Names of a convolution's per-output-channel parameters beyond weight and bias (a weight-standardised
    conv's gain, (C_out, 1, 1, 1)): Torch-Pruning does not slice them, `remove_channels` does."""
    if not isinstance(m, _CONVS) or type(m) in _CONVS:
        return []
    return [n for n, p in m.named_parameters(recurse=False)
            if n not in ("weight", "bias") and p.dim() >= 1 and p.shape[0] == m.out_channels and p.numel() == m.out_channels]


def pruning_group(graph: tp.DependencyGraph, root: nn.Module, drop: list[int]):
    """Torch-Pruning's group removing output channels `drop` of `root` (and everything coupled to them)."""
    return graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs=drop)


def remove_channels(graph: tp.DependencyGraph, root: nn.Module, drop: list[int], group=None) -> None:
    """Remove output channels `drop` of `root` with Torch-Pruning, and slice the per-channel parameters
    it leaves whole (`channel_parameters`) with the same indices. group: `pruning_group`'s, if at hand."""
    remove_together(graph, [(root, list(drop))], [group if group is not None else pruning_group(graph, root, drop)])


def remove_together(graph: tp.DependencyGraph, removals: list[tuple[nn.Module, list[int]]], groups=None) -> None:
    """Remove output channels `drop` of every `root` of disjoint groups at once: every coupled layer is
    sliced once, with the union of its indices, all numbered as before anything was removed. The same
    channels go as removing group after group, without rebuilding Torch-Pruning's index mapping after
    each (on a DenseNet each rebuild costs as much as the prune). History as `remove_channels` records it.
    groups: `pruning_group`'s for each removal, if at hand (every removal non-empty)."""
    if groups is None:
        removals = [(root, list(drop)) for root, drop in removals if len(drop)]
        groups = [pruning_group(graph, root, drop) for root, drop in removals]
    _prune_items(graph, [item for group in groups for item in group.items])
    graph._pruning_history += [[graph._module2name[root], True, drop] for root, drop in removals]


def _prune_items(graph: tp.DependencyGraph, items: list) -> None:
    """Apply Torch-Pruning's pruning items, indices merged per (layer, handler), then slice the gains."""
    merged: dict = {}
    for item in items:
        merged.setdefault((item.dep.target, item.dep.handler), (item.dep, set()))[1].update(item.idxs)
    group = tp.dependency.Group()
    group._DG = graph
    for dep, idxs in merged.values():
        group.add_dep(dep, sorted(idxs))
    extras = [(dep.target.module, channel_parameters(dep.target.module), idxs)
              for dep, idxs in merged.values() if graph.is_out_channel_pruning_fn(dep.handler)]
    extras = [(m, names, sorted(set(range(m.out_channels)) - idxs)) for m, names, idxs in extras if names]
    norms = {id(dep.target.module): (dep.target.module, idxs) for dep, idxs in merged.values()
             if isinstance(dep.target.module, nn.GroupNorm)}
    lowered = [(m, whole) for m, idxs in norms.values() if (whole := _whole_norm_groups(m, idxs))]
    try:
        group.prune(record_history=False)             # the history names each group's root: the callers
        for m, whole in lowered:                      # Torch-Pruning keeps num_groups: the rest stay whole
            m.num_groups -= whole
        for m, names, kept in extras:
            for name in names:
                p = getattr(m, name)
                rows = torch.tensor(kept, dtype=torch.long, device=p.device)
                setattr(m, name, nn.Parameter(p.data.index_select(0, rows), requires_grad=p.requires_grad))
    finally:
        channels_moved(graph)                         # even half done: the next grouping reads the counts


def _whole_norm_groups(norm: nn.GroupNorm, idxs: set[int]) -> int:
    """How many norm groups of `norm` removing channels `idxs` removes whole, when it removes only whole
    norm groups and not all of them; else 0 (one channel of every norm group: num_groups stays)."""
    per = norm.num_channels // norm.num_groups
    removed = np.bincount(np.fromiter(idxs, dtype=np.int64) // per, minlength=norm.num_groups)
    if norm.num_groups == 1 or not removed.any() or not np.isin(removed, (0, per)).all() or removed.all():
        return 0
    return int(removed.sum()) // per


def prune_groups(graph: tp.DependencyGraph, groups: list[Group], keep: list[torch.Tensor]) -> None:
    """Physically remove every channel not kept. keep[g]: (C_g,) bool over original ids, whole units."""
    remove_together(graph, [(g.root, torch.nonzero(~kept.cpu()).flatten().tolist()) for g, kept in zip(groups, keep)])
