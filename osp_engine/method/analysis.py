"""Pure numpy views of a stored run for the studio: no torch, no Streamlit.

Masks come from `RunReader.mask_matrix()`: kept (E, N) bool over all channels, groups concatenated.
"""
from __future__ import annotations

import numpy as np


def pairwise_jaccard(kept: np.ndarray, sizes: list[int]) -> np.ndarray:
    """(E, E) PSI-style similarity: mean over groups of |K_i ∩ K_j| / |K_i ∪ K_j|."""
    e = kept.shape[0]
    out = np.zeros((e, e))
    start = 0
    for size in sizes:
        block = kept[:, start:start + size].astype(np.float64)             # (E, C_g)
        inter = block @ block.T
        count = block.sum(1)
        union = count[:, None] + count[None, :] - inter
        out += np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        start += size
    return out / max(len(sizes), 1)


def kept_fraction(kept: np.ndarray, sizes: list[int]) -> np.ndarray:
    """(G, E): fraction of each group's channels kept at each searched epoch."""
    bounds = np.cumsum([0] + list(sizes))
    return np.stack([kept[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])]) if sizes else np.zeros((0, 0))


def settle_order(block: np.ndarray) -> np.ndarray:
    """Channel order for a (E, C) kept block: by the epoch each channel took its final state, then state.

    A channel 'settles' at the first epoch after which it never changes; the order lists kept channels
    first, each part sorted by that epoch.
    """
    e, c = block.shape
    if e == 0:
        return np.arange(c)
    changed = block[1:] != block[:-1]                                          # (E-1, C)
    # the epoch each channel entered its final state: the last i with a change into epoch i, else 0
    last_change = (np.arange(1, e)[:, None] * changed).max(axis=0, initial=0)  # (C,)
    final = block[-1]
    return np.lexsort((last_change, ~final))


def phase_spans(epochs: list[int], phases: list[str]) -> list[tuple[str, int, int]]:
    """Contiguous (phase, first epoch, last epoch) runs."""
    spans: list[tuple[str, int, int]] = []
    for e, p in zip(epochs, phases):
        if spans and spans[-1][0] == p and spans[-1][2] == e - 1:
            spans[-1] = (p, spans[-1][1], e)
        else:
            spans.append((p, e, e))
    return spans


def early_bird_epoch(epochs: list[int], distances: list[float | None], threshold: float) -> int | None:
    """The first epoch whose Early-Bird distance is <= threshold (the ticket is drawn there)."""
    for e, d in zip(epochs, distances):
        if d is not None and d <= threshold:
            return e
    return None
