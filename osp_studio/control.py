"""Who may change anything: the run manager, the commands sent to live runs, and shared mode.

The studio is local only while its server listens on loopback alone (localhost, 127.0.0.1, ::1), read
from the address the running server uses (.streamlit/config.toml and `osp studio` bind localhost).
Anything else serves a room and turns shared mode on: an address beyond loopback, and an unset one
(Streamlit then listens on every interface), whatever folder, config file or Streamlit version started
it; OSP_SHARE=1 turns it on for a loopback studio too, and nothing turns it off for one beyond loopback.
Every session is then a viewer, which sees every page live but no control that changes anything,
until it enters the presenter token in the sidebar: OSP_PRESENTER_TOKEN if the person starting the
studio set it, else a random one printed once to the studio's terminal. The token is compared in
constant time. Controls are hidden from viewers, and every callback that changes something is wrapped
in `steering`, which refuses for a viewer: a callback forged without the token changes nothing.
"""
from __future__ import annotations

import functools
import hmac
import os
import secrets
import sys
from typing import Callable

import streamlit as st

from osp_engine.interfaces.presets import get_preset
from osp_engine.running.manager import RunManager
from osp_engine.storage.store import runs_root

LOCAL = ("localhost", "127.0.0.1", "::1")
READ_ONLY = "This studio is shared read-only: enter the presenter token in the sidebar to control runs."


@st.cache_resource(on_release=lambda m: m.shutdown())
def _manager(root: str) -> RunManager:
    manager = RunManager(root)
    if os.environ.get("OSP_WARM_UP", "1").strip() != "0":    # the tests turn it off: CPU they need, a thread at exit
        manager.warm_up(get_preset("demo"))      # so the first click on "Start the demo run" starts at once
    return manager


def manager() -> RunManager:
    """One run manager per server process and runs folder; its threads are cancelled on release."""
    return _manager(str(runs_root()))


def shared() -> bool:
    """Whether the studio serves a room (fails closed): its server's address is not loopback alone (an
    unset address listens on every interface), or OSP_SHARE=1. OSP_SHARE=0 changes nothing."""
    if os.environ.get("OSP_SHARE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    address = st.get_option("server.address")
    return (address or "").strip().strip("[]").lower() not in LOCAL


@st.cache_resource
def presenter_token() -> str:
    """The token of this server process: OSP_PRESENTER_TOKEN, else a random one, printed once."""
    token = os.environ.get("OSP_PRESENTER_TOKEN", "").strip()
    if not token:
        token = secrets.token_urlsafe(9)
        print(f"osp studio is shared read-only; presenter token: {token} (enter it in the sidebar to control runs)",
              file=sys.stderr, flush=True)
    return token


def may_steer() -> bool:
    """Whether this session may change anything: always locally, as the presenter when shared."""
    return not shared() or bool(st.session_state.get("presenter"))


def steering(callback: Callable) -> Callable:
    """Wrap a callback that changes something: for a viewer it does nothing and says why."""
    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        if not may_steer():
            st.session_state["refused"] = READ_ONLY
            return None
        return callback(*args, **kwargs)
    return guarded


def _unlock() -> None:
    """The presenter form's callback: compares the token in constant time, then forgets what was typed."""
    typed = st.session_state.pop("presenter_typed", "") or ""
    ok = hmac.compare_digest(typed.encode(), presenter_token().encode())
    st.session_state["presenter"] = ok
    st.session_state["presenter_failed"] = not ok


def sidebar_presenter() -> None:
    """In shared mode: the presenter's unlock form, or a note that this session controls the runs."""
    if not shared():
        return
    presenter_token()                          # printed when the first session opens the studio
    with st.sidebar:
        if st.session_state.get("presenter"):
            st.caption("Presenter: this session controls the runs.")
            st.button("Lock controls", key="presenter_lock", on_click=st.session_state.update, args=({"presenter": False},))
            return
        st.caption("Shared read-only: every page is live; controls need the presenter token.")
        with st.form("presenter_form", border=False):
            st.text_input("Presenter token", type="password", key="presenter_typed")
            st.form_submit_button("Unlock controls", on_click=_unlock)
        if st.session_state.get("presenter_failed"):
            st.error("That is not the presenter token.")


def show_refusal() -> None:
    """Say once, at the top of the page, that a viewer's action was refused."""
    refused = st.session_state.pop("refused", None)
    if refused:
        st.warning(refused)


@steering
def send(run_id: str, name: str, *args) -> bool:
    """A command for a live run; a run that ended meanwhile is reported on the page, not raised."""
    try:
        manager().command(run_id, name, *args)
        return True
    except RuntimeError as e:
        st.warning(str(e))
        return False
