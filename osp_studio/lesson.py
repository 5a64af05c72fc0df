"""The guided lesson: one click starts the lesson run (the demo, pausing itself at each moment worth
explaining: osp_engine/method/moments.py); a panel atop every page tells the story step by step, moves to
the page that shows each step, and continues the run when the teacher presses Continue (or N). A run
that has ended is walked the same way, each step replayed at the epoch it happened. Nothing here
imports torch."""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from osp_engine.interfaces.presets import get_preset
from osp_engine.method.moments import moment_epochs
from osp_studio.control import manager, may_steer, send, steering
from osp_studio.layout import header
from osp_studio.routing import reader, select_run, selected_run


@dataclass(frozen=True)
class Step:
    key: str                  # a moment of method/moments.py, or "dense", "finetune", "branches"
    title: str
    page: str                 # the url path of the page that shows it
    text: str


STEPS = (
    Step("dense", "1 · Dense training", "stability",
         "The network trains at full width. At the start of every epoch osp searches a candidate "
         "sub-network: in every group it marks the channels of lowest saliency until the FLOPs target is met. "
         "Nothing is removed yet."),
    Step("searched", "2 · The first candidate", "channels",
         "Each row is a group, each column an epoch: dark cells are channels the candidate keeps. Early on the "
         "candidate changes from one epoch to the next, because the weights that decide it are still moving."),
    Step("regularizer", "3 · The regulariser starts", "stability",
         "From now on the channels the candidate marks are shrunk a little after every step, more each "
         "epoch. Marked channels fade, so the next searches tend to mark the same ones again."),
    Step("stability", "4 · The candidate settles", "stability",
         "The PSI compares each candidate with the one two epochs before (1 = no channel changed side). It is "
         "now close to the threshold: the sub-network has almost stopped changing."),
    Step("pruned", "5 · The prune", "tradeoff",
         "The PSI reached the threshold (or the forced epoch came): the marked channels were removed "
         "physically. The network is now smaller and cheaper; its accuracy dipped and will recover."),
    Step("finetune", "6 · Fine-tuning", "stability",
         "The pruned network keeps training on the same learning-rate schedule, so the epochs after the "
         "prune are its fine-tuning. Watch the accuracy climb back."),
    Step("branches", "7 · What if we had pruned elsewhere?", "branches",
         "Each branch prunes the same run at another epoch, from the checkpoint kept there, and fine-tunes to "
         "the end. Measured on this lesson over 3 seeds: pruning at epoch 1 ended 7 points above pruning at "
         "the stable epoch on average, for a quarter of the training cost, though seeds vary by as much; at 95 % "
         "removed, the epochs of high learning rate left after an early prune can matter more than a settled "
         "candidate. Sweep and see."),
)
INDEX = {s.key: i for i, s in enumerate(STEPS)}
LIVE_MESSAGE = "Training… the lesson moves on at the next moment."


def lesson() -> dict | None:
    """The lesson under way in this session: {run, step, live, moved}, or None."""
    return st.session_state.get("lesson")


def _begin(run_id: str, live: bool) -> None:
    st.session_state["lesson"] = dict(run=run_id, step=0, live=live, moved=True)
    select_run(run_id)
    _replay_at(run_id, 0, live)


@steering
def start_lesson() -> None:
    """Start the lesson run and the lesson on it (a button callback: it runs whatever page comes next)."""
    _begin(manager().start(get_preset("lesson")), live=True)


def walk_run(run_id: str) -> None:
    _begin(run_id, live=False)


def end_lesson() -> None:
    state = st.session_state.pop("lesson", None)
    if state and state["live"] and may_steer():
        controls = manager().controls(state["run"])
        if controls is not None and controls["paused"]:
            send(state["run"], "resume")                   # never leave the run waiting for a teacher
    st.session_state["replay_on"] = False


def _epoch_of(run_id: str, step: Step) -> int | None:
    """The epoch a step of an ended run is replayed at (None: the whole run)."""
    r = reader(run_id)
    if r is None or step.key == "branches":
        return None
    info, rows = r.info(), r.epochs()
    found = moment_epochs(rows, info["t_star"], info["threshold"])
    if step.key == "dense":
        return max(found.get("searched", 1) - 1, 0)
    if step.key == "finetune":
        return rows[-1]["epoch"] if rows else None
    return found.get(step.key)


def _replay_at(run_id: str, index: int, live: bool) -> None:
    """An ended run: the replay slider at the step's epoch (the pages follow it); a live run: as it is."""
    if live:
        return
    epoch = _epoch_of(run_id, STEPS[index])
    st.session_state["replay_on"] = epoch is not None
    if epoch is not None:
        st.session_state[f"replay_{run_id}"] = epoch


def _go(index: int) -> None:
    state = lesson()
    state.update(step=index, moved=True)
    _replay_at(state["run"], index, state["live"])


def continue_lesson() -> None:
    """Continue: a paused lesson run resumes (after the prune, on to fine-tuning); an ended run's next step."""
    state = lesson()
    if state is None:
        return
    if not state["live"]:
        _go(min(state["step"] + 1, len(STEPS) - 1))
        return
    if send(state["run"], "resume") and STEPS[state["step"]].key == "pruned":
        _go(INDEX["finetune"])


def back() -> None:
    state = lesson()
    if state is not None and not state["live"]:
        _go(max(state["step"] - 1, 0))


def _live_step(run_id: str, step: int) -> tuple[int, bool]:
    """(the step a live lesson run has reached, whether it is paused there)."""
    r = reader(run_id)
    if r is None:
        return step, False
    if r.info()["ended"]:
        return max(step, INDEX["branches"]), False
    controls = manager().controls(run_id)
    paused = bool(controls and controls["paused"])
    last = r.last_event("moment")
    moment = last["data"].get("moment") if last else None
    if paused and moment in INDEX:
        return max(step, INDEX[moment]), True
    return step, paused


@st.fragment(run_every=1)
def _follow() -> None:
    """Every second: move a live lesson to the step its run paused at (or ended at), then redraw the app."""
    state = lesson()
    if state is None or not state["live"]:
        return
    step, _ = _live_step(state["run"], state["step"])
    if step != state["step"]:
        _go(step)
        st.rerun()


SETTLE_S = 0.3               # the quiet run's wait: requests the browser sent before it dropped its timers arrive


def move_if_due(pages: dict, here: str) -> None:
    """Move to the page of the lesson's step, when the step changed, in two runs of the app, called before
    anything else is drawn. The first run draws nothing that refreshes on its own, so the browser drops
    its timed refreshes of this page, waits SETTLE_S for the ones already sent, and reruns (a rerun
    absorbs them); the second switches page. Switching at once raced those refreshes: one that reached
    the server after the switch ran this page again under the new one, and the browser's Streamlit
    stopped drawing (a blank page, "Bad delta path index", as the lesson started on a loaded machine).
    pages: url path -> the app's st.Page; here: the url path of the page asked for."""
    state = lesson()
    if state is None:
        return
    target = STEPS[state["step"]].page
    if state.pop("moving", False):
        if here != target:
            st.switch_page(pages[target])
        return
    if state.pop("moved", False) and here != target:
        state["moving"] = True
        st.caption(f"Lesson: moving to {STEPS[state['step']].title}…")
        time.sleep(SETTLE_S)
        st.rerun()


def lesson_panel(pages: dict, here: str) -> None:
    """The lesson's panel at the top of every page (where a room looks, within 1280x720); the move to a
    step's page is move_if_due's. pages: url path -> the app's st.Page; here: the page being drawn."""
    state = lesson()
    if state is None:
        return
    if reader(state["run"]) is None:
        if state["run"] in [q[0] for q in manager().queued()]:
            st.info("Lesson: queued. It starts when the run training on this device ends.", icon="⏳")
        else:                                              # deleted meanwhile
            st.session_state.pop("lesson", None)
        return
    step = STEPS[state["step"]]
    with st.sidebar:
        _follow()
    with st.container(border=True, key="lesson-panel"):
        st.markdown(f"**Lesson · {step.title}** — {step.text}")
        _controls(state, step)


def _controls(state: dict, step: Step) -> None:
    """One row: where the run stands, then Back / Continue / End."""
    with st.container(horizontal=True, vertical_alignment="center"):
        if state["live"]:
            _, paused = _live_step(state["run"], state["step"])
            if paused:
                st.caption("The run is paused here. Continue (N) resumes it.")
            elif step.key != "branches":
                st.caption(LIVE_MESSAGE)
            st.button("Continue", key="lesson_continue", type="primary", shortcut="N", disabled=not paused,
                      on_click=continue_lesson)
        else:
            st.caption(f"Step {state['step'] + 1} of {len(STEPS)}, replayed at the epoch it happened.")
            st.button("Back", key="lesson_back", shortcut="B", disabled=state["step"] == 0, on_click=back)
            st.button("Continue", key="lesson_continue", type="primary", shortcut="N",
                      disabled=state["step"] == len(STEPS) - 1, on_click=continue_lesson)
        st.button("End", key="lesson_end", help="leave the lesson (a paused run resumes)", on_click=end_lesson)


def render() -> None:
    header("Lesson", "A guided tour of one cycle: the lesson run pauses at each moment worth explaining, and the "
                     "sidebar says what to look at on the page it opens. Continue (or N) moves on.")
    state = lesson()
    st.markdown("\n".join(f"{'▶' if state and i == state['step'] else '·'} **{s.title}**" for i, s in enumerate(STEPS)))
    if may_steer():
        st.button("Start the lesson", key="lesson_start", type="primary", icon=":material/school:",
                  on_click=start_lesson, help="the demo on the bundled digits (about a minute with the pauses)")
    r = reader(selected_run())
    if r is not None and r.info()["ended"] and r.last_epoch() >= 1:
        st.button(f"Walk through {r.run_id}", key="lesson_walk", on_click=walk_run, args=(r.run_id,),
                  help="the same steps on the selected run, each replayed at the epoch it happened")
    if state is not None:
        st.button("End the lesson", key="lesson_end_page", on_click=end_lesson)
