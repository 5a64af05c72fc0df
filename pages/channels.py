"""Channels: which layers lose channels, when each channel settles, and how the regulariser splits them."""
import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from osp_engine.analysis import kept_fraction, settle_order
from pages.common import empty_state, explain, mask_data, reader, run_key, selected_run

st.title("Channels")
explain("Each row is a group of coupled channels (a layer and everything tied to it); colour is the share of "
        "its channels the candidate sub-network keeps at each epoch. Look for rows that stop changing: the "
        "regulariser drives the saliency of the marked channels toward zero, splitting the histogram in two.")

run = reader(selected_run())
if run is None:
    empty_state("No run selected. Start the demo on the Runs page, then come back here.")
    st.stop()

epochs, kept, groups = mask_data(*run_key(run))
if not epochs:
    empty_state("No sub-network searched yet: the search starts at epoch monitor_start. Wait a few seconds.")
    st.stop()

sizes = [g["size"] for g in groups]
names = [f"{g['gid']:>2} {g['name']} ({g['size']})" for g in groups]
frac = kept_fraction(kept, sizes)                                     # (G, E)
fig = px.imshow(frac, x=np.array(epochs), y=names, zmin=0, zmax=1, color_continuous_scale="Blues",
                aspect="auto", labels=dict(x="epoch", y="group", color="kept"))
fig.update_layout(title="Fraction of channels kept by the candidate sub-network", height=200 + 22 * len(groups))
st.plotly_chart(fig, key="layer_heatmap")

st.subheader("One group, channel by channel")
gid = st.selectbox("Group", range(len(groups)), format_func=lambda i: names[i], key="drill_group")
start = int(np.sum(sizes[:gid]))
block = kept[:, start:start + sizes[gid]]                            # (E, C)
order = settle_order(block)
drill = px.imshow(block[:, order].T.astype(np.uint8), x=np.array(epochs), aspect="auto",
                  color_continuous_scale=[[0, "#e2e8f0"], [1, "#2b6cb0"]], binary_string=block.shape[1] > 1000,
                  labels=dict(x="epoch", y="channel (ordered by when it settled)", color="kept"))
drill.update_layout(height=260 + 3 * sizes[gid], coloraxis_showscale=False)
st.plotly_chart(drill, key="channel_drill")

st.subheader("Saliency of marked against kept channels")
epoch = st.select_slider("Epoch", options=epochs, value=epochs[-1], key="hist_epoch")
sal = run.saliency(epoch)
masks = run.masks(epoch)
values = np.concatenate(sal)
kept_flat = np.concatenate(masks)
logv = np.log10(np.maximum(values, 1e-12))
hist = go.Figure()
hist.add_trace(go.Histogram(x=logv[kept_flat], name="kept", marker_color="#2b6cb0", opacity=0.7, nbinsx=60))
hist.add_trace(go.Histogram(x=logv[~kept_flat], name="marked for pruning", marker_color="#dd6b20", opacity=0.7,
                            nbinsx=60))
hist.update_layout(barmode="overlay", title=f"Group saliency at epoch {epoch} (log10)", xaxis_title="log10 saliency",
                   yaxis_title="channels", height=360)
st.plotly_chart(hist, key="saliency_hist")

counts = np.array([m.sum() for m in masks])
bars = go.Figure()
bars.add_trace(go.Bar(x=names, y=np.array(sizes), name="total", marker_color="#cbd5e0"))
bars.add_trace(go.Bar(x=names, y=counts, name="kept", marker_color="#2b6cb0"))
bars.update_layout(barmode="overlay", title=f"Kept against total channels at epoch {epoch}", height=380)
st.plotly_chart(bars, key="kept_bars")
