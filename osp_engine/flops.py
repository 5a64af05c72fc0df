"""FLOPs and parameters of any channel assignment, computed from counts (no copies, no trial prunes).

Every layer Torch-Pruning's counter sees costs a*C_in*C_out + b*C_out + c*C_in + d, where C_in and
C_out are either a group's channel count or a constant. With x = [c_1, ..., c_G, 1] the whole model is
the quadratic form F(x) = x^T Q x, exact in int64. `CostModel.flops(counts)` equals
`tp.utils.count_ops_and_params` (batch 1, MACs) on the physically pruned model; so do the params.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .groups import Group

_ACTS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.GELU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS = _ACTS + _POOLS
_NORM = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class CostModel:
    """flops_q, params_q: (G+1, G+1) int64; index G is the constant 1. sizes: (G,) dense counts."""
    flops_q: np.ndarray
    params_q: np.ndarray
    sizes: np.ndarray

    def _eval(self, q: np.ndarray, counts: np.ndarray) -> np.ndarray:
        c = np.atleast_2d(np.asarray(counts, dtype=np.int64))                  # (B, G)
        x = np.concatenate([c, np.ones((c.shape[0], 1), dtype=np.int64)], 1)   # (B, G+1)
        return np.einsum("bi,ij,bj->b", x, q, x)

    def flops(self, counts) -> np.ndarray | int:
        """Multiply-accumulates for counts (G,) -> int, or (B, G) -> (B,) int64."""
        out = self._eval(self.flops_q, counts)
        return int(out[0]) if np.ndim(counts) == 1 else out

    def params(self, counts) -> np.ndarray | int:
        out = self._eval(self.params_q, counts)
        return int(out[0]) if np.ndim(counts) == 1 else out

    @property
    def dense_flops(self) -> int:
        return self.flops(self.sizes)

    @property
    def dense_params(self) -> int:
        return self.params(self.sizes)

    def cost_per_channel(self) -> np.ndarray:
        """cost_g: FLOPs saved per channel removed from g alone (all but one removed, / (C_g - 1))."""
        dense = self.dense_flops
        out = np.zeros(len(self.sizes), dtype=np.float64)
        for g, c in enumerate(self.sizes):
            if c > 1:
                counts = self.sizes.copy()
                counts[g] = 1
                out[g] = (dense - self.flops(counts)) / (c - 1)
        return out


def _trace(model: nn.Module, example: torch.Tensor):
    """Run one batch-1 forward, recording every counted layer call and autograd producers.

    Returns calls [(module, input shape, output shape, input grad_fn)] and a map from an output's
    grad_fn to the grouped-output module that produced it.
    """
    calls, produced, keep_alive = [], {}, []
    hooks = []

    def pre(m, inp):
        keep_alive.append(inp[0].grad_fn)
        calls.append([m, tuple(inp[0].shape), None, inp[0].grad_fn])

    def post(m, inp, out):
        for call in reversed(calls):
            if call[0] is m and call[2] is None:
                call[2] = tuple(out.shape)
                break
        if out.grad_fn is not None and isinstance(m, (nn.Conv2d, nn.Linear, _NORM)):
            keep_alive.append(out.grad_fn)
            produced[out.grad_fn] = m

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, _NORM) + _PASS):
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.enable_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return calls, produced


def _upstream_module(grad_fn, produced: dict) -> nn.Module | None:
    """Breadth-first through channel-preserving autograd nodes to the nearest recorded producer."""
    frontier, seen = [grad_fn], set()
    while frontier:
        node = frontier.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            return produced[node]
        frontier.extend(nf for nf, _ in node.next_functions)
    return None


def build_cost_model(model: nn.Module, groups: list[Group], example: torch.Tensor) -> CostModel:
    """The quadratic forms for FLOPs and params of `model` over its groups (example: batch 1)."""
    if example.shape[0] != 1:
        raise ValueError("trace with a batch of one")
    G = len(groups)
    out_group: dict[nn.Module, int] = {}
    in_group: dict[nn.Module, int] = {}
    for g in groups:
        for mem in g.members:
            mod = _module_of(model, mem.layer)
            if mem.kind == "consumer":
                in_group[mod] = g.gid
            else:
                out_group[mod] = g.gid
    calls, produced = _trace(model, example)
    fq = np.zeros((G + 1, G + 1), dtype=np.int64)
    pq = np.zeros((G + 1, G + 1), dtype=np.int64)
    one = G

    def var(group: int | None, const: int) -> tuple[int, int]:
        return (group, 1) if group is not None else (one, const)   # (x index, multiplier)

    def add(q, coef, a, b):
        (i, ka), (j, kb) = a, b
        q[i, j] += int(coef) * ka * kb

    for m, ishape, oshape, gfn in calls:
        if isinstance(m, nn.Conv2d):
            k = int(np.prod(m.kernel_size))
            hw = int(np.prod(oshape[2:]))
            cout = var(out_group.get(m), m.out_channels)
            if m.groups == 1:
                cin = var(in_group.get(m), m.in_channels)
                add(fq, k * hw, cin, cout)
            elif m.groups == m.in_channels == m.out_channels:
                add(fq, k * hw, cout, (one, 1))                     # depthwise: C*k*k*HW
            else:
                raise ValueError(f"grouped conv {m} is not supported by the FLOPs model")
            if m.bias is not None:
                add(fq, hw, cout, (one, 1))
        elif isinstance(m, nn.Linear):
            rest = int(np.prod(ishape)) // ishape[-1]
            cin, cout = var(in_group.get(m), m.in_features), var(out_group.get(m), m.out_features)
            add(fq, rest, cin, cout)
            if m.bias is not None:
                add(fq, 1, cout, (one, 1))
        elif isinstance(m, _NORM):
            c = var(out_group.get(m), ishape[1])
            add(fq, (2 if m.affine else 1) * int(np.prod(ishape[2:])), c, (one, 1))
        else:
            src = _upstream_module(gfn, produced)
            c = var(out_group.get(src) if src is not None else None, ishape[1])
            shape = oshape if isinstance(m, _ACTS) else ishape         # the counter's own choice
            add(fq, int(np.prod(shape[2:])), c, (one, 1))

    modelled = set()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            cout = var(out_group.get(m), m.out_channels)
            k = int(np.prod(m.kernel_size))
            if m.groups == 1:
                add(pq, k, var(in_group.get(m), m.in_channels), cout)
            else:
                add(pq, k, cout, (one, 1))
        elif isinstance(m, nn.Linear):
            add(pq, 1, var(in_group.get(m), m.in_features), var(out_group.get(m), m.out_features))
        elif isinstance(m, _NORM) and m.affine:
            add(pq, 2, var(out_group.get(m), m.num_features), (one, 1))
        else:
            continue
        modelled.add(m)
        if getattr(m, "bias", None) is not None and not isinstance(m, _NORM):
            add(pq, 1, var(out_group.get(m), m.weight.shape[0]), (one, 1))
    rest = sum(p.numel() for m in model.modules() if m not in modelled for p in m.parameters(recurse=False))
    pq[one, one] += rest
    return CostModel(fq, pq, np.array([g.size for g in groups], dtype=np.int64))


def _module_of(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)
