"""The pruning stability indicator (PSI) and the Early-Bird distance (docs/method.md, 'Stability').

A sub-network M_t is a list of per-group (C_g,) bool arrays over original channel ids (True = kept).
"""
from __future__ import annotations

import numpy as np

Mask = list[np.ndarray]


def jaccard(a: Mask, b: Mask) -> float:
    """J = (1/G) * sum_g |K_a ∩ K_b| / |K_a ∪ K_b| over all groups, unweighted."""
    scores = []
    for ka, kb in zip(a, b):
        union = np.logical_or(ka, kb).sum()
        scores.append(np.logical_and(ka, kb).sum() / union if union else 1.0)
    return float(np.mean(scores))


def psi_raw(history: list[Mask]) -> float:
    """J_t for the newest sub-network against the one two epochs back; 0 until three exist."""
    if len(history) < 3:
        return 0.0
    return jaccard(history[-1], history[-3])


def smoothed(raw: list[float], window: int = 3) -> float:
    """Trailing mean of the last `window` raw values, leading zeros included."""
    tail = list(raw[-window:])
    return float(sum(tail) / window)


def hamming(a: Mask, b: Mask) -> float:
    """Normalised Hamming distance between two sub-networks flattened to one 0/1 mask."""
    fa, fb = np.concatenate(a), np.concatenate(b)
    return float(np.mean(fa != fb))


def early_bird_distance(history: list[Mask], lookback: int = 4) -> float | None:
    """The largest distance between the newest mask and each of the previous `lookback`; None before."""
    if len(history) < lookback + 1:
        return None
    return max(hamming(history[-1], h) for h in history[-1 - lookback:-1])


def early_bird_drawn(distance: float | None, threshold: float) -> bool:
    """A ticket is drawn when all of the last four distances are <= threshold."""
    return distance is not None and distance <= threshold
