"""Runs: start a run from a preset, see every run's progress, and steer or delete them."""
import dataclasses

import streamlit as st

from osp_engine import ConfigError, get_preset
from osp_engine.config import Config
from osp_engine.presets import DESCRIPTIONS, PRESETS
from osp_engine.store import RunReader
from pages.common import empty_state, enter_frame, fmt_pct, header, manager, select_run, selected_run, send


def start(cfg: Config) -> None:
    """Start `cfg` in the background and open it; a bad config is shown, not raised."""
    try:
        run_id = manager().start(cfg)
    except ConfigError as e:
        st.error(f"Could not start: {e}")
        return
    select_run(run_id)
    st.toast(f"Started {run_id}")
    st.rerun()


def start_form() -> Config | None:
    """The preset and its main knobs; the preset sits outside the form so the knobs show its values."""
    with st.expander("Start a run from a preset", expanded=False):
        name = st.selectbox("Preset", list(PRESETS), format_func=lambda n: f"{n} — {DESCRIPTIONS.get(n, '')}",
                            key="start_preset")
        base = get_preset(name)
        with st.form("start_form"):
            c1, c2, c3 = st.columns(3)
            target = c1.number_input("FLOPs reduction target", 0.05, 0.95, float(base.target), 0.05)
            epochs = c2.number_input("Epochs", 1, 1000, int(base.epochs))
            threshold = c3.number_input("Stability threshold", 0.5, 1.0, float(base.threshold), 0.001, format="%.3f")
            c4, c5, c6 = st.columns(3)
            sl_start = c4.number_input("Regulariser start (sl_start)", 0, 1000, int(base.sl_start))
            sl_end = c5.number_input("Forced prune after (sl_end)", 0, 1000, int(base.sl_end))
            reg_delta = c6.number_input("Regulariser step (reg_delta)", 0.0, 1.0, float(base.reg_delta),
                                        format="%.5f")
            c7, c8 = st.columns([2, 1])
            data_root = c7.text_input("Dataset root (CIFAR / ImageNet)", base.data_root)
            devices = ["auto", "cpu", "cuda"]
            device = c8.selectbox("Device", devices, index=devices.index(base.device))
            if st.form_submit_button("Start"):
                return dataclasses.replace(base, target=float(target), epochs=int(epochs), threshold=float(threshold),
                                           sl_start=int(sl_start), sl_end=int(sl_end), reg_delta=float(reg_delta),
                                           data_root=data_root, device=device)
    return None


def run_card(r: RunReader) -> None:
    """One run: status, phase, progress, best accuracy, and the buttons that apply to it now."""
    mgr = manager()
    s = r.summary()
    live = mgr.controls(r.run_id)
    elsewhere = live is None and s["status"] == "running"          # written by another live process
    with st.container(border=True):
        top = st.columns([4, 2, 2, 2])
        top[0].markdown(f"**{r.run_id}**  \n{s['model']} · {s['dataset']}"
                        + ("  \nrunning in another process" if elsewhere else ""))
        top[1].metric("Status", s["status"] + (" (paused)" if live and live["paused"] else ""))
        top[2].metric("Phase", s["phase"] or "–")
        top[3].metric("FLOPs reduction", fmt_pct(s["flops_reduction"]))
        best = "–" if s["best_acc"] is None else f"{s['best_acc']:.2f} %"
        st.progress(min(s["epochs"] / max(s["total_epochs"] or 1, 1), 1.0),
                    text=f"epoch {s['epochs']}/{s['total_epochs']} · best accuracy {best}")
        if s["status"] == "failed":
            st.error(f"Failed: {s['error']}")
        if s["status"] == "stale":
            st.warning("No heartbeat for over a minute: the process writing this run has stopped. "
                       "Every completed epoch is still readable.")
        b = st.columns(5)
        if b[0].button("Open", key=f"open_{r.run_id}", disabled=selected_run() == r.run_id):
            select_run(r.run_id)
            st.rerun()
        if live:
            if b[1].button("Resume" if live["paused"] else "Pause", key=f"pause_{r.run_id}"):
                send(r.run_id, "resume" if live["paused"] else "pause")
                st.rerun(scope="fragment")
            if b[2].button("Cancel", key=f"cancel_{r.run_id}"):
                send(r.run_id, "cancel")
                st.rerun(scope="fragment")
        if b[4].button("Delete", key=f"delete_{r.run_id}", disabled=elsewhere,
                       help="a run another process is writing can be deleted once it ends" if elsewhere else None):
            st.session_state["confirm_delete"] = r.run_id
        if st.session_state.get("confirm_delete") == r.run_id:
            st.warning(f"Delete {r.run_id} and all its files?")
            y, n = st.columns(2)
            if y.button("Yes, delete", key=f"yes_{r.run_id}", type="primary"):
                mgr.delete(r.run_id)
                st.session_state.pop("confirm_delete", None)
                if selected_run() == r.run_id:
                    st.session_state.pop("run_id", None)
                st.rerun()
            if n.button("Keep it", key=f"no_{r.run_id}"):
                st.session_state.pop("confirm_delete", None)
                st.rerun(scope="fragment")


@st.fragment(run_every=2)
def run_table() -> None:
    for r in manager().list():
        run_card(r)


def render() -> None:
    header("Runs", "Each run trains a network from scratch, searches its pruned sub-network every epoch and prunes "
           "it when the sub-network stops changing. Start the demo to watch the whole cycle on the bundled digits "
           "in about half a minute; the other pages follow the run picked in the sidebar.")
    demo = st.button("▶ Start the demo run", type="primary", key="start_demo",
                     help="digits, 40 epochs, CPU: the whole one-cycle pruning in about 30 s")
    pending = start_form()
    if demo or pending is not None:
        start(get_preset("demo") if demo else pending)
    if not manager().list():
        empty_state("No runs yet. Press **Start the demo run** above: it needs no download and no GPU.")
        return
    run_table()


if __name__ == "__main__":
    enter_frame()
