"""osp studio: Streamlit entry. Page config, navigation over pages/, the run picker in the sidebar."""
import streamlit as st

from pages.common import sidebar_run_picker

st.set_page_config(page_title="osp studio", page_icon=":material/content_cut:", layout="wide")
nav = st.navigation([
    st.Page("pages/runs.py", title="Runs", icon=":material/play_circle:", default=True),
    st.Page("pages/stability.py", title="Stability", icon=":material/show_chart:"),
    st.Page("pages/channels.py", title="Channels", icon=":material/grid_on:"),
    st.Page("pages/tradeoff.py", title="Trade-off", icon=":material/balance:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
])
sidebar_run_picker()
nav.run()
