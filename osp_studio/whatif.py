""""What if I had pruned here?": start a branch, or a sweep of branches, of the picked run (no engine
logic here: the run manager queues them, osp_engine/running/branch.py says what a branch is)."""
import streamlit as st

from osp_engine import ConfigError
from osp_engine.running.branch import branch_epochs, checkpoints_bytes, epoch_label
from osp_studio.control import manager, may_steer, steering
from osp_studio.text import plain

DISTILL = 0.5                                          # the soft term's weight a distilled branch uses


@steering
def start_branches(run_id: str, epochs: list[int] | None = None) -> None:
    """The buttons' callback: queue one branch per epoch (None: the slider's epoch as sent with the
    click, not as it was when the page was drawn); an error is kept for the next draw."""
    if epochs is None:
        epochs = [st.session_state[f"whatif_epoch_{run_id}"]]
    changes = {"distill": DISTILL} if st.session_state.get(f"whatif_distill_{run_id}") else None
    st.session_state.pop("whatif_error", None)
    try:
        started = manager().sweep(run_id, epochs, changes)
    except ConfigError as e:
        st.session_state["whatif_error"] = str(e)
        return
    st.session_state["whatif_started"] = started
    st.toast(f"Queued {len(started)} branch{'es' if len(started) > 1 else ''} of {run_id}")


def what_if(run_id: str, info: dict) -> None:
    """An epoch picker over the run's kept checkpoints, 'What if I had pruned here?' and 'Sweep'."""
    cfg = info["config"]
    if cfg.get("parent"):
        st.caption(f"This run is a branch of {plain(cfg['parent'])}, pruned at epoch {epoch_label(cfg['branch_epoch'])}: "
                   f"its parent's Branches page shows it beside the others.")
        return
    run_dir = manager().reader(run_id).dir
    kept = branch_epochs(run_dir)
    if not may_steer():                            # a viewer of a shared studio: nothing to start
        return
    if not kept:
        st.caption("No checkpoints kept, so no branches: start a run with keep_checkpoints=1 (the demo does) "
                   "to ask what pruning at another epoch would have given.")
        return
    with st.container(border=True):
        st.markdown(f"**What if I had pruned at another epoch?** {len(kept)} checkpoints kept "
                    f"({checkpoints_bytes(run_dir) / 1e6:.1f} MB): a branch prunes that "
                    f"epoch's candidate and fine-tunes to the end of the same schedule, as a run of its own.")
        default = info["t_star"] if info["t_star"] in kept else kept[len(kept) // 2]
        c1, c2, c3 = st.columns([3, 2, 2])
        c1.select_slider("Prune epoch", kept, value=default, key=f"whatif_epoch_{run_id}", format_func=epoch_label,
                         help="init: the untrained network, pruned before epoch 0 (pruning at initialization)")
        c2.button("What if I had pruned here?", key="whatif_branch", on_click=start_branches,
                  args=(run_id,), help="queued: it trains when the device is free")
        c1.checkbox(f"with distillation (distill={DISTILL:g})", key=f"whatif_distill_{run_id}",
                    help="the branch fine-tunes against the dense network of its prune epoch as a teacher "
                         "(docs/method.md, 'Distillation'): beside a branch of the same epoch without, its effect")
        step = max(1, len(kept) // 6)                  # about six branches, whatever the run's length
        c3.button(f"Sweep {len(kept[::step])} epochs", key="whatif_sweep",
                  on_click=start_branches, args=(run_id, kept[::step]),
                  help=f"branches at epochs {', '.join(map(epoch_label, kept[::step]))}, one after another")
        if st.session_state.get("whatif_error"):
            st.error(f"Could not branch: {plain(st.session_state['whatif_error'])}")
        elif st.session_state.get("whatif_started"):
            st.caption(f"Queued: {', '.join(st.session_state['whatif_started'])}. The Branches page draws each one's "
                       f"final accuracy as it finishes.")
