"""Compare: several runs overlaid, their final figures, and downloads of metrics and pruned models."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine.store import RunReader
from pages.common import chart_text, empty_state, enter_frame, epochs_frame, header, manager, pick_runs, run_key


DASH = {"official": "solid", "corrected": "dot"}      # an official and a corrected run of one seed stay apart


def final_figures(r: RunReader) -> dict:
    """One table row: how the run ended and what it kept."""
    s = r.summary()
    return dict(run=r.run_id, variant=s["variant"], status=s["status"], model=s["model"], t_star=s["t_star"],
                reason=s["prune_reason"],
                target=s["target_flops_reduction"], flops_reduction=s["flops_reduction"],
                params_reduction=s["params_reduction"], dense_acc_at_prune=s["dense_acc_at_prune"],
                final_acc=s["final_acc"], best_acc=s["best_acc"], seconds=round(s["wall_seconds"], 1))


def downloads(r: RunReader, df: pd.DataFrame) -> None:
    """Metrics as CSV; the pruned model read from disk only when the button is pressed."""
    c1, c2 = st.columns(2)
    c1.download_button(f"metrics of {r.run_id} (CSV)", df.to_csv(index=False).encode(), f"{r.run_id}-metrics.csv",
                       "text/csv", key=f"csv_{r.run_id}")
    model = r.dir / "model.pt"
    if model.is_file():
        c2.download_button(f"pruned model of {r.run_id} ({model.stat().st_size / 1e6:.1f} MB)", model.read_bytes,
                           f"{r.run_id}-pruned.pt", "application/octet-stream", key=f"model_{r.run_id}")
    else:
        c2.caption("The pruned model is exported when the run finishes.")


def render() -> None:
    header("Compare", "Overlay runs to see how the target, the threshold or the regulariser change when the "
           "sub-network settles and what accuracy it keeps. The table lists each run's final figures; download any "
           "run's metrics as CSV or its pruned model.")
    chosen = pick_runs("compare_runs", default=[r.run_id for r in manager().list()[:3]])
    if not chosen:
        empty_state("Pick one or more runs above.")
        return
    readers = [manager().reader(run_id) for run_id in chosen]
    frames = [epochs_frame(*run_key(r)) for r in readers]
    psi, acc = go.Figure(), go.Figure()
    for r, df in zip(readers, frames):
        if df.empty:
            continue
        x = df["epoch"].to_numpy()
        variant = r.summary()["variant"]
        style = dict(name=chart_text(f"{r.run_id} ({variant})"), line=dict(dash=DASH.get(variant, "dashdot")))
        psi.add_trace(go.Scatter(x=x, y=df["psi_smoothed"].to_numpy(dtype=float), **style))
        acc.add_trace(go.Scatter(x=x, y=df["val_acc"].to_numpy(dtype=float), **style))
    psi.update_layout(title="Smoothed PSI", xaxis_title="epoch", height=340)
    acc.update_layout(title="Validation accuracy", xaxis_title="epoch", yaxis_title="%", height=340)
    c1, c2 = st.columns(2)
    c1.plotly_chart(psi, key="compare_psi")
    c2.plotly_chart(acc, key="compare_acc")
    st.dataframe(pd.DataFrame([final_figures(r) for r in readers]), hide_index=True, key="compare_table")
    st.subheader("Downloads")
    for r, df in zip(readers, frames):
        downloads(r, df)


if __name__ == "__main__":
    enter_frame()
