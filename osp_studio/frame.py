"""The studio's frame, run on every rerun: page config, navigation over the pages' render functions,
the sidebar (pages, teaching mode, run picker, replay, presenter), the lesson's panel, then the page.
Entered from app.py in a checkout and from osp_studio/app.py once installed (`osp studio`)."""
from pathlib import Path

import streamlit as st

from osp_studio import branches, channels, compare, lesson, runs, stability, tradeoff
from osp_studio.control import show_refusal, sidebar_presenter
from osp_studio.layout import compact, warm_chart_renderer
from osp_studio.replay import sidebar_replay
from osp_studio.routing import sidebar_run_picker

ICON = Path(__file__).with_name("icon.png")   # served by this server: a Material icon as favicon is fetched from Google


def serve() -> None:
    """Draw the frame and the page the URL asks for (Streamlit's st.navigation picks it, deep links included)."""
    st.set_page_config(page_title="osp studio", page_icon=str(ICON), layout="wide")
    listed = [
        st.Page(runs.render, title="Runs", icon=":material/play_circle:", url_path="home", default=True),
        st.Page(stability.render, title="Stability", icon=":material/show_chart:", url_path="stability"),
        st.Page(channels.render, title="Channels", icon=":material/grid_on:", url_path="channels"),
        st.Page(tradeoff.render, title="Trade-off", icon=":material/balance:", url_path="tradeoff"),
        st.Page(compare.render, title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page(branches.render, title="Branches", icon=":material/call_split:", url_path="branches"),
        st.Page(lesson.render, title="Lesson", icon=":material/school:", url_path="lesson"),
    ]
    # The default page is served at "/" only: an unlisted second route to it answers the deep links
    # /runs and /runs?run=<id> instead of "Page not found". The links are drawn here, so it stays unlisted.
    nav = st.navigation(listed + [st.Page(runs.render, title="Runs", url_path="runs")], position="hidden")
    lesson.move_if_due({p.url_path: p for p in listed}, nav.url_path)   # first: a lesson's move to its step's page
    with st.sidebar:
        for page in listed:
            st.page_link(page)
        st.toggle("Teaching mode", key="teaching",
                  help="explainers beside the charts, and fonts sized for a projector (1280x720)")
    if compact():                           # a lesson: less room above the chart (1280x720)
        st.html("<style>[data-testid=\"stMainBlockContainer\"] {padding-top: 1.5rem !important}"
                "h1 {font-size: 2rem !important; padding: 0.25rem 0 0.5rem !important}</style>")
    if st.session_state.get("teaching"):
        st.html("<style>html, .stMarkdown p, .stCaption p, label p {font-size: 18px !important}"
                '[data-testid="stMainBlockContainer"] {padding-top: 2rem !important}</style>')   # the chart higher up
    sidebar_run_picker()
    sidebar_replay()
    sidebar_presenter()                         # shared with a room: viewers until the presenter token is entered
    show_refusal()
    lesson.lesson_panel({p.url_path: p for p in listed}, nav.url_path)
    warm_chart_renderer()
    nav.run()
