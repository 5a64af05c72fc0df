"""Where the studio is: the run picked in the sidebar and the URL, and the pages'
ways to ask for a run. Nothing here imports torch."""
from __future__ import annotations

import streamlit as st

from osp_engine.storage.reader import RunReader
from osp_studio.control import manager
from osp_studio.layout import empty_state


def selected_run() -> str | None:
    return st.session_state.get("run_id")

def select_run(run_id: str | None) -> None:
    """Pick `run_id` (None: no pick); the sidebar shows it from the next full run of the app."""
    if run_id is None:
        st.session_state.pop("run_id", None)
    else:
        st.session_state["run_id"] = run_id
        st.query_params["run"] = run_id
    st.session_state["picker_stale"] = True

def refresh_picker() -> None:
    """For a fragment: if the pick moved since the sidebar was drawn (Open, Delete, a cut-short callback),
    rerun the whole app so the sidebar shows it."""
    if st.session_state.pop("picker_stale", False):
        st.rerun()

def _picked(key: str, shown: str) -> None:
    """The picker's on_change. A browser that has not yet seen a pick made elsewhere (a page link
    clicked right after Start) sends its old picker's value with its next request, and Streamlit calls
    that a change; only a change to the widget drawn for the current pick is the user's."""
    if st.session_state.get("run_id") in (shown, None):
        select_run(st.session_state[key])

def run_ids() -> list[str]:
    """The ids of the readable runs, newest first, as the sidebar and the pages list them."""
    return [r.run_id for r in manager().list()]

@st.fragment(run_every=1)
def follow_runs() -> None:
    """Every second, rerun the whole app if the sidebar is out of date: the runs folder gained or lost a
    run (a command-line run started, another tab deleted one), or a button callback moved the pick in
    a rerun that Streamlit cut short before the sidebar was drawn (a page link clicked right after)."""
    if run_ids() != st.session_state.get("picker_runs"):
        st.rerun()
    refresh_picker()

def sidebar_run_picker() -> None:
    """The sidebar selectbox; the pick lives in session state and the URL, so it survives page changes.

    The pick moves three ways: this selectbox, a page (Open, Start), or a ?run= URL. The widget is
    keyed by the pick, so a pick made elsewhere draws a fresh widget showing it.
    """
    st.session_state.pop("picker_stale", None)
    runs = run_ids()
    wanted = st.session_state.get("run_id") or st.query_params.get("run")
    if wanted not in runs:                   # unknown, deleted or malformed: never passed to the file system
        wanted = runs[0] if runs else None
    st.session_state["picker_runs"] = runs
    with st.sidebar:
        follow_runs()
        if not runs:
            st.caption("No runs yet: start one on the Runs page.")
            st.session_state.pop("run_id", None)
            return
        key = f"run_picker_{wanted}"
        st.selectbox("Run", runs, index=runs.index(wanted), key=key, on_change=_picked, args=(key, wanted))
    if wanted != st.session_state.get("run_id") or wanted != st.query_params.get("run"):
        select_run(wanted)                   # a page change clears the URL's query; put the pick back
        st.session_state.pop("picker_stale", None)

def reader(run_id: str | None) -> RunReader | None:
    if run_id is None:
        return None
    try:
        return manager().reader(run_id)
    except (ValueError, FileNotFoundError):
        return None

@st.fragment(run_every=0.5)
def _await_run(listed: list[str]) -> None:
    """While a page has no run, look for one twice a second: a run started a moment ago (a click on
    Start, then at once on a page link) is shown as soon as its folder exists, not at the sidebar's
    next refresh."""
    if run_ids() != listed:
        st.rerun()

def require_run() -> RunReader:
    """The run picked in the sidebar; without one the page shows what to do and stops here."""
    run = reader(selected_run())
    if run is None:
        empty_state("No run selected. Start the demo on the Runs page, then come back here.")
        _await_run(run_ids())
        st.stop()
    return run

def pick_runs(key: str, default: list[str] | None = None) -> list[str]:
    """A multiselect over every run (default: the sidebar's run); without runs the page says so and stops."""
    runs = run_ids()
    if not runs:
        empty_state("No runs yet. Start the demo on the Runs page.")
        st.stop()
    if default is None:
        default = [selected_run()] if selected_run() in runs else runs[:1]
    return st.multiselect("Runs", runs, default=default, key=key)
