"""The prunable network: a model with its groups, exact cost model and FLOPs weights, checked.

`prepare_network` is the one door every model goes through (the registry's, a user's nn.Module
through the API or the hooks): it refuses, with one line naming the reason, a model it cannot
prune exactly (attention layers, an operation Torch-Pruning cannot trace, an input it cannot take,
a layer the cost model cannot cost) before anything is written. A group whose removal breaks the
model is kept whole instead (probe.py) and the rest is pruned; every failure on the way, whatever
raised it, becomes such a refusal or such a reason, never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import nn

from .costcheck import CheckFailed, check_cost_model
from .costs import cost_table
from .failure import describe, first_line
from .flops import CostModel, cost_model, count_subclasses, output_shapes
from .groups import Group, KeptWhole, UnsupportedModel, build_groups, find_classifier
from .graph import build_graph
from .latency import LatencyModel
from .probe import Probe, probe_groups, timed_progress
from .selection import TOLERANCE, kept_step, n_protected, round_pruned
from .tp import tp

T = TypeVar("T")
MAX_RECHECKS = 8            # rounds of keeping suspects whole before a model is refused


@dataclass
class Prunable:
    model: nn.Module
    graph: tp.DependencyGraph
    groups: list[Group]
    cost: CostModel
    pi: np.ndarray            # (G,) FLOPs weights of the saliency, by gid
    example: torch.Tensor     # (1, C, H, W) zeros on the model's device
    whole: list[KeptWhole] = field(default_factory=list)   # groups never pruned, and why
    probe: Probe | None = None                # what the probe saw: each layer's widths as maps of the counts
    latency: LatencyModel | None = None       # cost=latency: the table the search sums (running/latency.py)

    def measure(self, cost: str):
        """The quantity the search's target reduces, counts (G,) or (B, G) -> value(s): FLOPs (cost="flops")
        or the latency table's predicted seconds (cost="latency")."""
        if cost == "latency":
            if self.latency is None:
                raise ValueError("cost=latency needs the network's latency table (running/latency.py) first")
            return self.latency.predict
        return self.cost.flops


def attention_layers(model: nn.Module) -> dict[str, str]:
    """{name: type name} of the model's attention layers (outermost only)."""
    found: dict[str, str] = {}
    for name, m in model.named_modules():
        if (isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__) and \
                not any(name.startswith(outer + ".") for outer in found):
            found[name] = type(m).__name__
    return found


def check_convolutional(model: nn.Module, attention: str = "refuse") -> dict[str, str]:
    """Refuse attention models (ViT, Swin, MaxViT): osp prunes convolutional channels, and
    Torch-Pruning's grouping of their heads is neither exact here nor bounded in memory. With
    attention="whole", a convolutional network holding a few attention layers (a YOLO11's C2PSA) is
    taken instead, and the attention layers are returned for `keep_attention_whole`."""
    found = attention_layers(model)
    if found and attention != "whole":
        name, kind = next(iter(found.items()))
        raise UnsupportedModel(f"attention layer {kind} ({name}): vision transformers are not supported, osp "
                               f"prunes the channels of convolutional networks (attention=whole keeps every group "
                               f"that reaches into one whole and prunes the rest)")
    return found


def keep_attention_whole(groups: list[Group], attention: dict[str, str]) -> None:
    """Mark whole every group with a weight inside an attention layer: its heads' reshapes and its
    channel count fixed at construction (heads x head size) are never cut."""
    for g in groups:
        inside = next((a for m in g.members for a in attention if m.layer == a or m.layer.startswith(a + ".")), None)
        if inside is not None and not g.whole:
            g.whole = f"it reaches into attention layer {attention[inside]} ({inside}), kept whole (attention=whole)"


def check_input(model: nn.Module, example: torch.Tensor, num_classes: int | None) -> None:
    """The model must take `example` and return (1, num_classes) logits; with num_classes None, any
    tensors (a tensor, or tuples, lists and dicts of them: a detector's boxes and scores)."""
    shape = "x".join(str(s) for s in example.shape[1:])
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as e:
        raise UnsupportedModel(f"the model cannot take {shape} inputs ({first_line(e)}): "
                               f"use a dataset whose images it accepts") from None
    if num_classes is None:
        other = next((s for s in output_shapes(out) if isinstance(s, str)), None)
        if other is not None:
            raise UnsupportedModel(f"the model returns a {other} among its outputs for one {shape} input: "
                                   f"osp needs tensors, or tuples, lists and dicts of them")
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UnsupportedModel(f"the model returns {got} for one {shape} input, not (1, {num_classes}) logits")


def _step(what: str, model: nn.Module, fn: Callable[[], T]) -> T:
    """fn(), with any failure but a refusal turned into one: 'while <what>: <layer>: <code> fails with ...'."""
    try:
        return fn()
    except UnsupportedModel:
        raise
    except Exception as e:
        raise UnsupportedModel(f"{what} failed: {describe(e, model)}") from None


def prepare_network(model: nn.Module, num_classes: int | None, example: torch.Tensor, variant: str,
                    checks: int = 2, say: Callable[[str], None] | None = None, attention: str = "refuse") -> Prunable:
    """Groups, cost model (checked against Torch-Pruning's counter `checks` times) and pi for `model`.

    num_classes: the logits' size, whose classifier is never pruned; None for a model whose output is not
    logits (a detector): every group whose removal would change an output's shape is kept whole instead.

    example: (1, C, H, W) on the model's device; say(line): progress when the probe takes over 2 s.
    UnsupportedModel (one line) if it cannot be pruned exactly; never another exception. The model is
    traced in eval mode and left in the train / eval mode of each module as it came (a loop that set
    train() before attaching must not train with frozen BatchNorm statistics). attention: Config.attention.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        return _prepare(model, num_classes, example, variant, checks, say, attention)
    finally:
        for m, training in modes:
            m.training = training


def _prepare(model: nn.Module, num_classes: int | None, example: torch.Tensor, variant: str, checks: int,
             say: Callable[[str], None] | None, attention: str) -> Prunable:
    layers = check_convolutional(model, attention)
    _step("checking the model", model, lambda: check_input(model, example, num_classes))
    count_subclasses(model)
    graph = build_graph(model, example)
    classifier = None if num_classes is None else find_classifier(model, num_classes)
    groups = _step("grouping channels", model, lambda: build_groups(model, graph, classifier))
    keep_attention_whole(groups, layers)
    if not any(g.n_units > 1 for g in groups):
        raise UnsupportedModel("the model has no channel group that can lose a channel: nothing to prune")
    probe = _step("probing the groups", model,
                  lambda: probe_groups(model, groups, example, timed_progress(say, "preparing the network")))
    if not any(g.n_units > 1 for g in probe.prunable):
        first = probe.whole[0]
        raise UnsupportedModel(f"every group that could lose a channel must be kept whole ({len(probe.whole)}; "
                               f"the first, {first.name}: {first.reason})")
    cost = _checked_cost(model, probe, example, checks)
    _, pi = _step("weighting the groups", model,
                  lambda: cost_table(model, probe.prunable, cost, example, variant, probe.whole))
    return Prunable(model, graph, probe.prunable, cost, pi, example, probe.whole, probe)


def _checked_cost(model: nn.Module, probe: Probe, example: torch.Tensor, checks: int) -> CostModel:
    """The cost model, checked on `checks` randomly pruned copies; groups a failed check points at are
    kept whole and the check repeated (at most MAX_RECHECKS times), else the model is refused."""
    for _ in range(MAX_RECHECKS + 1):
        cost = _step("costing the groups", model, lambda: cost_model(probe))
        if not checks:
            return cost
        try:
            _step("checking the cost model", model,
                  lambda: check_cost_model(model, probe.prunable, cost, example, trials=checks))
            return cost
        except CheckFailed as e:
            if not e.suspects or len(e.suspects) == len(probe.prunable):
                raise UnsupportedModel(str(e)) from None
            probe.keep_whole(e.suspects, str(e))
    raise UnsupportedModel(f"the cost model still disagrees with Torch-Pruning after keeping "
                           f"{len(probe.whole)} groups whole: {probe.whole[-1].reason}")


def max_reduction(net: Prunable, l_max: float, l_k: float, round_to: int = 0, cost: str = "flops") -> float:
    """The largest fraction of the dense FLOPs (cost="latency": of the predicted latency) the search can
    remove: every prunable group down to its floor (selection.n_protected units; with round_to, the next
    multiple of it), the groups kept whole untouched."""
    units, sizes = net.cost.units, net.cost.sizes
    total = sizes // units
    floor = np.array([n_protected(int(t), l_max, l_k) for t in total], dtype=np.int64)   # kept units
    floor = total - round_pruned(total - floor, total, kept_step(units, round_to))
    measure = net.measure(cost)
    return 1.0 - measure(floor * units) / measure(sizes)


def check_target(net: Prunable, target: float, l_max: float, l_k: float, round_to: int = 0,
                 cost: str = "flops") -> None:
    """UnsupportedModel if `target` is beyond what the prunable groups can remove (within the search's tolerance)."""
    reachable = max_reduction(net, l_max, l_k, round_to, cost)
    if cost == "latency" and reachable < 0.01:
        raise UnsupportedModel(f"pruning cannot lower this network's predicted latency ({1e3 * net.latency.dense:.3f} "
                               f"ms): it is the runtime's own work, or timing noise, at this size; use cost=flops")
    if target > reachable + TOLERANCE:
        kept = f", {len(net.whole)} groups kept whole" if net.whole else ""
        kept += f", round_to={round_to}" if round_to > 1 else ""
        what = "the predicted latency" if cost == "latency" else "the FLOPs"
        tiny = "" if cost != "latency" or net.latency.dense >= 1e-4 else \
            (f"; at {1e3 * net.latency.dense:.3f} ms the runtime's own work and timing noise dominate this network's "
             f"latency, cost=flops suits it")
        raise UnsupportedModel(f"target {target:g} cannot be reached: at most {reachable:.4f} of {what} can go "
                               f"(per-layer floors l_max={l_max:g}, l_k={l_k:g}{kept}): set target <= {reachable:.3f}"
                               + tiny)


def kept_whole_note(net: Prunable) -> str:
    """', k kept whole' for a run's start line, or nothing."""
    return f", {len(net.whole)} kept whole" if net.whole else ""
