"""Branches: final accuracy against the prune epoch, for every branch of the picked run (or of its
parent, when the picked run is a branch), beside the indicators that would have chosen the epoch."""
import pandas as pd
import streamlit as st

from osp_engine.charts.sweep import sweep_figure
from osp_engine.running.branch import branches_of
from osp_engine.storage.sweep import indicator_picks, sweep_rows
from osp_studio.control import manager
from osp_studio.layout import empty_state, header, teaching
from osp_studio.replay import run_frame, run_info
from osp_studio.routing import require_run
from osp_studio.teaching import explain as teaching_explainer
from osp_studio.text import plain
from osp_studio.whatif import what_if


def parent_of(run_id: str) -> str:
    """The run whose branches the page shows: the picked run, or its parent if it is a branch."""
    parent = manager().reader(run_id).info()["config"].get("parent")
    return parent if parent and parent in [r.run_id for r in manager().list()] else run_id


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"prune epoch": r["epoch"], "status": r["status"], "final accuracy (%)": r["final_acc"],
                          "FLOPs removed (%)": None if r["flops_reduction"] is None else 100 * r["flops_reduction"],
                          "training s": round(r["seconds"], 1), "dense-epoch FLOPs": round(r["dense_epochs"], 2),
                          "PSI then": r["psi"], "accuracy if pruned then (%)": r["cand_acc"], "run": r["run_id"]}
                         for r in rows])


@st.fragment(run_every=2)
def sweep_view(parent_id: str) -> None:
    """Redrawn every 2 s: a branch's point appears when it finishes."""
    parent = manager().reader(parent_id)
    info = run_info(parent)
    rows = sweep_rows(parent, branches_of(manager().root, parent_id))
    st.markdown(f"**{parent_id}** · {len(rows)} branch{'es' if len(rows) != 1 else ''} · "
                f"{sum(r['status'] == 'running' for r in rows)} training, "
                f"{len(manager().queued())} queued")
    what_if(parent_id, info)
    if not rows:
        empty_state("No branches yet: pick an epoch above and press **What if I had pruned here?**, or run "
                    "`python -m osp_engine sweep RUN --every 2`.")
        return
    picks = indicator_picks(run_frame(parent).to_dict("records"), info["threshold"],
                            float(info["config"].get("eb_threshold", 0.1)))
    st.plotly_chart(sweep_figure(run_frame(parent), rows, picks, info, 18 if teaching() else 16), key="sweep_chart")
    st.dataframe(table(rows), hide_index=True, key="sweep_table")
    st.caption("Training seconds and dense-epoch FLOPs cover each branch's whole cycle (its parent's epochs up to "
               "the prune, then its own): an earlier prune trains a smaller network for longer. "
               + plain(f"PSI picks epoch {picks['psi']}, Early-Bird epoch {picks['early_bird']}."))


def render() -> None:
    header("Branches", "What pruning at another epoch would have given: each branch continues the run from that "
           "epoch's checkpoint, prunes that epoch's candidate and fine-tunes to the end of the same schedule. "
           "Look for the final accuracy levelling off: from there on, waiting longer to prune buys nothing.")
    if teaching():
        teaching_explainer("branches")
    run = require_run()
    sweep_view(parent_of(run.run_id))
