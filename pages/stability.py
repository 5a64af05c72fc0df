"""Stability: the PSI against its threshold, the Early-Bird distance, the regulariser and LR schedules."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from osp_engine.analysis import early_bird_epoch
from osp_engine.store import RunReader
from pages.common import (chart_text, empty_state, enter_frame, epochs_frame, header, manager, reader, require_run, run_key, send,
                          plain, similarity, variant_line)
from pages.figures import hline, label, matrix_figure, phase_bands, vline


def prune_now(run_id: str) -> None:
    """The button's callback; the epoch it names is read when the click arrives, not when the page was drawn."""
    if send(run_id, "prune_now"):
        st.toast(f"Pruning at the end of epoch {reader(run_id).last_epoch() + 1}")


def controls(run_id: str, info: dict, df: pd.DataFrame) -> None:
    """Prune now, auto-prune and the threshold of a run this app is training, before it is pruned.

    The widgets show the run's live settings on every redraw (another tab may have changed them) and
    send a command only when the user changes one, so two tabs never undo each other.
    """
    live = manager().controls(run_id)
    if live is None or info["t_star"] is not None:
        return
    next_epoch = (int(df["epoch"].max()) + 1) if not df.empty else 0
    c1, c2, c3 = st.columns([2, 2, 2])
    if live["prune_requested"]:
        c1.info(f"Prune requested: it happens at the end of epoch {next_epoch}.")
    else:                                   # a callback, so a page change right after the click keeps it
        c1.button("✂ Prune now", type="primary", key="prune_now", on_click=prune_now, args=(run_id,),
                  help="prune with the current candidate at the next epoch boundary")
    auto_key, thr_key = f"auto_prune_{run_id}", f"threshold_{run_id}"
    st.session_state[auto_key] = live["auto_prune"]
    st.session_state[thr_key] = float(live["threshold"])
    c2.toggle("Auto-prune at the threshold", key=auto_key,
              on_change=lambda: send(run_id, "set_auto_prune", st.session_state[auto_key]))
    c3.number_input("Threshold", 0.5, 1.0, step=0.001, format="%.3f", key=thr_key,
                    on_change=lambda: send(run_id, "set_threshold", float(st.session_state[thr_key])))


def stability_figure(df, info) -> go.Figure:
    """Four rows on one epoch axis (x, x2, x3, x4): PSI, Early-Bird distance, regulariser, learning rate."""
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.4, 0.2, 0.2, 0.2],
                        subplot_titles=("PSI", "Early-Bird distance", "regulariser strength", "learning rate"))
    x = df["epoch"].to_numpy()
    mode = "lines+markers" if len(x) <= 80 else "lines"                # markers only while they stay apart
    def col(name):
        return df[name].to_numpy(dtype=float)
    fig.add_trace(go.Scatter(x=x, y=col("psi_raw"), name="PSI raw", mode=mode, line=dict(color="#a0aec0")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=col("psi_smoothed"), name="PSI smoothed", mode=mode,
                             line=dict(color="#2b6cb0", width=3)), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=col("eb_distance"), name="Early-Bird distance", mode=mode,
                             line=dict(color="#38a169")), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=col("reg"), name="regulariser", line=dict(color="#dd6b20")), 3, 1)
    fig.add_trace(go.Scatter(x=x, y=col("lr"), name="learning rate", line=dict(color="#805ad5")), 4, 1)

    eb_thr = info["config"].get("eb_threshold", 0.1)
    shapes = phase_bands(x.tolist(), df["phase"].tolist())
    shapes += [hline(info["threshold"], "#c53030"), hline(eb_thr, "#38a169", yref="y2", dash="dot")]
    notes = [label(0, info["threshold"], chart_text(f"threshold {info['threshold']}"), "#c53030", xref="x domain", yref="y")]
    drawn = early_bird_epoch(x.tolist(), df["eb_distance"].tolist(), eb_thr)
    if drawn is not None:
        shapes.append(vline(drawn, "#38a169", xref="x2", yref="y2 domain", dash="dot"))
        notes.append(label(drawn, 0.5, f"EB ticket {drawn}", "#38a169", xref="x2", yref="y2 domain"))
    for name, epoch, colour in (("t_sl_start", info["t_sl_start"], "#dd6b20"), ("t*", info["t_star"], "#c53030")):
        if epoch is not None:
            shapes.append(vline(epoch, colour))
            notes.append(label(epoch, 1, chart_text(f"{name} = {epoch}"), colour, yref="y domain"))
    fig.update_layout(shapes=shapes, annotations=list(fig.layout.annotations) + notes, height=720,
                      margin=dict(t=40, b=20), legend=dict(orientation="h", y=-0.05))
    fig.update_yaxes(rangemode="tozero", row=4, col=1)
    fig.update_xaxes(title_text="epoch", row=4, col=1)
    return fig


@st.fragment(run_every=2)
def live_view(run: RunReader) -> None:
    """Redrawn every 2 s; the data behind it is re-read only when the run has a new epoch."""
    key = run_key(run)
    info = run.info()
    df = epochs_frame(*key)
    st.markdown(f"**{run.run_id}** · {plain(info['display_status'])} · phase **{plain(info['phase'])}** · "
                f"{len(df)} epochs" + (f" · pruned after epoch {info['t_star']} ({plain(info['prune_reason'])})"
                                      if info["t_star"] is not None else ""))
    st.caption(variant_line(info["config"].get("variant", "unrecorded")))
    controls(run.run_id, info, df)
    if df.empty:
        empty_state(f"The run ended ({info['display_status']}) before its first epoch." if info["ended"] else
                    "The run is setting up: the first epoch appears in a few seconds.")
        return
    st.plotly_chart(stability_figure(df, info), key="stability_chart")
    epochs, sim = similarity(*key)
    if len(epochs) >= 2:
        heat = matrix_figure(sim, np.array(epochs), np.array(epochs), "Viridis", float(sim.min()), 1.0, "Jaccard")
        heat.update_layout(title="Similarity of the sub-networks of every pair of epochs", height=480,
                           xaxis_title="epoch", yaxis_title="epoch", margin=dict(t=40))
        st.plotly_chart(heat, key="similarity_chart")
        st.caption("A bright square block forming late in the run is the early-bird ticket: "
                   "from there on the candidate hardly changes.")


def render() -> None:
    header("Stability", "The pruning stability indicator (PSI) compares each epoch's candidate sub-network with the "
           "one two epochs earlier; it climbs once the regulariser (orange band) starts pulling the marked channels "
           "to zero. Look for the smoothed PSI crossing the threshold line: that epoch, t*, is where the network is "
           "pruned.")
    live_view(require_run())


if __name__ == "__main__":
    enter_frame()
