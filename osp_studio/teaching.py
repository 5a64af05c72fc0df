"""Teaching mode's explainers: what a group, PSI, Jaccard and an early-bird ticket are, with a worked
example computed by the engine's own functions on two tiny masks (so the numbers are the real ones)."""
import numpy as np
import streamlit as st

from osp_engine.method.stability import hamming, jaccard

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


EXPLAINERS = {
    "channels": "**Reading the heatmaps.** One row per group; a cell is the share of the group's channels that the "
                "candidate of that epoch keeps (dark: all kept). Early on the rows flicker: the saliency ranking still "
                "changes. Once the regulariser shrinks the marked channels, their saliency collapses toward zero, the "
                "histogram below splits into two humps, and the rows stop changing: the candidate has settled.",
    "tradeoff": "**Reading the trade-off.** Each run is two real, evaluated networks: the dense one at its best "
                "accuracy and the pruned one at the end of fine-tuning. A good prune moves left (fewer FLOPs: "
                "multiply-accumulates of one image) while staying level (the same accuracy). A star or diamond is a "
                "number published for the same network by the paper or its rivals. With every epoch's model on, a "
                "cross is the candidate of an epoch pruned right then, before any fine-tuning: what it costs to prune "
                "that early.",
    "compare": "**Reading the overlay.** Each colour is a run. Where its PSI line meets the red threshold, the run "
               "prunes (its dotted vertical line, t*). A run that reaches the threshold earlier trains fewer epochs "
               "at full size: an earlier prune saves training time, if its accuracy keeps up.",
    "branches": "**Reading the branches.** Each red point is a whole run of its own: the same training up to that "
                "epoch, then pruned there and fine-tuned to the end. Where the red line levels off, pruning later "
                "buys no accuracy, only training time (the bars). Compare where the PSI and the Early-Bird lines "
                "would have stopped with where the red line levels off.",
}


def explain(page: str) -> None:
    """Teaching mode's short explainer for a page's charts."""
    st.info(EXPLAINERS[page])
