"""Channel saliency of every group (METHOD.md, 'Saliency', p = 2) and the FLOPs-cost weighting.

S_g(c) = mean over the group's members d of
    producer:  sum |W_d[c]|^2 / sqrt(n_d)        (n_d = C_in * k * k, the filter's fan-in)
    consumer:  sum |W_d[:, c]|^2 / sqrt(m_d)     (m_d = C_out * k * k)
    BatchNorm: gamma_c^2
No p-th root and no per-group normalisation: raw values compare across groups.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .groups import BATCHNORM, Group


@torch.no_grad()
def group_saliency(group: Group) -> torch.Tensor:
    """(C_g,) float32 saliency of the group's channels, by original channel id."""
    total = None
    for mem in group.members:
        w = mem.weight.detach().float()
        other = [d for d in range(w.dim()) if d != mem.dim]
        per_slice = w.pow(2).sum(dim=other) if other else w.pow(2)         # (w.shape[dim],)
        if mem.kind != BATCHNORM:
            per_slice = per_slice / math.sqrt(mem.fan)
        if total is None:
            total = torch.zeros(group.size, dtype=torch.float32, device=w.device)
        total.index_add_(0, mem.group_index, per_slice.index_select(0, mem.param_index))
    return total / max(len(group.members), 1)


def all_saliency(groups: list[Group]) -> list[np.ndarray]:
    """Saliency of every group as float32 numpy arrays (one device sync per group)."""
    return [group_saliency(g).cpu().numpy() for g in groups]


def flops_weights(cost_per_channel: np.ndarray) -> np.ndarray:
    """pi_g = softmax(cost_g / 1e6): the share of FLOPs pressure on group g. (G,) float64."""
    z = cost_per_channel / 1e6
    e = np.exp(z - z.max())
    return e / e.sum()


def weighted_saliency(saliency: list[np.ndarray], pi: np.ndarray) -> list[np.ndarray]:
    """S^_g(c) = S_g(c) * (1 - pi_g)."""
    return [s.astype(np.float64) * (1.0 - p) for s, p in zip(saliency, pi)]
