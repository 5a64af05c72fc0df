"""The Branches page's figure, a pure function of the parent's epochs and the sweep's rows (no Streamlit).

Three rows on the parent's epoch axis: accuracy (each branch's final accuracy at its prune epoch, the
candidate's accuracy if pruned at that epoch, the network's accuracy as trained, the run's own final
accuracy at its t*), the indicators (PSI
and Early-Bird distance, each with the epoch it picks), and each branch's training cost.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from osp_engine.charts.figures import hline, phase_bands, vline
from osp_engine.charts.stability import column, defined_psi
from osp_engine.running.branch import INIT, epoch_label
from osp_engine.storage.metric import ACCURACY

FONT = 16


def sweep_figure(parent: pd.DataFrame, rows: list[dict], picks: dict, info: dict, font: int = FONT) -> go.Figure:
    """parent: the parent's epoch rows; rows: sweep_rows(); picks: indicator_picks(); info: the parent's
    (its metric names the first row)."""
    metric = info.get("metric", ACCURACY)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.46, 0.27, 0.27],
                        specs=[[{}], [{"secondary_y": True}], [{}]])
    x = parent["epoch"].to_numpy()
    done = [r for r in rows if r["final_acc"] is not None and r["status"] == "finished"]
    plain = [r for r in done if not r.get("distill")]
    fig.add_trace(go.Scatter(x=[r["epoch"] for r in plain], y=[r["final_acc"] for r in plain], mode="lines+markers",
                             name=f"final {metric.name} of the branch pruned at that epoch", text=[r["run_id"] for r in plain],
                             marker=dict(size=14, color="#c53030"), line=dict(color="#c53030", width=3),
                             hovertemplate="pruned at %{x}: %{y:.2f} % (%{text})<extra></extra>"), 1, 1)
    distilled = [r for r in done if r.get("distill")]
    if distilled:                                      # beside the plain branch of the same epoch: the teacher's effect
        fig.add_trace(go.Scatter(x=[r["epoch"] for r in distilled], y=[r["final_acc"] for r in distilled],
                                 mode="markers", name=f"final {metric.name} with distillation",
                                 text=[f"{r['run_id']}, distill={r['distill']:g}" for r in distilled],
                                 marker=dict(size=15, symbol="diamond", color="#dd6b20"),
                                 hovertemplate="pruned at %{x}: %{y:.2f} % (%{text})<extra></extra>"), 1, 1)
    if info.get("t_star") is not None and info.get("status") == "finished":
        fig.add_trace(go.Scatter(x=[int(info["t_star"])], y=[float(parent["val_acc"].iloc[-1])], mode="markers",
                                 name=f"the run itself, pruned at epoch {info['t_star']} ({info['prune_reason']})",
                                 marker=dict(size=16, symbol="star", color="#4a5568"),
                                 hovertemplate="the run itself: %{y:.2f} %<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=column(parent, "cand_acc"), mode="markers", name=f"{metric.name} if pruned then (before fine-tuning)",
                             marker=dict(symbol="x", size=9, color="#d69e2e")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=parent["val_acc"].to_numpy(dtype=float), mode="lines",
                             name=f"the run's {metric.name} as trained", line=dict(color="#a0aec0")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=defined_psi(parent)[1], name="PSI (smoothed)",
                             line=dict(color="#2b6cb0", width=3)), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=parent["eb_distance"].to_numpy(dtype=float), name="Early-Bird distance",
                             line=dict(color="#38a169")), 2, 1, secondary_y=True)
    fig.add_trace(go.Bar(x=[r["epoch"] for r in done], y=[r["seconds"] for r in done], name="training seconds",
                         marker_color="#805ad5", textangle=0, text=[f"{r['dense_epochs']:.1f} dense-ep" for r in done],
                         hovertemplate="pruned at %{x}: %{y:.1f} s, %{text} dense-epoch FLOPs<extra></extra>"), 3, 1)
    shapes = phase_bands(x.tolist(), parent["phase"].tolist())
    shapes.append(hline(float(info["threshold"]), "#2b6cb0", yref="y2", dash="dot"))
    for key, colour, what in (("psi", "#2b6cb0", "PSI picks"), ("early_bird", "#38a169", "Early-Bird picks")):
        if picks.get(key) is not None:
            shapes.append(vline(picks[key], colour, dash="dash"))
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{what} epoch {picks[key]}",
                                     line=dict(color=colour, dash="dash")), 1, 1)
    last = max([r["epoch"] for r in rows] + [info.get("t_star") or 0]) + 2
    fig.update_layout(shapes=shapes, height=660, font=dict(size=font), barmode="group", hovermode="closest",
                      margin=dict(t=10, b=150, l=90, r=90),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0, font=dict(size=font - 2)))
    right = min(last, x.max()) + 0.5
    if any(r["epoch"] == INIT for r in rows):          # a branch pruned at initialization: drawn at "init"
        step = max(1, int(right) // 10)
        ticks = [INIT] + list(range(0, int(right) + 1, step))
        fig.update_xaxes(range=[INIT - 0.5, right], tickvals=ticks, ticktext=[epoch_label(t) for t in ticks])
    else:
        fig.update_xaxes(range=[max(x.min() - 0.5, 0.5), right])
    fig.update_xaxes(title_text="prune epoch (counted from 0)", row=3, col=1)
    fig.update_yaxes(title_text=metric.label(), row=1, col=1)
    fig.update_yaxes(title_text="PSI", range=[-0.02, 1.02], row=2, col=1, secondary_y=False)
    fig.update_yaxes(title_text="EB distance", rangemode="tozero", tickformat=".2f", row=2, col=1, secondary_y=True)
    fig.update_yaxes(title_text="training s", rangemode="tozero", row=3, col=1)
    return fig
