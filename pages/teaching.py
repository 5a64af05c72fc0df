"""Teaching mode's explainers: what a group, PSI, Jaccard and an early-bird ticket are, with a worked
example computed by the engine's own functions on two tiny masks (so the numbers are the real ones)."""
import numpy as np
import streamlit as st

from osp_engine.stability import hamming, jaccard

# two sub-networks of a network with two groups of 4 and 2 channels (True = the channel is kept)
EPOCH_A = [np.array([True, True, False, False]), np.array([True, False])]
EPOCH_B = [np.array([True, False, True, False]), np.array([True, False])]


def _mask(m: list[np.ndarray]) -> str:
    return "  |  ".join(" ".join("■" if k else "□" for k in g) for g in m)


def explain_stability() -> None:
    """The panel shown above the Stability chart in teaching mode."""
    per_group = [float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum()) for a, b in zip(EPOCH_A, EPOCH_B)]
    with st.container(border=True):
        st.markdown(
            "**Group.** Channels that must be removed together (a convolution's output channels and every layer "
            "that reads them, e.g. across a residual connection). Pruning keeps or removes a channel of a group.\n\n"
            "**Candidate sub-network.** At the start of every epoch the search marks, in every group, the "
            "channels with the lowest saliency until the FLOPs target is met: ■ kept, □ marked.\n\n"
            "**Jaccard similarity** of two candidates, per group: channels kept by both ÷ channels kept by either; "
            "the PSI averages it over the groups and compares each epoch with the one two epochs before, "
            "smoothed over three epochs. PSI = 1: the candidate stopped changing.\n\n"
            "**Early-Bird distance**: the share of all channels whose kept/marked state differs; a ticket is "
            "drawn when the last four distances are all small.")
        st.text(f"epoch t-2: {_mask(EPOCH_A)}\n"
                f"epoch t  : {_mask(EPOCH_B)}\n"
                f"Jaccard per group: {per_group[0]:.3f} (1 of 3 kept by either is kept by both), "
                f"{per_group[1]:.3f}\n"
                f"PSI (mean over groups) = {jaccard(EPOCH_B, EPOCH_A):.3f}; "
                f"Early-Bird distance = {hamming(EPOCH_B, EPOCH_A):.3f} (2 of 6 channels changed)")


if __name__ == "__main__":                 # a helper module, opened as a page by the legacy pages/ routing
    from pages.common import enter_frame
    enter_frame()
