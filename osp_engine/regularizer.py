"""The growing group-sparsity shrink on the channels currently marked for pruning (docs/method.md).

After every optimiser step each marked slice (producer filter, consumer input slice, BN gamma) is
scaled by (1 - reg * lr_t): the SGD step of an L2 penalty on the current candidates only. The mask
is turned into one 0/1 vector per weight tensor once per epoch, so a step costs one fused multiply
per weight tensor (no Python loop over channels).
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
        for w, marked, dim in marked_of.values():
            shape = [1] * w.dim()
            shape[dim] = -1
            self.targets.append((w, marked.view(shape)))

    @torch.no_grad()
    def step(self, decay: float) -> None:
        """W <- W * (1 - decay * marked), decay = reg * lr."""
        if decay == 0.0:
            return
        for w, marked in self.targets:
            w.mul_(1.0 - decay * marked)

    def penalty(self) -> float:
        """sum over marked slices of their L2 norms (what the official code adds to the logged loss)."""
        with torch.no_grad():
            total = 0.0
            for w, marked in self.targets:
                dims = [d for d in range(w.dim()) if marked.shape[d] == 1]
                norms = (w * marked).pow(2).sum(dim=dims).sqrt() if dims else (w * marked).abs()
                total += float(norms.sum())
            return total
