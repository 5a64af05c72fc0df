"""Files a download builds when pressed (a run's report, its ONNX model), built once per run version.

Building costs the machine's cores for seconds to minutes, and in a shared studio those cores train the
presenter's runs: a viewer's click must not start a build. So a session that may steer builds, and the
result is kept (the newest version per run and kind, in the server's memory); a viewer is offered only
a build already made for the run as it is now."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from osp_studio.control import may_steer


@st.cache_resource
def _kept() -> dict:
    """(kind, run id) -> (run version, bytes): one per server process."""
    return {}


def built(kind: str, run_id: str, version: tuple) -> bytes | None:
    """The bytes built for this run at this version, or None."""
    got = _kept().get((kind, run_id))
    return got[1] if got and got[0] == version else None


def building(kind: str, run_id: str, version: tuple, make: Callable[[], bytes]) -> Callable[[], bytes]:
    """A deferred download that serves the kept bytes, else makes them and keeps them."""
    def deliver() -> bytes:
        data = built(kind, run_id, version)
        if data is None:
            data = make()
            _kept()[(kind, run_id)] = (version, data)
        return data
    return deliver


def offer(column, kind: str, run_id: str, version: tuple, make: Callable[[], bytes], label: str, **button) -> None:
    """A download button for a file built when pressed: for a viewer, only once it has been built."""
    if may_steer():
        column.download_button(label, building(kind, run_id, version, make), on_click="ignore", **button)
    elif (data := built(kind, run_id, version)) is not None:
        column.download_button(label, lambda: data, on_click="ignore", **button)
    else:
        column.caption(f"{label}: built when the presenter downloads it (it costs the training cores); "
                       "then here too.")
