"""Torch-Pruning's index mapping, rebuilt only when a channel count has changed.

Every grouping call of Torch-Pruning (`get_pruning_group`) first rebuilds the index mapping of the whole
graph: where each input of a concatenation, split, slice or reshape sits in its output's channels. On a
DenseNet that is most of a plan's time (DenseNet-201: 98 concatenations of up to 49 inputs, one rebuild
0.1 s, a rebuild for each of some 600 groupings). The mapping is a function of the graph's channel
counts alone: the shapes of its layers' weights and buffers and the sizes its concatenations, splits and
slices hold. `remember_mapping(graph)` makes Torch-Pruning skip the rebuild on `graph` while those are
what they were at the last one; any other graph is rebuilt every time, as Torch-Pruning does.

Reading the counts costs a tenth of a rebuild (DenseNet-264d: 11 ms), so they are read again only after
a prune: whatever prunes a remembering graph's model calls `channels_moved(graph)` (groups.py's one
prune path does), and the next grouping compares the counts, rebuilding if they differ.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .tp import tp

_KEY = "_osp_mapping_key"          # attribute of a remembering graph: the channel counts of its last rebuild
_CURRENT = "_osp_mapping_current"  # and: True while nothing was pruned since its counts were last compared
_SIMPLE = (int, bool, list, tuple, type(None))


def remember_mapping(graph: tp.DependencyGraph) -> None:
    """Rebuild `graph`'s index mapping now, and from now on only when its channel counts differ from
    the last rebuild's."""
    _install()
    if hasattr(graph, _KEY):
        delattr(graph, _KEY)
    tp.dependency.index_mapping.update_index_mapping(graph)
    setattr(graph, _KEY, channel_counts(graph))
    setattr(graph, _CURRENT, True)


def channels_moved(graph: tp.DependencyGraph) -> None:
    """Say that `graph`'s model was pruned (or restored): the next grouping compares the channel counts."""
    setattr(graph, _CURRENT, False)


def channel_counts(graph: tp.DependencyGraph) -> list:
    """Everything the index mapping is computed from: per traced node, the shapes of its module's
    parameters and buffers, or the sizes, offsets and bounds an operation's stand-in holds (copied:
    Torch-Pruning edits those lists in place)."""
    key: list = []
    for node in graph.module2node.values():
        m = node.module
        if isinstance(m, nn.Parameter):
            key.append(m.shape)
        elif type(m).__module__ == tp.ops.__name__:          # a traced operation: cat, split, slice, reshape
            key.append([list(v) if isinstance(v, list) else v for k, v in vars(m).items()
                        if k[0] != "_" and isinstance(v, _SIMPLE)])
        elif isinstance(m, nn.Module):
            key.extend(t.shape for t in m._parameters.values() if t is not None)
            key.extend(t.shape for t in m._buffers.values() if t is not None)
            key.append(None)                                 # ends this module's shapes
    return key


def _install() -> None:
    """Wrap Torch-Pruning's `update_index_mapping` once per process; graphs without the key pass through."""
    module = tp.dependency.index_mapping
    if getattr(module.update_index_mapping, "remembers", False):
        return
    module.update_index_mapping = _remembering(module.update_index_mapping)


def _remembering(rebuild: Callable[[tp.DependencyGraph], None]) -> Callable[[tp.DependencyGraph], None]:
    def update_index_mapping(graph: tp.DependencyGraph) -> None:
        if not hasattr(graph, _KEY):
            return rebuild(graph)
        if getattr(graph, _CURRENT, False):
            return
        if channel_counts(graph) != getattr(graph, _KEY):
            rebuild(graph)                       # which may fill in sizes it inferred: remember them after
            setattr(graph, _KEY, channel_counts(graph))
        setattr(graph, _CURRENT, True)
    update_index_mapping.remembers = True
    return update_index_mapping


def counts_unchanged(graph: tp.DependencyGraph) -> bool:
    """True if `graph`'s channel counts are those of its last rebuild (a removal undone in full): its
    mapping is then current again."""
    unchanged = hasattr(graph, _KEY) and channel_counts(graph) == getattr(graph, _KEY)
    setattr(graph, _CURRENT, unchanged)
    return unchanged
