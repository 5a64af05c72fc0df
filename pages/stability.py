"""Stability: the PSI against its threshold, the Early-Bird distance, the regulariser and LR schedules."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from osp_engine.analysis import early_bird_epoch, pairwise_jaccard
from pages.common import (add_phase_bands, empty_state, epochs_frame, explain, manager, mask_data, reader,
                          run_key, selected_run)

st.title("Stability")
explain("The pruning stability indicator (PSI) compares each epoch's candidate sub-network with the one two "
        "epochs earlier; it climbs once the regulariser (orange band) starts pulling the marked channels to zero. "
        "Look for the smoothed PSI crossing the threshold line: that epoch, t*, is where the network is pruned.")

run = reader(selected_run())
if run is None:
    empty_state("No run selected. Start the demo on the Runs page, then come back here.")
    st.stop()


def controls(r, info, df) -> None:
    mgr = manager()
    live = mgr.controls(r.run_id)
    if live is None or info["t_star"] is not None:
        return
    next_epoch = (int(df["epoch"].max()) + 1) if not df.empty else 0
    c1, c2, c3 = st.columns([2, 2, 2])
    if live["prune_requested"]:
        c1.info(f"Prune requested: it happens at the end of epoch {next_epoch}.")
    elif c1.button("✂ Prune now", type="primary", key="prune_now",
                   help="prune with the current candidate at the next epoch boundary"):
        mgr.command(r.run_id, "prune_now")
        st.toast(f"Pruning at the end of epoch {next_epoch}")
        st.rerun(scope="fragment")
    auto = c2.toggle("Auto-prune at the threshold", value=live["auto_prune"], key="auto_prune")
    if auto != live["auto_prune"]:
        mgr.command(r.run_id, "set_auto_prune", auto)
    thr = c3.number_input("Threshold", 0.5, 1.0, float(live["threshold"]), 0.001, format="%.3f", key="thr")
    if abs(thr - live["threshold"]) > 1e-12:
        mgr.command(r.run_id, "set_threshold", float(thr))


def stability_figure(df, info) -> go.Figure:
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.4, 0.2, 0.2, 0.2],
                        subplot_titles=("PSI", "Early-Bird distance", "regulariser strength", "learning rate"))
    x = df["epoch"].to_numpy()
    def col(name):
        return df[name].to_numpy(dtype=float)
    fig.add_trace(go.Scatter(x=x, y=col("psi_raw"), name="PSI raw", mode="lines+markers",
                             line=dict(color="#a0aec0")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=col("psi_smoothed"), name="PSI smoothed", mode="lines+markers",
                             line=dict(color="#2b6cb0", width=3)), 1, 1)
    fig.add_hline(y=info["threshold"], line_dash="dash", line_color="#c53030", row=1, col=1,
                  annotation_text=f"threshold {info['threshold']}")
    fig.add_trace(go.Scatter(x=x, y=col("eb_distance"), name="Early-Bird distance", mode="lines+markers",
                             line=dict(color="#38a169")), 2, 1)
    eb_thr = info["config"].get("eb_threshold", 0.1)
    fig.add_hline(y=eb_thr, line_dash="dot", line_color="#38a169", row=2, col=1)
    drawn = early_bird_epoch(x.tolist(), df["eb_distance"].tolist(), eb_thr)
    if drawn is not None:
        fig.add_vline(x=drawn, line_color="#38a169", line_dash="dot", row=2, col=1,
                      annotation_text=f"EB ticket {drawn}")
    fig.add_trace(go.Scatter(x=x, y=col("reg"), name="regulariser", line=dict(color="#dd6b20")), 3, 1)
    fig.add_trace(go.Scatter(x=x, y=col("lr"), name="learning rate", line=dict(color="#805ad5")), 4, 1)
    add_phase_bands(fig, df, row=1)
    for label, epoch, colour in (("t_sl_start", info["t_sl_start"], "#dd6b20"), ("t*", info["t_star"], "#c53030")):
        if epoch is not None:
            for row in range(1, 5):
                fig.add_vline(x=epoch, line_color=colour, line_dash="dash", row=row, col=1,
                              annotation_text=f"{label} = {epoch}" if row == 1 else None)
    fig.update_yaxes(rangemode="tozero", row=4, col=1)
    fig.update_layout(height=720, margin=dict(t=40, b=20), legend=dict(orientation="h", y=-0.05))
    fig.update_xaxes(title_text="epoch", row=4, col=1)
    return fig


@st.fragment(run_every=2)
def live_view() -> None:
    r = run
    key = run_key(r)
    info = r.info()
    df = epochs_frame(*key)
    st.markdown(f"**{r.run_id}** · {info['display_status']} · phase **{info['phase']}** · "
                f"{len(df)} epochs" + (f" · pruned after epoch {info['t_star']} ({info['prune_reason']})"
                                      if info["t_star"] is not None else ""))
    controls(r, info, df)
    if df.empty:
        empty_state("The run is setting up: the first epoch appears in a few seconds.")
        return
    st.plotly_chart(stability_figure(df, info), key="stability_chart")
    epochs, kept, groups = mask_data(*key)
    if len(epochs) >= 2:
        sim = pairwise_jaccard(kept, [g["size"] for g in groups])
        heat = go.Figure(go.Heatmap(z=sim, x=np.array(epochs), y=np.array(epochs), colorscale="Viridis",
                                    zmin=float(sim.min()), zmax=1.0, colorbar=dict(title="Jaccard")))
        heat.update_layout(title="Similarity of the sub-networks of every pair of epochs", height=480,
                           xaxis_title="epoch", yaxis_title="epoch", margin=dict(t=40))
        st.plotly_chart(heat, key="similarity_chart")
        st.caption("A bright square block forming late in the run is the early-bird ticket: "
                   "from there on the candidate hardly changes.")


live_view()
