"""Shared pieces of the studio pages: the run manager, the run picker, cached reads, figure helpers.

Pages read the run store only (through RunReader) and steer live runs through the manager; nothing
here imports torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine.analysis import phase_spans
from osp_engine.manager import RunManager
from osp_engine.store import RunReader, runs_root

PHASE_COLOURS = {"dense": "rgba(120,120,120,0.10)", "sparsity": "rgba(221,107,32,0.12)",
                 "pruned": "rgba(43,108,176,0.12)"}


@st.cache_resource(on_release=lambda m: m.shutdown())
def _manager(root: str) -> RunManager:
    return RunManager(root)


def manager() -> RunManager:
    """One run manager per server process and runs folder; its threads are cancelled on release."""
    return _manager(str(runs_root()))


def selected_run() -> str | None:
    return st.session_state.get("run_id")


def select_run(run_id: str) -> None:
    st.session_state["run_id"] = run_id
    st.query_params["run"] = run_id


def sidebar_run_picker() -> None:
    """The sidebar selectbox; the pick lives in session state and the URL, so it survives page changes."""
    runs = [r.run_id for r in manager().list()]
    wanted = st.session_state.get("run_id") or st.query_params.get("run")
    if wanted not in runs:
        wanted = runs[0] if runs else None
    with st.sidebar:
        if not runs:
            st.caption("No runs yet: start one on the Runs page.")
            st.session_state.pop("run_id", None)
            return
        pick = st.selectbox("Run", runs, index=runs.index(wanted), key="run_picker")
        if pick != st.session_state.get("run_id"):
            select_run(pick)


def reader(run_id: str | None) -> RunReader | None:
    if run_id is None:
        return None
    try:
        return manager().reader(run_id)
    except (ValueError, FileNotFoundError):
        return None


def explain(text: str) -> None:
    st.caption(text)


def empty_state(text: str) -> None:
    st.info(text, icon="ℹ️")


@st.cache_data(max_entries=64, show_spinner=False)
def epochs_frame(run_dir: str, last_epoch: int, status: str) -> pd.DataFrame:
    """All epoch rows; the cache key includes the newest epoch, so a page recomputes only on new data."""
    return pd.DataFrame(RunReader(run_dir).epochs())


@st.cache_data(max_entries=16, show_spinner=False)
def mask_data(run_dir: str, last_epoch: int, status: str):
    r = RunReader(run_dir)
    epochs, kept = r.mask_matrix()
    return epochs, kept, r.groups()


def run_key(r: RunReader) -> tuple[str, int, str]:
    return str(r.dir), r.last_epoch(), r.info()["status"]


def add_phase_bands(fig: go.Figure, df: pd.DataFrame, row: int | None = None) -> None:
    if df.empty:
        return
    for phase, a, b in phase_spans(df["epoch"].tolist(), df["phase"].tolist()):
        kw = dict(row=row, col=1) if row else {}
        fig.add_vrect(x0=a - 0.5, x1=b + 0.5, fillcolor=PHASE_COLOURS.get(phase, "rgba(0,0,0,0)"),
                      line_width=0, layer="below", **kw)


def fmt_pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f} %"
