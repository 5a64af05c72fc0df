"""The Trade-off page's figure pieces, as pure functions of a run's stored epochs (no Streamlit here):
a run's dense and pruned models, its candidates, its accuracy through the run. The HTML report draws them too."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from osp_engine.charts.figures import phase_bands
from osp_engine.storage.metric import ACCURACY, Metric


def add_run(fig: go.Figure, label: str, colour: str, df: pd.DataFrame, every_epoch: bool,
            metric: Metric = ACCURACY) -> None:
    """A run as measured models only: its dense network (best metric before the prune, in the metric's
    direction) and its pruned network (metric at the end), joined; with every_epoch, each epoch's
    evaluated model, faded."""
    pruned, dense = df[df["phase"] == "pruned"], df[df["phase"] != "pruned"]
    x = [part["model_flops"].iloc[-1] / 1e6 for part in (dense, pruned) if len(part)]     # the last of each phase
    _joined(fig, label, colour, df, x, "M FLOPs", metric)
    if every_epoch:
        fig.add_trace(go.Scatter(x=df["model_flops"].to_numpy() / 1e6, y=df["val_acc"].to_numpy(dtype=float),
                                 mode="markers", name=f"{label}: every epoch", opacity=0.35,
                                 marker=dict(size=6, color=colour), text=df["epoch"].to_numpy(),
                                 hovertemplate=f"epoch %{{text}}: {metric.name} %{{y:.2f}} {metric.unit}<extra></extra>"))


def _joined(fig: go.Figure, label: str, colour: str, df: pd.DataFrame, x: list[float], x_unit: str,
            metric: Metric) -> None:
    """The dense network (its best metric before the prune) and the pruned one (its metric at the end) at
    `x` (one value per phase the run reached, dense first), joined by a line."""
    pruned, dense = df[df["phase"] == "pruned"], df[df["phase"] != "pruned"]
    points = []
    if len(dense):
        best = metric.best(dense["val_acc"].dropna().tolist())
        points.append((float("nan") if best is None else best, "dense (best epoch)"))
    if len(pruned):
        points.append((float(pruned["val_acc"].iloc[-1]), "pruned (last epoch)"))
    fig.add_trace(go.Scatter(x=x[:len(points)], y=[p[0] for p in points], mode="lines+markers", name=label,
                             line=dict(color=colour), text=[p[1] for p in points],
                             marker=dict(size=13, symbol=["circle-open", "circle"][:len(points)], color=colour,
                                         line=dict(width=2, color=colour)),
                             hovertemplate=f"%{{text}}: %{{x:.3f}} {x_unit}, {metric.name} %{{y:.2f}} "
                                           f"{metric.unit}<extra></extra>"))


def run_latency(s: dict) -> tuple[float, float, str] | None:
    """(dense ms, pruned ms, where) of a run's measured batch-1 latency, from its summary: cost=latency's own
    measurement on the table's runtime, else the end-of-run speed timing in ONNX Runtime, else in PyTorch;
    None when the run has none (not ended, or speed_budget_s=0)."""
    if s.get("latency"):
        lat = s["latency"]
        return lat["dense_ms"], lat["measured_ms"], f"{lat['runtime']}, batch {lat['batch']}"
    speed = s.get("speed")
    if not speed:
        return None
    ort = speed.get("onnxruntime")
    figures, where = (ort, "ONNX Runtime") if ort else (speed, "PyTorch")
    return figures["latency_ms"]["dense"], figures["latency_ms"]["pruned"], f"{where} on {figures['device']}, batch 1"


def add_run_latency(fig: go.Figure, label: str, colour: str, df: pd.DataFrame, latency: tuple[float, float, str],
                    metric: Metric = ACCURACY) -> None:
    """A run's dense and pruned networks at their measured latency (run_latency), joined, as add_run does at FLOPs."""
    dense_ms, pruned_ms, where = latency
    x = [dense_ms, pruned_ms] if (df["phase"] != "pruned").any() else [pruned_ms]
    _joined(fig, label, colour, df, x, f"ms ({where})", metric)


def add_candidates(fig: go.Figure, label: str, colour: str, df: pd.DataFrame, metric: Metric = ACCURACY) -> None:
    """Each evaluated candidate at its own FLOPs and its own metric (physically pruned, before any
    fine-tuning): what pruning at that epoch would have given at once."""
    measured = df[df["cand_acc"].notna()] if "cand_acc" in df else df.iloc[:0]
    if measured.empty:
        return
    fig.add_trace(go.Scatter(x=measured["cand_flops"].to_numpy() / 1e6, y=measured["cand_acc"].to_numpy(dtype=float),
                             mode="markers", name=f"{label}: candidate if pruned then", opacity=0.6,
                             marker=dict(size=8, symbol="x", color=colour), text=measured["epoch"].to_numpy(),
                             hovertemplate=f"epoch %{{text}}: %{{x:.3f}} M FLOPs, {metric.name} %{{y:.2f}} {metric.unit} "
                                           "before fine-tuning"
                                           "<extra></extra>"))


def curves_figure(run_id: str, df: pd.DataFrame, metric: Metric = ACCURACY) -> go.Figure:
    """The training and validation metric through the run, on its phases."""
    x = df["epoch"].to_numpy()
    fig = go.Figure()
    for name, label, colour in (("train_acc", f"training {metric.name}", "#a0aec0"),
                                ("val_acc", f"validation {metric.name}", "#2b6cb0")):
        fig.add_trace(go.Scatter(x=x, y=df[name].to_numpy(dtype=float), name=label, line=dict(color=colour)))
    fig.update_layout(shapes=phase_bands(x.tolist(), df["phase"].tolist()), xaxis_title="epoch (counted from 0)",
                      yaxis_title=metric.label(), title=f"{metric.name.capitalize() if metric.name.islower() else metric.name} "
                                                        f"through the run: {run_id}", height=380,
                      font=dict(size=16))
    return fig
