"""Replay and the cached reads under it: every page reads a run's epochs, masks and similarity here,
cut at the replay slider's epoch when a finished run is replayed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from osp_engine.method.analysis import pairwise_jaccard
from osp_engine.storage.reader import RunReader
from osp_studio.routing import reader, selected_run

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
