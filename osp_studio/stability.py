"""Stability: the PSI against its threshold, the Early-Bird distance, the regulariser and LR schedules."""
import pandas as pd
import streamlit as st

from osp_engine.charts.stability import similarity_figure, stability_figure
from osp_engine.storage.reader import RunReader
from osp_studio.control import manager, may_steer, send, steering
from osp_studio.layout import compact, empty_state, header, teaching
from osp_studio.replay import run_frame, run_info, run_similarity
from osp_studio.routing import reader, require_run
from osp_studio.teaching import explain_stability
from osp_studio.text import plain, variant_line
from osp_studio.whatif import what_if


@steering
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
    if info["t_star"] is not None or not may_steer():         # a viewer of a shared studio: no controls
        return
    if live is None:
        if info["display_status"] == "running":
            st.caption("This run's process publishes no controls (it was started before runs could be steered "
                       "from another process): watch it here, steer it where it runs.")
        return
    if manager().owned(run_id) is None:
        st.caption("This run is written by another process (the command line or a Python script): these "
                   "controls queue commands in its run.db and it applies them within about a second.")
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


def view_options() -> None:
    """The two ways to look at the PSI (log view, whole run), kept in session state, where the live
    fragment reads them."""
    c1, c2 = st.columns(2)
    c1.toggle("Log view: 1 − PSI", key="psi_log", help="0.99, 0.999 and 1 sit a decade apart")
    c2.toggle("Whole run", key="psi_whole", help="the x-axis spans every epoch, not only the search window")


def run_view(run: RunReader, live: bool) -> None:
    """The header line, the controls and both figures. `live`: called by the 2 s fragment; a run that
    has ended reruns the page once and is then drawn without any timer (no redraws for ended runs)."""
    info = run_info(run)
    ended = info["display_status"] != "running"            # a replay ("replay at epoch k of ...") has ended
    if live and ended:
        st.rerun()
    df = run_frame(run)
    st.markdown(f"**{run.run_id}** · {plain(info['display_status'])} · phase **{plain(info['phase'])}** · "
                f"{len(df)} epochs" + (f" · pruned after epoch {info['t_star']} ({plain(info['prune_reason'])})"
                                      if info["t_star"] is not None else ""))
    if not compact():                                      # a lesson: the chart first, the controls under it
        st.caption(variant_line(info["config"].get("variant", "unrecorded")))
        controls(run.run_id, info, df)
    if df.empty:
        empty_state(f"The run ended ({info['display_status']}) before its first epoch." if ended else
                    "The run is setting up: the first epoch appears in a few seconds.")
        return
    log_view, whole = st.session_state.get("psi_log", False), st.session_state.get("psi_whole", False)
    font = 18 if teaching() else 16
    st.plotly_chart(stability_figure(df, info, log_view, whole, font), key="stability_chart")
    epochs, sim = run_similarity(run)
    if len(epochs) >= 2:
        st.plotly_chart(similarity_figure(epochs, sim, info["t_star"], font), key="similarity_chart")
        st.caption("A bright square block forming late in the run is the early-bird ticket: "
                   "from there on the candidate hardly changes.")
    elif len(df) >= 1:
        st.caption("The similarity matrix appears once two epochs have been searched.")
    if compact():
        controls(run.run_id, info, df)
    what_if(run.run_id, info)


@st.fragment(run_every=0.25)
def first_epoch_view(run: RunReader) -> None:
    """A run with no epoch yet: polled every 0.25 s (one SQL row each) so the first chart appears as soon
    as epoch 0 is stored (the 2 s refresh would add up to 2 s to the first chart)."""
    if run.last_epoch() >= 0 or run.info()["display_status"] != "running":
        st.rerun()
    run_view(run, live=False)


@st.fragment(run_every=2)
def live_view(run: RunReader) -> None:
    """Redrawn every 2 s while the run trains; the data behind it is re-read only on a new epoch."""
    run_view(run, live=True)


def render() -> None:
    header("Stability", "The pruning stability indicator (PSI) compares each epoch's candidate sub-network with the "
           "one two epochs earlier; it climbs once the regulariser (orange band) starts pulling the marked channels "
           "to zero. Look for the smoothed PSI crossing the threshold line: that epoch, t*, is where the network is "
           "pruned.")
    run = require_run()
    view_options()
    if teaching():
        explain_stability()
    if run.info()["display_status"] == "running":
        (live_view if run.last_epoch() >= 0 else first_epoch_view)(run)
    else:
        run_view(run, live=False)
