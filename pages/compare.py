"""Compare: several runs overlaid, their final figures, and downloads of metrics and pruned models."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.common import empty_state, epochs_frame, explain, manager, run_key

st.title("Compare")
explain("Overlay runs to see how the target, the threshold or the regulariser change when the sub-network "
        "settles and what accuracy it keeps. The table lists each run's final figures; download any run's "
        "metrics as CSV or its pruned model.")

mgr = manager()
runs = [r.run_id for r in mgr.list()]
if not runs:
    empty_state("No runs yet. Start the demo on the Runs page.")
    st.stop()
default = runs[:3]
chosen = st.multiselect("Runs", runs, default=default, key="compare_runs")
if not chosen:
    empty_state("Pick one or more runs above.")
    st.stop()

psi, acc, rows = go.Figure(), go.Figure(), []
for run_id in chosen:
    r = mgr.reader(run_id)
    df = epochs_frame(*run_key(r))
    s = r.summary()
    rows.append(dict(run=run_id, status=s["status"], model=s["model"], t_star=s["t_star"], reason=s["prune_reason"],
                     target=s["target_flops_reduction"], flops_reduction=s["flops_reduction"],
                     params_reduction=s["params_reduction"], dense_acc_at_prune=s["dense_acc_at_prune"],
                     final_acc=s["final_acc"], best_acc=s["best_acc"], seconds=round(s["wall_seconds"], 1)))
    if df.empty:
        continue
    x = df["epoch"].to_numpy()
    psi.add_trace(go.Scatter(x=x, y=df["psi_smoothed"].to_numpy(dtype=float), name=run_id))
    acc.add_trace(go.Scatter(x=x, y=df["val_acc"].to_numpy(dtype=float), name=run_id))
psi.update_layout(title="Smoothed PSI", xaxis_title="epoch", height=340)
acc.update_layout(title="Validation accuracy", xaxis_title="epoch", yaxis_title="%", height=340)
c1, c2 = st.columns(2)
c1.plotly_chart(psi, key="compare_psi")
c2.plotly_chart(acc, key="compare_acc")
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, key="compare_table")

st.subheader("Downloads")
for run_id in chosen:
    r = mgr.reader(run_id)
    df = epochs_frame(*run_key(r))
    c1, c2 = st.columns(2)
    c1.download_button(f"metrics of {run_id} (CSV)", df.to_csv(index=False).encode(), f"{run_id}-metrics.csv",
                       "text/csv", key=f"csv_{run_id}")
    model = r.dir / "model.pt"
    if model.is_file():
        c2.download_button(f"pruned model of {run_id}", model.read_bytes(), f"{run_id}-pruned.pt",
                           "application/octet-stream", key=f"model_{run_id}")
    else:
        c2.caption("The pruned model is exported when the run finishes.")
