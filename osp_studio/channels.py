"""Channels: which layers lose channels, when each channel settles, and how the regulariser splits them."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine.charts.figures import IMAGE_ROWS, kept_fraction_figure, matrix_figure
from osp_engine.method.analysis import settle_order
from osp_engine.storage.reader import RunReader
from osp_studio.layout import empty_state, header, teaching
from osp_studio.replay import run_masks
from osp_studio.routing import require_run
from osp_studio.teaching import explain as teaching_explainer
from osp_studio.text import chart_text

KEPT_COLOURS = [[0, "#e2e8f0"], [1, "#2b6cb0"]]                     # marked for pruning, kept


def layer_view(x: np.ndarray, kept: np.ndarray, sizes: list[int], names: list[str]) -> None:
    """(G, E) share of each group's channels kept, group 0 on top."""
    fig = kept_fraction_figure(x, kept, sizes, names)
    fig.update_layout(title="Fraction of channels kept by the candidate sub-network")
    st.plotly_chart(fig, key="layer_heatmap")


def channel_views(x: np.ndarray, kept: np.ndarray, sizes: list[int], names: list[str]) -> None:
    """Every channel (an image past IMAGE_ROWS rows), then one group channel by channel with hover values."""
    st.subheader("Every channel")
    bounds = np.cumsum([0] + sizes)
    order = np.concatenate([a + settle_order(kept[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    every = matrix_figure(kept[:, order].T.astype(np.uint8), x, None, KEPT_COLOURS, 0, 1, None)   # (N, E)
    every.update_layout(height=420, xaxis_title="epoch", yaxis_title="channel (by group, then settling epoch)",
                        yaxis_autorange="reversed", margin=dict(t=10))
    st.plotly_chart(every, key="channel_overview")
    st.caption(f"{kept.shape[1]} channels: blue kept, grey marked for pruning"
               + (f"; over {IMAGE_ROWS} rows the matrix is drawn as an image, so pick a group below to hover "
                  "channel by channel." if kept.shape[1] > IMAGE_ROWS else "."))

    st.subheader("One group, channel by channel")
    gid = st.selectbox("Group", range(len(sizes)), format_func=lambda i: names[i], key="drill_group")
    block = kept[:, bounds[gid]:bounds[gid + 1]]                      # (E, C)
    settled = settle_order(block)
    drill = matrix_figure(block[:, settled].T.astype(np.uint8), x, [f"channel {c}" for c in settled],
                          KEPT_COLOURS, 0, 1, None)
    drill.update_layout(title=f"{names[gid]}: channels ordered by when they settled", xaxis_title="epoch",
                        height=260 + min(3 * sizes[gid], 900), yaxis_autorange="reversed")
    st.plotly_chart(drill, key="channel_drill")


def saliency_views(run: RunReader, epochs: list[int], sizes: list[int], names: list[str]) -> None:
    """At a chosen epoch: saliency of marked against kept channels, and kept against total per group."""
    st.subheader("Saliency of marked against kept channels")
    epoch = st.select_slider("Epoch", options=epochs, value=epochs[-1], key=f"hist_epoch_{epochs[-1]}")
    masks = run.masks(epoch)
    kept = np.concatenate(masks)                                      # (N,) bool
    logv = np.log10(np.maximum(np.concatenate(run.saliency(epoch)), 1e-12))
    hist = go.Figure()
    hist.add_trace(go.Histogram(x=logv[kept], name="kept", marker_color="#2b6cb0", opacity=0.7, nbinsx=60))
    hist.add_trace(go.Histogram(x=logv[~kept], name="marked for pruning", marker_color="#dd6b20", opacity=0.7,
                                nbinsx=60))
    hist.update_layout(barmode="overlay", title=f"Group saliency at epoch {epoch} (log10)",
                       xaxis_title="log10 saliency", yaxis_title="channels", height=360)
    st.plotly_chart(hist, key="saliency_hist")

    bars = go.Figure()
    bars.add_trace(go.Bar(x=names, y=np.array(sizes), name="total", marker_color="#cbd5e0"))
    bars.add_trace(go.Bar(x=names, y=np.array([m.sum() for m in masks]), name="kept", marker_color="#2b6cb0"))
    bars.update_layout(barmode="overlay", title=f"Kept against total channels at epoch {epoch}", height=380)
    st.plotly_chart(bars, key="kept_bars")


def render() -> None:
    header("Channels", "Each row is a group of coupled channels (a layer and everything tied to it); colour is the "
           "share of its channels the candidate sub-network keeps at each epoch. Look for rows that stop changing: "
           "the regulariser drives the saliency of the marked channels toward zero, splitting the histogram in two.")
    if teaching():
        teaching_explainer("channels")
    run = require_run()
    epochs, kept, groups = run_masks(run)                             # kept (E, N) bool, groups in gid order
    if not epochs:
        info = run.info()
        empty_state("This run searched no sub-network: it is a dense baseline, or it ended before epoch "
                    "monitor_start." if info["ended"] or info["config"].get("baseline") else
                    "No sub-network searched yet: the search starts at epoch monitor_start. Wait a few seconds.")
        return
    sizes = [g["size"] for g in groups]
    names = [chart_text(f"{g['gid']:>2} {g['name']} ({g['size']})") for g in groups]
    whole = run.kept_whole()
    st.markdown(f"**{run.run_id}** · {len(epochs)} searched epochs ({epochs[0]}–{epochs[-1]}) · "
                f"{kept.shape[1]} channels in {len(groups)} groups"
                + (f" · {len(whole)} more groups kept whole (listed below)" if whole else ""))
    x = np.array(epochs)
    layer_view(x, kept, sizes, names)
    channel_views(x, kept, sizes, names)
    saliency_views(run, epochs, sizes, names)
    kept_whole_view(whole)


def kept_whole_view(whole: list[dict]) -> None:
    """The groups the engine never prunes, because losing a channel breaks the model, and why."""
    if not whole:
        return
    st.subheader(f"Groups kept whole ({len(whole)})")
    st.caption("Removing a channel from these groups breaks the network (a split with sizes fixed in its code, a "
               "channel slice, a shuffle, ...): they are never marked, shrunk or pruned, and their channels still "
               "count in the FLOPs.")
    st.dataframe(pd.DataFrame({"group": [w["name"] for w in whole], "channels": [w["size"] for w in whole],
                               "why": [w["reason"] for w in whole]}), hide_index=True, key="kept_whole")
