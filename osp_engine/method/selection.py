"""Choose the candidate sub-network: per-layer floors, then a global threshold hitting the FLOPs target.

Pruning every unprotected channel with S^ <= tau removes a monotone amount of FLOPs as tau grows, so
the threshold search is a binary search over the ascending order of the unprotected S^, each probe's
FLOPs computed from counts by the CostModel (never a copy and a trial prune). Two variants
(docs/method.md, 'Official behaviour'):

- official (main_cifar.py:208-236, ocspruner/pruner.py:259-263): the floor protects every channel
  tied with the k-th largest score; a probe at sorted index i prunes every unprotected channel with
  S^ <= S^[i] (ties included); the search stops at the first probe within 5e-4 of the target, else
  keeps its LAST probe, whichever side of the target that fell on; it never probes "prune nothing".
- corrected: the floor protects exactly n_protect channels (ties broken by channel id) and the cut is
  the prefix of the sorted order whose reduction is nearest the target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .flops import CostModel

TOLERANCE = 5e-4          # the official search's stop: |reduction - target| <= 0.05 percentage points


@dataclass(frozen=True)
class Selection:
    keep: list[np.ndarray]      # per group, (C_g,) bool over original channel ids
    tau: float                  # the threshold: the largest pruned S^ (-inf when nothing is pruned)
    flops: int                  # the candidate's FLOPs (MACs)
    params: int
    reduction: float            # 1 - flops / dense flops


def prunable_limit(c: int, l_max: float, k: float) -> float:
    """limit(C) = L_max * (1 - exp(-k*C)): the largest fraction of a group's C channels that may go."""
    return float(l_max * (1.0 - np.exp(-k * c)))


def n_protected(c: int, l_max: float, k: float) -> int:
    """C - int(C * limit(C)): the channels a group keeps whatever the target (at least 1)."""
    return max(c - int(c * prunable_limit(c, l_max, k)), 1)


def _protect_ties(scores: np.ndarray, n: int) -> np.ndarray:
    """official: every channel scoring >= the n-th largest score (a tie can protect more than n)."""
    kth = np.sort(scores)[-n]
    return scores >= kth


def _protect_exactly(scores: np.ndarray, n: int) -> np.ndarray:
    """corrected: exactly the n best channels, ties broken by the lower channel id."""
    order = np.lexsort((np.arange(len(scores)), -scores))            # descending score, then id
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:n]] = True
    return mask


FLOORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"official": _protect_ties,
                                                               "corrected": _protect_exactly}


def protected_mask(scores: np.ndarray, l_max: float, k: float, variant: str = "official") -> np.ndarray:
    """(C,) bool: the channels of one group that are never pruned at this search."""
    return FLOORS[variant](scores, n_protected(len(scores), l_max, k))


def _official_search(sorted_scores: np.ndarray, reduction: Callable[[int], float], target: float) -> int:
    """How many of the ascending scores go: the official binary search over the probe index.

    A probe at index i prunes every score <= sorted_scores[i]; stop within TOLERANCE, else keep the
    last probe. Returns 0 only when there is nothing to probe.
    """
    left, right, n = 0, len(sorted_scores) - 1, 0
    while left <= right:
        mid = (left + right) // 2
        n = int(np.searchsorted(sorted_scores, sorted_scores[mid], side="right"))   # ties go too
        achieved = reduction(n)
        if abs(target - achieved) <= TOLERANCE:
            break
        if achieved <= target:
            left = mid + 1
        else:
            right = mid - 1
    return n


def _nearest_search(sorted_scores: np.ndarray, reduction: Callable[[int], float], target: float) -> int:
    """How many of the ascending scores go: the prefix whose reduction is nearest the target."""
    lo, hi = 0, len(sorted_scores)                               # smallest n with reduction >= target
    if reduction(hi) < target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if reduction(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > 0 and abs(reduction(lo - 1) - target) < abs(reduction(lo) - target):
        return lo - 1
    return lo


SEARCHES: dict[str, Callable[[np.ndarray, Callable[[int], float], float], int]] = {
    "official": _official_search, "corrected": _nearest_search}


def select(scores: list[np.ndarray], cost: CostModel, target: float, l_max: float, k: float,
           variant: str = "official") -> Selection:
    """The sub-network removing the fraction `target` of dense FLOPs (scores: weighted S^ per group,
    per channel). Where a group's channels go in units (cost.units > 1) the search ranks whole units
    by their summed score and the floors count units, as the official code does with its ch_groups."""
    sizes, units = cost.sizes, cost.units
    cand_group, cand_chan, cand_score = [], [], []
    for g, s in enumerate(scores):
        s = s if units[g] == 1 else s.reshape(int(units[g]), -1).sum(0)       # (C_g / unit,)
        free = np.flatnonzero(~protected_mask(s, l_max, k, variant))
        cand_group.append(np.full(len(free), g))
        cand_chan.append(free)
        cand_score.append(s[free])
    group_of = np.concatenate(cand_group).astype(np.int64)
    chan_of = np.concatenate(cand_chan).astype(np.int64)
    score_of = np.concatenate(cand_score)
    order = np.lexsort((chan_of, group_of, score_of))            # ascending S^, ties by (group, id)
    group_of, chan_of, score_of = group_of[order], chan_of[order], score_of[order]
    dense = cost.dense_flops

    def reduction(n: int) -> float:                              # the first n of the sorted order go
        counts = sizes - units * np.bincount(group_of[:n], minlength=len(sizes))
        return 1.0 - float(cost.flops(counts)) / dense

    n = SEARCHES[variant](score_of, reduction, target)
    keep_units = [np.ones(c // u, dtype=bool) for c, u in zip(sizes, units)]
    for g, ch in zip(group_of[:n], chan_of[:n]):
        keep_units[g][ch] = False
    keep = [ku[np.arange(c) % len(ku)] for ku, c in zip(keep_units, sizes)]  # channel c is in unit c % (C/u)
    counts = np.array([kp.sum() for kp in keep], dtype=np.int64)
    flops = cost.flops(counts)
    return Selection(keep, float(score_of[n - 1]) if n else float("-inf"), flops, cost.params(counts),
                     1.0 - flops / dense)
