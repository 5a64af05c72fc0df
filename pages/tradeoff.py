"""Trade-off: accuracy against FLOPs for dense, candidate and pruned models, beside the paper's points."""
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.common import add_phase_bands, empty_state, epochs_frame, explain, manager, run_key, selected_run

st.title("Trade-off")
explain("Every point is a model's validation accuracy against its FLOPs: the dense network while it trains, "
        "then the pruned one through fine-tuning; the published points of the paper and its rivals sit beside "
        "it for the same network. Look for the pruned run ending near the dense accuracy at about half the FLOPs.")

mgr = manager()
runs = [r.run_id for r in mgr.list()]
if not runs:
    empty_state("No runs yet. Start the demo on the Runs page.")
    st.stop()
default = [selected_run()] if selected_run() in runs else runs[:1]
chosen = st.multiselect("Runs", runs, default=default, key="tradeoff_runs")
REF = pd.read_csv(Path(__file__).resolve().parents[1] / "assets" / "reference_points.csv")

fig = go.Figure()
for run_id in chosen:
    r = mgr.reader(run_id)
    df = epochs_frame(*run_key(r))
    if df.empty:
        continue
    dense = df["dense_flops"].iloc[0] / 1e6
    for phase, colour in (("dense", "#718096"), ("sparsity", "#dd6b20"), ("pruned", "#2b6cb0")):
        part = df[df["phase"] == phase]
        if len(part):
            fig.add_trace(go.Scatter(x=part["model_flops"].to_numpy() / 1e6, y=part["val_acc"].to_numpy(),
                                     mode="markers", name=f"{run_id[-9:]} {phase}", marker=dict(color=colour)))
    cand = df.dropna(subset=["cand_flops"])
    if len(cand):
        fig.add_trace(go.Scatter(x=cand["cand_flops"].to_numpy() / 1e6, y=cand["val_acc"].to_numpy(), mode="markers",
                                 name=f"{run_id[-9:]} candidate (dense accuracy)",
                                 marker=dict(symbol="circle-open", color="#38a169")))
    cfg = r.info()["config"]
    ref = REF[(REF["model"] == cfg["model"]) & (REF["dataset"] == cfg["dataset"])]
    for method, part in ref.groupby("method"):
        fig.add_trace(go.Scatter(x=part["flops_kept_pct"].to_numpy() / 100 * dense, y=part["top1_pct"].to_numpy(),
                                 mode="markers", name=f"paper: {method}",
                                 marker=dict(symbol="star" if method == "OCSPruner" else "diamond", size=11)))
fig.update_layout(xaxis_title="M FLOPs (multiply-accumulates)", yaxis_title="validation accuracy (%)", height=520)
st.plotly_chart(fig, key="tradeoff_chart")
st.caption("Paper points are placed at their published share of the dense FLOPs of this run's network; "
           "assets/reference_points.csv names the source of each.")

if chosen:
    r = mgr.reader(chosen[0])
    df = epochs_frame(*run_key(r))
    if not df.empty:
        curves = go.Figure()
        x = df["epoch"].to_numpy()
        for name, colour in (("train_acc", "#a0aec0"), ("val_acc", "#2b6cb0")):
            curves.add_trace(go.Scatter(x=x, y=df[name].to_numpy(dtype=float), name=name, line=dict(color=colour)))
        add_phase_bands(curves, df)
        curves.update_layout(title=f"Training and validation accuracy: {chosen[0]}", xaxis_title="epoch",
                             yaxis_title="%", height=380)
        st.plotly_chart(curves, key="curves_chart")
