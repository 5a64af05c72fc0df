"""Shared pieces of the studio pages: the run manager, the run picker, page headers, cached reads.

Pages read the run store only (through RunReader) and steer live runs through the manager; nothing
here imports torch.
"""
from __future__ import annotations

import html
import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine.analysis import pairwise_jaccard
from osp_engine.manager import RunManager
from osp_engine.presets import get_preset
from osp_engine.store import RunReader, runs_root


APP = Path(__file__).resolve().parents[1] / "app.py"


def enter_frame() -> None:
    """Run app.py, the studio's frame, for a page file that Streamlit executed on its own.

    Until some session has called st.navigation, Streamlit routes a deep link such as /stability
    through its legacy pages/ folder and runs pages/stability.py as a script: no navigation, no run
    picker. Each page file hands over to app.py in that case; its st.navigation then renders the
    page asked for (the URL path and query are kept) and switches the server to st.navigation.
    """
    runpy.run_path(str(APP), run_name="osp_frame")


@st.cache_resource(on_release=lambda m: m.shutdown())
def _manager(root: str) -> RunManager:
    manager = RunManager(root)
    manager.warm_up(get_preset("demo"))          # so the first click on "Start the demo run" starts at once
    return manager


def manager() -> RunManager:
    """One run manager per server process and runs folder; its threads are cancelled on release."""
    return _manager(str(runs_root()))


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


def send(run_id: str, name: str, *args) -> bool:
    """A command for a live run; a run that ended meanwhile is reported on the page, not raised."""
    try:
        manager().command(run_id, name, *args)
        return True
    except RuntimeError as e:
        st.warning(str(e))
        return False


def explain(text: str) -> None:
    st.caption(text)


def teaching() -> bool:
    """Teaching mode (the sidebar toggle): explainers beside the charts and projector-sized fonts."""
    return bool(st.session_state.get("teaching", False))


def empty_state(text: str) -> None:
    st.info(text, icon="ℹ️")


def header(title: str, text: str) -> None:
    """Every page opens with its title and the two sentences on what it shows and what to look for."""
    st.title(title)
    explain(text)


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


@st.cache_data(max_entries=64, show_spinner=False)
def epochs_frame(run_dir: str, last_epoch: int, status: str) -> pd.DataFrame:
    """All epoch rows; the cache key includes the newest epoch, so a page recomputes only on new data."""
    return pd.DataFrame(RunReader(run_dir).epochs())


@st.cache_data(max_entries=16, show_spinner=False)
def mask_data(run_dir: str, last_epoch: int, status: str):
    r = RunReader(run_dir)
    epochs, kept = r.mask_matrix()
    return epochs, kept, r.groups()


@st.cache_data(max_entries=16, show_spinner=False)
def similarity(run_dir: str, last_epoch: int, status: str) -> tuple[list[int], np.ndarray]:
    """(searched epochs, (E, E) pairwise Jaccard of their candidates), once per new epoch."""
    epochs, kept, groups = mask_data(run_dir, last_epoch, status)
    return epochs, pairwise_jaccard(kept, [g["size"] for g in groups])


def run_key(r: RunReader) -> tuple[str, int, str]:
    return str(r.dir), r.last_epoch(), r.info()["status"]


def replay_epoch(run_id: str) -> int | None:
    """The epoch the replay slider stands at for this run (None: no replay, show everything)."""
    replay = st.session_state.get("replay")
    return replay[1] if replay and replay[0] == run_id else None


def sidebar_replay() -> None:
    """Replay a run that has ended: an epoch slider every page follows, as if the run stood there."""
    run = reader(selected_run())
    if run is None or run.info()["display_status"] == "running" or run.last_epoch() < 1:
        st.session_state.pop("replay", None)
        return
    with st.sidebar:
        if st.toggle("Replay this run", key="replay_on", help="every page shows the run as it stood at the epoch"):
            last = run.last_epoch()
            epoch = st.slider("Replay at epoch", 0, last, last, key=f"replay_{run.run_id}")
            st.session_state["replay"] = (run.run_id, int(epoch))
        else:
            st.session_state.pop("replay", None)


def run_frame(r: RunReader) -> pd.DataFrame:
    """The run's epoch rows, up to the replay epoch when replaying."""
    df = epochs_frame(*run_key(r))
    cut = replay_epoch(r.run_id)
    return df if cut is None or df.empty else df[df["epoch"] <= cut].reset_index(drop=True)


def run_info(r: RunReader) -> dict:
    """The run's info as it stood at the replay epoch: no t* or t_sl_start before they happened."""
    info = r.info()
    cut = replay_epoch(r.run_id)
    if cut is None:
        return info
    info = dict(info, display_status=f"replay at epoch {cut} of {info['display_status']}")
    for name in ("t_star", "t_sl_start"):
        if info[name] is not None and int(info[name]) > cut:
            info[name] = None
    if info["t_star"] is None:
        info["prune_reason"] = None
    return info


def run_masks(r: RunReader):
    """(searched epochs, kept (E, N) bool, groups), up to the replay epoch when replaying."""
    epochs, kept, groups = mask_data(*run_key(r))
    cut = replay_epoch(r.run_id)
    if cut is None:
        return epochs, kept, groups
    n = sum(e <= cut for e in epochs)
    return epochs[:n], kept[:n], groups


def run_similarity(r: RunReader) -> tuple[list[int], np.ndarray]:
    epochs, sim = similarity(*run_key(r))
    cut = replay_epoch(r.run_id)
    if cut is None:
        return epochs, sim
    n = sum(e <= cut for e in epochs)
    return epochs[:n], sim[:n, :n]


VARIANT_TEXT = {
    "official": "reproduces the official code, its known quirks included",
    "corrected": "fixes the official code's known quirks (see docs/method.md)",
    "unrecorded": "made before osp recorded variants",
}


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:])")


def plain(value) -> str:
    """Text read from a run.db as literal text inside Markdown: one line, every Markdown character
    escaped, so a crafted name or error can draw no link, image or formatting (nothing is fetched)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))


def chart_text(value) -> str:
    """Text read from a run.db as literal text inside a Plotly chart: Plotly draws <a href>, <img>-free
    pseudo-HTML in names, ticks and annotations, so every tag character becomes an entity it shows as is."""
    return html.escape(" ".join(str(value).split()), quote=False)


def variant_line(variant: str) -> str:
    """'variant official — reproduces the official code, …': what a run's variant means, in one line."""
    return f"variant **{plain(variant)}** — {VARIANT_TEXT.get(variant, 'unknown')}"


def percent(x) -> float | None:
    """A fraction as a percentage with one decimal, for tables (None stays None)."""
    return None if x is None else round(100 * x, 1)


def seconds_per_epoch(r: RunReader, epochs_done: int) -> float | None:
    """The mean wall time of the run's last five stored epochs (None before the first)."""
    recent = [row["epoch_seconds"] for row in r.epochs(epochs_done - 6) if row.get("epoch_seconds")]
    return sum(recent) / len(recent) if recent else None


def fmt_pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f} %"


if __name__ == "__main__":                 # a helper module, opened as a page by the legacy pages/ routing
    enter_frame()


def warm_chart_renderer() -> None:
    """Once per browser session, draw an empty chart out of sight, so the browser loads and compiles the
    chart library (plotly.js, about 4 MB) while the user reads the first page rather than after the click
    that starts a run: the first real chart then appears about 2 s sooner on a 2-core machine."""
    if st.session_state.get("_chart_renderer_warm"):
        return
    st.session_state["_chart_renderer_warm"] = True
    st.html("<style>.st-key-chart-warmup {display: none}</style>")
    with st.container(key="chart-warmup"):
        st.plotly_chart(go.Figure(layout={"height": 10}), key="chart_warmup")
