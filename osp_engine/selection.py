"""Choose the candidate sub-network: per-layer floors, then a global threshold hitting the FLOPs target.

Pruning every unprotected channel with S^ <= tau removes a monotone amount of FLOPs as tau grows, so
the threshold search is a binary search over the ascending order of S^ (the k smallest go), with
each probe's FLOPs computed from counts by the CostModel. The cut whose reduction is nearest the
target wins; with enough channels it lands within +-0.05 percentage points (METHOD.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .flops import CostModel


@dataclass(frozen=True)
class Selection:
    keep: list[np.ndarray]      # per group, (C_g,) bool over original channel ids
    tau: float                  # the threshold: the largest pruned S^ (-inf when nothing is pruned)
    flops: int                  # the candidate's FLOPs (MACs)
    params: int
    reduction: float            # 1 - flops / dense flops


def prunable_limit(c: int, l_max: float, k: float) -> float:
    """limit(C) = L_max * (1 - exp(-k*C)): the largest fraction of a group's C channels that may go."""
    return l_max * (1.0 - math.exp(-k * c))


def protected_mask(scores: np.ndarray, l_max: float, k: float) -> np.ndarray:
    """(C,) bool: the top C - int(C * limit(C)) channels by score, never pruned (ties: lower id)."""
    c = len(scores)
    n_protect = max(c - int(c * prunable_limit(c, l_max, k)), 1)
    order = np.lexsort((np.arange(c), -scores))                  # descending score, then id
    mask = np.zeros(c, dtype=bool)
    mask[order[:n_protect]] = True
    return mask


def select(scores: list[np.ndarray], cost: CostModel, target: float, l_max: float, k: float) -> Selection:
    """The sub-network removing the fraction `target` of dense FLOPs (scores: weighted S^ per group)."""
    sizes = cost.sizes
    cand_group, cand_chan, cand_score = [], [], []
    for g, s in enumerate(scores):
        free = np.flatnonzero(~protected_mask(s, l_max, k))
        cand_group.append(np.full(len(free), g))
        cand_chan.append(free)
        cand_score.append(s[free])
    group_of = np.concatenate(cand_group).astype(np.int64)
    chan_of = np.concatenate(cand_chan).astype(np.int64)
    score_of = np.concatenate(cand_score)
    order = np.lexsort((chan_of, group_of, score_of))            # ascending S^, ties by (group, id)
    group_of, chan_of, score_of = group_of[order], chan_of[order], score_of[order]
    dense = cost.dense_flops

    def reduction(n: int) -> float:
        counts = sizes - np.bincount(group_of[:n], minlength=len(sizes))
        return 1.0 - cost.flops(counts) / dense

    lo, hi = 0, len(score_of)                                    # smallest n with reduction >= target
    if reduction(hi) < target:
        n = hi
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            if reduction(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        n = lo
        if n > 0 and abs(reduction(n - 1) - target) < abs(reduction(n) - target):
            n -= 1
    keep = [np.ones(c, dtype=bool) for c in sizes]
    for g, ch in zip(group_of[:n], chan_of[:n]):
        keep[g][ch] = False
    counts = np.array([kp.sum() for kp in keep], dtype=np.int64)
    flops = cost.flops(counts)
    return Selection(keep, float(score_of[n - 1]) if n else float("-inf"), flops, cost.params(counts),
                     1.0 - flops / dense)
