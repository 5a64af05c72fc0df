"""Every random state the next epochs of a run draw from: saved in each checkpoint, put back on resume
and in a branch, so a continued run draws what an uninterrupted one would (tensors and lists only:
checkpoints load with weights_only=True)."""
from __future__ import annotations

import numpy as np
import torch


def rng_state(train) -> dict:
    """Every random state the next epochs draw from (tensors and lists only)."""
    gen = getattr(train, "generator", None)
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "loader": gen.get_state() if gen is not None else None,
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict, train) -> None:
    torch.set_rng_state(state["torch"])
    if state["loader"] is not None and getattr(train, "generator", None) is not None:
        train.generator.set_state(state["loader"])
    np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
