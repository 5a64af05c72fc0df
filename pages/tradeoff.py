"""Trade-off: accuracy against FLOPs for dense, candidate and pruned models, beside the paper's points."""
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.common import enter_frame, epochs_frame, header, manager, pick_runs, run_key
from pages.figures import phase_bands

REFERENCE_CSV = Path(__file__).resolve().parents[1] / "assets" / "reference_points.csv"
PHASE_MARKERS = (("dense", "#718096"), ("sparsity", "#dd6b20"), ("pruned", "#2b6cb0"))


@st.cache_data(show_spinner=False)
def reference_points() -> pd.DataFrame:
    """The published (model, dataset, method, FLOPs kept %, top-1 %) points, with their sources."""
    return pd.read_csv(REFERENCE_CSV)


def add_run(fig: go.Figure, run_id: str, df: pd.DataFrame) -> None:
    """The run's model through its phases, and its candidate sub-network at the dense model's accuracy."""
    short = run_id[-9:]
    for phase, colour in PHASE_MARKERS:
        part = df[df["phase"] == phase]
        if len(part):
            fig.add_trace(go.Scatter(x=part["model_flops"].to_numpy() / 1e6, y=part["val_acc"].to_numpy(),
                                     mode="markers", name=f"{short} {phase}", marker=dict(color=colour)))
    cand = df.dropna(subset=["cand_flops"])
    if len(cand):
        fig.add_trace(go.Scatter(x=cand["cand_flops"].to_numpy() / 1e6, y=cand["val_acc"].to_numpy(), mode="markers",
                                 name=f"{short} candidate (dense accuracy)",
                                 marker=dict(symbol="circle-open", color="#38a169")))


def add_paper_points(fig: go.Figure, model: str, dataset: str, dense_mflops: float) -> None:
    ref = reference_points()
    for method, part in ref[(ref["model"] == model) & (ref["dataset"] == dataset)].groupby("method"):
        fig.add_trace(go.Scatter(x=part["flops_kept_pct"].to_numpy() / 100 * dense_mflops,
                                 y=part["top1_pct"].to_numpy(), mode="markers", name=f"paper: {method} ({model})",
                                 marker=dict(symbol="star" if method == "OCSPruner" else "diamond", size=11)))


def curves_figure(run_id: str, df: pd.DataFrame) -> go.Figure:
    x = df["epoch"].to_numpy()
    fig = go.Figure()
    for name, colour in (("train_acc", "#a0aec0"), ("val_acc", "#2b6cb0")):
        fig.add_trace(go.Scatter(x=x, y=df[name].to_numpy(dtype=float), name=name, line=dict(color=colour)))
    fig.update_layout(shapes=phase_bands(x.tolist(), df["phase"].tolist()), xaxis_title="epoch", yaxis_title="%",
                      title=f"Training and validation accuracy: {run_id}", height=380)
    return fig


def render() -> None:
    header("Trade-off", "Every point is a model's validation accuracy against its FLOPs: the dense network while it "
           "trains, then the pruned one through fine-tuning; the published points of the paper and its rivals sit "
           "beside it for the same network. Look for the pruned run ending near the dense accuracy at about half "
           "the FLOPs.")
    chosen = pick_runs("tradeoff_runs")
    readers = [manager().reader(run_id) for run_id in chosen]
    frames = {r.run_id: (r, epochs_frame(*run_key(r))) for r in readers}
    fig, networks = go.Figure(), {}
    for run_id, (r, df) in frames.items():
        if df.empty:
            continue
        add_run(fig, run_id, df)
        cfg = r.info()["config"]
        networks.setdefault((cfg["model"], cfg["dataset"]), df["dense_flops"].iloc[0] / 1e6)
    for (model, dataset), dense_mflops in networks.items():       # once per network, however many runs use it
        add_paper_points(fig, model, dataset, dense_mflops)
    fig.update_layout(xaxis_title="M FLOPs (multiply-accumulates)", yaxis_title="validation accuracy (%)", height=520)
    st.plotly_chart(fig, key="tradeoff_chart")
    st.caption("Paper points are placed at their published share of the dense FLOPs of this run's network; "
               "assets/reference_points.csv names the source of each.")
    if chosen and not frames[chosen[0]][1].empty:
        st.plotly_chart(curves_figure(chosen[0], frames[chosen[0]][1]), key="curves_chart")


if __name__ == "__main__":
    enter_frame()
