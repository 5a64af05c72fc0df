"""Torch-Pruning's dependency graph, made safe to group and prune.

`build_graph` traces the model and repairs or marks what Torch-Pruning gets wrong on current PyTorch:
split sizes of a `torch.chunk` (and the concatenation offsets inferred from them), fixed channel
slices (both sides kept whole: a partial residual), reshapes across the channel dimension or misread
as flattens, channel shuffles (a reshape, a transpose and a reshape), and grouping calls that would run
for minutes (bounded). Anything it cannot trace is an `UnsupportedModel` with one line naming the
operation.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .failure import first_line
from .mapping import remember_mapping
from .tp import tp


_CUT = "_osp_cuts"                  # attribute of a built graph: {id(node): (node, why it was cut)}


class UnsupportedModel(ValueError):
    """The model cannot be pruned or costed exactly; the message is one line naming the operation."""


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph; an operation it cannot trace is an UnsupportedModel."""
    try:
        with warnings.catch_warnings():          # per-channel parameters (layer scale) are handled as members
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            # the trace keeps the autograd graph (Torch-Pruning reads sizes and dims off its nodes, never a
            # tensor), which would hold every tensor saved for a backward that never comes: activations,
            # a weight-standardised conv's standardised weights (a copy of the model): saved as None
            with torch.autograd.graph.saved_tensors_hooks(_drop, _drop):
                graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
            if _fix_chunk_sizes(graph):
                tp.dependency.index_mapping.update_index_mapping(graph)
            _cut_channel_slices(graph)
            _bound_grouping(graph, GROUPING_BUDGET_S)
            remember_mapping(graph)
            return graph
    except Exception as e:
        raise UnsupportedModel(f"Torch-Pruning cannot trace this model: {_where(e)}") from None


def _drop(tensor: torch.Tensor) -> None:
    """A saved-tensor hook keeping nothing (the traced graph is never run backward)."""
    return None


def channel_slice(node) -> str | None:
    """'[:, a:b]' if `node` takes part of its input's channels with bounds fixed in the model's code
    (x[:, :32] of 48 channels), None for anything else (a whole-range slice is no slice)."""
    grad_fn = getattr(node, "grad_fn", None)
    if node.type != tp.ops.OPTYPE.SLICE or not hasattr(grad_fn, "_saved_self_sym_sizes"):
        return None
    shape = [int(d) for d in grad_fn._saved_self_sym_sizes]
    if len(shape) < 2 or grad_fn._saved_dim not in (1, 1 - len(shape)):
        return None
    start, end, step = int(grad_fn._saved_start), min(int(grad_fn._saved_end), shape[1]), int(grad_fn._saved_step)
    if start == 0 and end >= shape[1] and step == 1:
        return None
    return f"[:, {start}:{end}{'' if step == 1 else f':{step}'}] of {shape[1]} channels"


def _reshaped(node) -> tuple[list[int], list[int]]:
    """(input shape, output shape) of a traced reshape; ([], []) for any other node."""
    grad_fn = getattr(node, "grad_fn", None)
    metadata = getattr(grad_fn, "_input_metadata", ())
    if node.type != tp.ops.OPTYPE.RESHAPE or not hasattr(grad_fn, "_saved_self_sym_sizes") or len(metadata) != 1:
        return [], []
    return [int(d) for d in grad_fn._saved_self_sym_sizes], [int(d) for d in metadata[0].shape]


def channel_reshape(node) -> str | None:
    """'(1, 256, 8, 8) -> (1, 2, 128, 8, 8)' if `node` reshapes a feature map so that dimension 1 no longer
    holds its channels one to one, None for a reshape Torch-Pruning maps right: one that keeps dimension
    1 (squeezing or flattening the spatial ones), flattens everything after the batch (before a linear
    layer), or unflattens a flat vector. Torch-Pruning maps any other as a flatten, wrongly (split
    attention's radix view sends channel c to c // 128), and through several of them (ECA, split
    attention) it multiplies index lists for minutes."""
    shape_in, shape_out = _reshaped(node)
    if len(shape_in) < 2 or len(shape_out) < 2 or shape_in[0] != shape_out[0]:
        return None
    same = math.prod(shape_in[1:]) == math.prod(shape_out[1:])
    flatten = len(shape_out) == 2 and same                             # (1, C, H, W) -> (1, C*H*W)
    unflatten = len(shape_in) == 2 and shape_out[1] > 1 and same       # (1, C*H*W) -> (1, C, H, W)
    if shape_in[1] == shape_out[1] or flatten or unflatten:
        return None
    return f"{tuple(shape_in)} -> {tuple(shape_out)}"


def misread_reshape(node) -> str | None:
    """'(320, 1, 2, 2) -> (1, 320, 2, 2)' if `node` moves elements between the batch dimension and the
    others and Torch-Pruning maps it as a flatten (a stride on its dependencies): a flat vector of the
    batch-1 trace viewed with its elements in dimension 0 (CondConv's kernels computed per sample, (1, N)
    -> (C_out, C_in, k, k)) or channels brought back from dimension 0 to 1 ((C, 1, H, W) -> (1, C, H,
    W)). Through such a mapping a grouping enumerates index lists until its budget runs out. Read from
    the traced graph, before any cut."""
    shape_in, shape_out = _reshaped(node)
    if len(shape_in) < 2 or len(shape_out) < 2:
        return None
    spread = len(shape_in) == 2 and shape_in[0] == 1 and shape_out[0] != 1
    unfolded = shape_in[1] == 1 and shape_out[0] == 1 and shape_in[0] == shape_out[1] > 1
    flatten = tp.dependency.index_mapping._FlattenIndexMapping
    mapped = any(isinstance(dep.index_mapping[0], flatten) for dep in node.dependencies)
    return f"{tuple(shape_in)} -> {tuple(shape_out)}" if (spread or unfolded) and mapped else None


def channel_shuffle(node) -> bool:
    """True if `node` reshapes a feature map and, through element-wise operations only (a transpose
    counts as one for Torch-Pruning), reshapes it again: a channel shuffle (ShuffleNet's view,
    transpose, view). Torch-Pruning maps channels through it as if nothing moved: silently wrong."""
    grad_fn = getattr(node, "grad_fn", None)
    shape = [int(d) for d in getattr(grad_fn, "_saved_self_sym_sizes", ())]
    if node.type != tp.ops.OPTYPE.RESHAPE or len(shape) < 4 or not node.inputs:
        return False
    if shape[0] != 1 or shape[1] < 2:            # not a feature map of the batch-1 trace: a weight or a gain
        return False                             # reshaped (weight standardisation)
    seen, todo = set(), list(node.outputs)
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type == tp.ops.OPTYPE.RESHAPE:
            return True
        if n.type == tp.ops.OPTYPE.ELEMENTWISE:
            todo += n.outputs
    return False


@dataclass
class Cuts:
    """Why a group must be kept whole, by id(node): `feeds` a cut of build_graph's (a fixed channel
    slice, a reshape across the channel dimension), is `fed` by one, or is `inside` a channel shuffle."""
    feeds: dict[int, str]
    fed: dict[int, str]
    inside: dict[int, str]

    def crossed(self, item, graph: tp.DependencyGraph) -> str:
        """Why Torch-Pruning's group `item` belongs to cannot be pruned, or "": its channels are the ones
        a cut takes in (a node feeding it, pruned on its output or passing channels through) or gives
        out (a node fed by it, pruned on its input or passing channels through)."""
        node = item.dep.target
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        through = not _changes_width(node.module)
        if id(node) in self.feeds and (out or through):
            return self.feeds[id(node)]
        if id(node) in self.fed and (not out or through):
            return self.fed[id(node)]
        return self.inside.get(id(node), "")


SHUFFLE = "channels shuffled by a reshape, a transpose and a reshape (a channel shuffle)"


def _changes_width(m) -> bool:
    """True for a layer whose input and output channels are pruned apart: a linear, a convolution but
    a depthwise one (Torch-Pruning removes the same channels on both of its sides)."""
    return isinstance(m, nn.Linear) or isinstance(m, nn.modules.conv._ConvNd) and not (m.groups > 1 and m.groups == m.in_channels)


def cut_reason(node) -> str | None:
    """Why build_graph cuts `node` out of the graph (a fixed channel slice, a reshape across the channel
    dimension or one Torch-Pruning misreads, the first reshape of a channel shuffle), or None: it is not
    cut. Asked of the traced graph, before any cut (a cut node has no dependencies left to read)."""
    where = channel_slice(node)
    if where:
        return f"channels sliced {where} ({op_name(node)})"
    across = channel_reshape(node)
    if across:
        return SHUFFLE if channel_shuffle(node) else f"channels reshaped across dimensions {across} ({op_name(node)})"
    misread = misread_reshape(node)
    if misread:
        return f"elements moved between the batch dimension and the channels {misread} ({op_name(node)})"
    return None


def find_cuts(graph: tp.DependencyGraph) -> Cuts:
    """Every node beside one of build_graph's cuts or inside a channel shuffle, with the reason."""
    cuts = Cuts({}, {}, {})
    for node, reason in getattr(graph, _CUT, {}).values():
        cuts.feeds.update({id(n): reason for n in node.inputs})
        cuts.fed.update({id(n): reason for n in node.outputs})
    cuts.inside.update({id(n): SHUFFLE for n in graph.module2node.values() if channel_shuffle(n)})
    return cuts


def _cut_channel_slices(graph: tp.DependencyGraph) -> None:
    """Detach every fixed channel slice and every reshape across the channel dimension (or misread by
    Torch-Pruning) from the graph, and remember them on it (find_cuts): no group reaches across one,
    and build_groups keeps whole the groups on both of its sides. (Torch-Pruning's mapping through them
    can neither keep the model running nor stay exact, and on ReXNet, ECA, split attention and CondConv
    it enumerates or multiplies index lists for minutes.)"""
    found = {id(node): (node, reason) for node in graph.module2node.values() if (reason := cut_reason(node))}
    for node, _ in found.values():
        for other in node.inputs + node.outputs:
            other.dependencies = [d for d in other.dependencies if d.target is not node]
        node.dependencies = []
    setattr(graph, _CUT, found)


def _fix_chunk_sizes(graph: tp.DependencyGraph) -> bool:
    """Give every channel split traced from torch.chunk (or torch.split by one size) its true part sizes.

    Torch-Pruning reads a split's sizes from autograd attributes that current PyTorch names differently
    for a split by one size (`_saved_split_size`, `_saved_self_sym_sizes`), and falls back to a guess
    that can be wrong ([64, 32] for a chunk of 64 channels in two): its index mapping would then send
    channels to the wrong part. True if any split was corrected (the index mapping must be rebuilt)."""
    fixed = False
    for node in graph.module2node.values():
        grad_fn = getattr(node, "grad_fn", None)
        if node.type != tp.ops.OPTYPE.SPLIT or not hasattr(grad_fn, "_saved_split_size"):
            continue
        shape, size = list(grad_fn._saved_self_sym_sizes), int(grad_fn._saved_split_size)
        if len(shape) < 2 or grad_fn._saved_dim not in (1, 1 - len(shape)) or size <= 0:
            continue
        channels = int(shape[1])
        parts = [size] * (channels // size) + ([channels % size] if channels % size else [])
        if len(parts) != len(node.outputs) or node.module.split_sizes == parts:
            continue
        node.module.split_sizes = parts
        node.module.offsets = [sum(parts[:i]) for i in range(len(parts) + 1)]
        fixed = True
    if fixed:                                    # concatenations inferred their sizes from the wrong guess
        for node in graph.module2node.values():
            if node.type == tp.ops.OPTYPE.CONCAT:
                node.module.concat_sizes = node.module.offsets = None
    return fixed


def _where(e: BaseException) -> str:
    """'operation <Op>: <error>' naming the traced operation Torch-Pruning failed on, for a one-line message."""
    node, tb = None, e.__traceback__
    while tb is not None:                                  # Torch-Pruning's frames hold the node at hand
        node = tb.tb_frame.f_locals.get("node", node)
        tb = tb.tb_next
    error = first_line(e)
    grad_fn = getattr(node, "grad_fn", None)
    if grad_fn is None:
        return error
    op = type(grad_fn).__name__.replace("Backward0", "").replace("Backward1", "")
    hint = " (a reshape that mixes channels, such as a channel shuffle)" if op in ("View", "Reshape", "UnsafeView") else ""
    return f"its operation {op}{hint} fails with {error}"


def op_name(node) -> str:
    """The traced operation of a node, as 'Slice' for SliceBackward0."""
    return type(node.grad_fn).__name__.replace("Backward0", "") if node.grad_fn is not None else str(node.type)


GROUPING_BUDGET_S = 30.0      # one grouping call of Torch-Pruning, at most (seconds)
MAX_INDICES = 10_000_000      # indices one mapping of that call may produce


def _bound_grouping(graph: tp.DependencyGraph, seconds: float) -> None:
    """Make every grouping call on `graph` (`get_pruning_group`: all groups, a probe, a prune) stop after
    `seconds` with a one-line refusal.

    On some graphs (channels reshaped into a sequence and back, as in ECA and global-context blocks)
    Torch-Pruning enumerates index subsets for minutes within one call, or multiplies them through
    reshapes into lists of billions. Each call sets a deadline; every dependency's `is_triggered_by` and
    index mapping, which the traversal calls at each step, looks at the clock, and a mapping that would
    produce more than MAX_INDICES indices stops the call at once."""
    deadline = [float("inf")]
    get_pruning_group = graph.get_pruning_group

    def bounded(*args, **kwargs):
        deadline[0] = time.perf_counter() + seconds
        try:
            return get_pruning_group(*args, **kwargs)
        finally:
            deadline[0] = float("inf")

    def check() -> None:
        if time.perf_counter() > deadline[0]:
            raise UnsupportedModel(f"Torch-Pruning's grouping did not finish in {seconds:g} s (channels "
                                   f"reshaped across dimensions, as in ECA or global-context blocks)")

    def guarded(mapping):                        # a flatten mapping multiplies the indices by its stride
        def mapped(idxs):
            check()
            if not getattr(mapping, "reverse", True) and len(idxs) * getattr(mapping, "_stride", 1) > MAX_INDICES:
                raise UnsupportedModel(f"Torch-Pruning's channel mapping through a reshape grows past {MAX_INDICES:,} "
                                       f"indices (channels reshaped across dimensions, as in global-context blocks)")
            return mapping(idxs)
        mapped.guarded = True
        return mapped

    def watched(dep):                            # the traversal asks this right before it maps the indices,
        is_triggered_by = dep.is_triggered_by    # and each grouping call first resets the mappings: guard them here

        def triggered(fn):
            check()
            dep.index_mapping = [m if m is None or hasattr(m, "guarded") else guarded(m) for m in dep.index_mapping]
            return is_triggered_by(fn)
        return triggered

    graph.get_pruning_group = bounded
    for node in graph.module2node.values():
        for dep in node.dependencies:
            dep.is_triggered_by = watched(dep)
