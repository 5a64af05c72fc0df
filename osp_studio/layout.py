"""The pages' common layout: the header, explainers, teaching mode, the empty state, the chart warm-up."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

def explain(text: str) -> None:
    st.caption(text)

def teaching() -> bool:
    """Teaching mode (the sidebar toggle): explainers beside the charts and projector-sized fonts."""
    return bool(st.session_state.get("teaching", False))

def empty_state(text: str) -> None:
    st.info(text, icon="ℹ️")

def compact() -> bool:
    """A lesson is under way: its panel narrates, so the pages drop their explainers and draw the chart
    first, in view on a 1280x720 projector without scrolling."""
    return st.session_state.get("lesson") is not None

def header(title: str, text: str) -> None:
    """Every page opens with its title and the two sentences on what it shows and what to look for (not
    during a lesson: the lesson's panel says what to look at)."""
    st.title(title)
    if not compact():
        explain(text)

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
