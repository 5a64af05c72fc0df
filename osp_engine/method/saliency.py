"""Channel saliency of every group (docs/method.md, 'Saliency', p = 2) and its FLOPs-cost weighting.

S_g(c) = mean over the group's members d of
    producer:  sum |W_d[c]|^2 / sqrt(n_d)        (n_d = C_in * k * k, the filter's fan-in)
    consumer:  sum |W_d[:, c]|^2 / sqrt(m_d)     (m_d = C_out * k * k)
    norm:      gamma_c^2                   (BatchNorm, LayerNorm, GroupNorm, a per-channel layer scale)
No p-th root and no per-group normalisation: raw values compare across groups. A channel that owns
several slices of one tensor (a flatten into a Linear) sums them; a grouped conv's input slice is its
column within its own conv group. Where channels go in units (a grouped conv), a unit's saliency is
the sum over its channels (selection.select), as the official code sums over its ch_groups.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .groups import NORM, Group


@torch.no_grad()
def group_saliency(group: Group) -> torch.Tensor:
    """(C_g,) float32 saliency of the group's channels, by original channel id."""
    total = None
    for mem in group.members:
        w = mem.weight.detach().float()
        if mem.conv_groups > 1:     # (C_out, C_in/G, k, k) -> (G, C_out/G, C_in/G, k*k): own rows only
            g = mem.conv_groups
            per_slice = w.reshape(g, w.shape[0] // g, w.shape[1], -1).pow(2).sum((1, 3)).flatten()  # (C_in,)
        elif w.dim() > 1:           # (slices, rest), summed along rest in the official code's order
            w = w.transpose(0, mem.dim).flatten(1) if mem.dim else w.flatten(1)
            per_slice = w.pow(2).sum(1)                                     # (w.shape[dim],)
        else:
            per_slice = w.pow(2)
        if mem.kind != NORM:
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
