"""Channel saliency of every group (docs/method.md, 'Saliency', p = 2) and its FLOPs-cost weighting.

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
        if w.dim() > 1:             # (slices, rest), summed along rest in the official code's order
            w = w.transpose(0, mem.dim).flatten(1) if mem.dim else w.flatten(1)
            per_slice = w.pow(2).sum(1)                                     # (w.shape[dim],)
        else:
            per_slice = w.pow(2)
        if mem.kind != BATCHNORM:
            per_slice = per_slice / math.sqrt(mem.fan)
        if total is None:
            total = torch.zeros(group.size, dtype=torch.float32, device=w.device)
        total.index_add_(0, mem.group_index, per_slice.index_select(0, mem.param_index))
    return total / max(len(group.members), 1)


def all_saliency(groups: list[Group]) -> list[np.ndarray]:
    """Saliency of every group as float32 numpy arrays (one device sync per group)."""
    return [group_saliency(g).cpu().numpy() for g in groups]


def weighted_saliency(saliency: list[np.ndarray], pi: np.ndarray) -> list[np.ndarray]:
    """S^_g(c) = S_g(c) * (1 - pi_g), rounded to float32 as the official code computes it (a float32
    tensor times a Python float: the factor is rounded to float32, then the product); float64 arrays
    holding those float32 values."""
    return [(s.astype(np.float32) * np.float32(1.0 - p)).astype(np.float64) for s, p in zip(saliency, pi)]
