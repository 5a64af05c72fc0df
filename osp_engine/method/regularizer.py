"""The growing group-sparsity shrink on the channels currently marked for pruning (docs/method.md).

After every optimiser step each marked slice (producer filter, consumer input slice, BN gamma) is
scaled by (1 - reg * lr_t): the SGD step of an L2 penalty on the current candidates only. The mask
is turned into one 0/1 vector per weight tensor once per epoch, all of them views of one flat buffer;
a step computes every factor (1 - reg * lr * marked) in one kernel on that buffer and scales every
weight tensor in one `torch._foreach_mul_` call (no Python loop over tensors or channels).
"""
from __future__ import annotations

import numpy as np
import torch

from .groups import Group


class Shrinker:
    """Holds, per weight tensor, a broadcastable (1 = marked) vector for the current candidates."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.targets: list[tuple[torch.Tensor, torch.Tensor]] = []   # (weight, marked view-shaped)
        self.weights: list[torch.Tensor] = []
        self.factors: list[torch.Tensor] = []

    def set_marked(self, keep: list[np.ndarray]) -> None:
        """keep[g]: (C_g,) bool over original ids; every False channel is shrunk from now on."""
        marked_of: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, int]] = {}
        for group, kept in zip(self.groups, keep):
            for mem in group.members:
                w = mem.weight
                key = (id(w), mem.dim)
                if key not in marked_of:
                    marked_of[key] = (w, torch.zeros(w.shape[mem.dim], device=w.device, dtype=w.dtype), mem.dim)
                drop = torch.from_numpy(~kept).to(w.device)[mem.group_index]         # (n,) bool
                marked_of[key][1][mem.shrink_index[drop]] = 1.0
        self.targets = []
        flat = torch.cat([marked for _, marked, _ in marked_of.values()]) if marked_of else torch.zeros(0)
        self.flat, self.factor = flat, torch.empty_like(flat)       # (sum of marked dims,) 0/1, and its factors
        self.weights, self.factors = [], []
        offset = 0
        for w, marked, dim in marked_of.values():
            shape = [1] * w.dim()
            shape[dim] = -1
            n = marked.numel()
            self.targets.append((w, flat[offset:offset + n].view(shape)))
            self.weights.append(w)
            self.factors.append(self.factor[offset:offset + n].view(shape))   # views: filled in place per step
            offset += n

    @torch.no_grad()
    def step(self, decay: float) -> None:
        """W <- W * (1 - decay * marked), decay = reg * lr: one kernel for the factors, one foreach call."""
        if decay == 0.0 or not self.weights:
            return
        torch.mul(self.flat, -decay, out=self.factor)
        self.factor.add_(1.0)
        torch._foreach_mul_(self.weights, self.factors)

    def penalty(self) -> float:
        """sum over marked slices of their L2 norms (what the official code adds to the logged loss)."""
        with torch.no_grad():
            total = 0.0
            for w, marked in self.targets:
                dims = [d for d in range(w.dim()) if marked.shape[d] == 1]
                norms = (w * marked).pow(2).sum(dim=dims).sqrt() if dims else (w * marked).abs()
                total += float(norms.sum())
            return total
