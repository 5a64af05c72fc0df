"""The Stability page's two figures, as pure functions of the stored epochs (no Streamlit here).

Four rows on one epoch axis: the PSI (or 1 - PSI on a log axis), the accuracy of the network and of
its candidate if pruned at that epoch, the Early-Bird distance, and the schedules (regulariser strength as the step it is, learning rate on a second axis). Every marker line
has its own legend entry instead of a text label, so nothing can collide however close the epochs are;
the phase bands have legend entries too. Fonts are sized for a projector.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from osp_engine.charts.figures import PHASE_COLOURS, hline, matrix_figure, phase_bands, vline
from osp_engine.method.analysis import early_bird_epoch
from osp_engine.storage.metric import ACCURACY

FONT = 16                         # px: readable from the back of a room on a 1280x720 projector
LOG_FLOOR = 1e-5                  # 1 - PSI of an identical sub-network (PSI = 1) is drawn here on the log axis
PHASE_NAMES = {"dense": "dense training", "sparsity": "shrinking (regulariser on)", "pruned": "pruned, fine-tuning"}
PRUNE_STYLE = {"stable": ("#c53030", "solid", "pruned: PSI reached the threshold"),
               "manual": ("#805ad5", "dashdot", "pruned by hand (Prune now)"),
               "sl_end": ("#4a5568", "dot", "pruned: forced after sl_end")}


def defined_psi(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(raw, smoothed) PSI with NaN where it is undefined: a raw PSI needs the candidates of the two
    epochs before, so the first two searched epochs have none (the store keeps the method's 0 there,
    which enters the smoothing, but a chart must not show it as a measured 0)."""
    raw = df["psi_raw"].to_numpy(dtype=float)
    searched = np.cumsum(~np.isnan(raw))                  # how many searches up to each epoch
    undefined = np.isnan(raw) | (searched < 3)
    smooth = df["psi_smoothed"].to_numpy(dtype=float)
    return np.where(undefined, np.nan, raw), np.where(undefined, np.nan, smooth)


def search_window(df: pd.DataFrame, info: dict) -> tuple[float, float]:
    """The epochs where the search decides: from the first searched epoch to a few epochs after the
    prune (or to the newest epoch while it has not happened)."""
    searched = df.loc[df["psi_raw"].notna(), "epoch"]
    first = int(searched.min()) if len(searched) else 0
    last = int(df["epoch"].max())
    end = min(last, int(info["t_star"]) + 3) if info["t_star"] is not None else last
    return first - 0.5, max(end, first + 1) + 0.5


def _legend_line(fig: go.Figure, name: str, colour: str, dash: str, row: int = 1) -> None:
    """A legend entry for a marker line drawn as a shape (shapes have no legend of their own)."""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, line=dict(color=colour, dash=dash, width=2),
                             hoverinfo="skip"), row, 1)


def _phase_legend(fig: go.Figure, phases: list[str]) -> None:
    for phase in dict.fromkeys(phases):
        colour = PHASE_COLOURS.get(phase, "rgba(0,0,0,0)").replace("0.10)", "0.45)").replace("0.12)", "0.45)")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=PHASE_NAMES.get(phase, phase),
                                 marker=dict(symbol="square", size=14, color=colour), hoverinfo="skip"), 1, 1)


def column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as floats, NaN (a gap) where a value or the whole column is missing (an older run)."""
    return df[name].to_numpy(dtype=float) if name in df else np.full(len(df), np.nan)


def stability_figure(df: pd.DataFrame, info: dict, log_view: bool = False, whole_run: bool = False,
                     font: int = FONT) -> go.Figure:
    """PSI, the run's metric, Early-Bird distance and schedules against the epoch (0-based, as stored);
    info: RunReader.info() (its threshold, t*, and metric: accuracy, or a detector's mAP)."""
    metric = info.get("metric", ACCURACY)
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[0.38, 0.22, 0.17, 0.23], specs=[[{}], [{}], [{}], [{"secondary_y": True}]])
    x = df["epoch"].to_numpy()
    raw, smooth = defined_psi(df)
    threshold = float(info["threshold"])
    mode = "lines+markers" if len(x) <= 80 else "lines"
    if log_view:                                        # 1 - PSI: 0.99, 0.999 and 1 are decades apart
        raw, smooth = (np.maximum(1.0 - v, LOG_FLOOR) for v in (raw, smooth))
    fig.add_trace(go.Scatter(x=x, y=raw, name="PSI (raw)", mode=mode, line=dict(color="#a0aec0"),
                             connectgaps=False), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=smooth, name="PSI (smoothed, decides the prune)", mode=mode,
                             line=dict(color="#2b6cb0", width=3), connectgaps=False), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=column(df, "val_acc"), name=f"{metric.name} of the network as trained",
                             mode=mode, line=dict(color="#4a5568")), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=column(df, "cand_acc"), name=f"{metric.name} if pruned now (candidate, before fine-tuning)",
                             mode="markers", marker=dict(color="#d69e2e", size=9, symbol="x")), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=df["eb_distance"].to_numpy(dtype=float), name="Early-Bird distance",
                             mode=mode, line=dict(color="#38a169")), 3, 1)
    fig.add_trace(go.Scatter(x=x, y=df["reg"].to_numpy(dtype=float), name="regulariser strength",
                             line=dict(color="#dd6b20", shape="hv")), 4, 1)
    fig.add_trace(go.Scatter(x=x, y=df["lr"].to_numpy(dtype=float), name="learning rate",
                             line=dict(color="#805ad5", shape="hv", dash="dot")), 4, 1, secondary_y=True)

    shapes = phase_bands(x.tolist(), df["phase"].tolist())
    shapes.append(hline(max(1.0 - threshold, LOG_FLOOR) if log_view else threshold, "#c53030"))
    _legend_line(fig, f"threshold {threshold:g}", "#c53030", "dash")
    eb_thr = float(info["config"].get("eb_threshold", 0.1))
    shapes.append(hline(eb_thr, "#38a169", yref="y3", dash="dot"))
    drawn = early_bird_epoch(x.tolist(), df["eb_distance"].tolist(), eb_thr)
    if drawn is not None:
        shapes.append(vline(drawn, "#38a169", xref="x3", yref="y3 domain", dash="dot"))
        _legend_line(fig, f"Early-Bird ticket: epoch {drawn}", "#38a169", "dot")
    if info["t_sl_start"] is not None:
        shapes.append(vline(int(info["t_sl_start"]), "#dd6b20"))
        _legend_line(fig, f"regulariser starts: epoch {int(info['t_sl_start'])}", "#dd6b20", "dash")
    if info["t_star"] is not None:
        colour, dash, what = PRUNE_STYLE.get(info["prune_reason"], PRUNE_STYLE["stable"])
        shapes.append(vline(int(info["t_star"]), colour, dash=dash))
        _legend_line(fig, f"t* = {int(info['t_star'])}: {what}", colour, dash)
    _phase_legend(fig, df["phase"].tolist())

    x_range = [x.min() - 0.5, x.max() + 0.5] if whole_run or len(x) == 1 else list(search_window(df, info))
    fig.update_layout(shapes=shapes, height=660, font=dict(size=font), margin=dict(t=10, b=150, l=90, r=90),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0, font=dict(size=font - 2)),
                      hovermode="x unified")
    fig.update_xaxes(range=x_range)
    fig.update_xaxes(title_text="epoch (counted from 0)", row=4, col=1)
    if log_view:
        ticks = [1.0, 0.1, 0.01, 1e-3, 1e-4, LOG_FLOOR]
        fig.update_yaxes(type="log", range=[np.log10(LOG_FLOOR) - 0.2, 0.05], tickvals=ticks,
                         ticktext=["0", "0.9", "0.99", "0.999", "0.9999", "1"], title_text="PSI (log of 1 − PSI)",
                         row=1, col=1)
    else:
        fig.update_yaxes(range=[-0.02, 1.02], title_text="PSI (Jaccard, 0-1)", row=1, col=1)
    fig.update_yaxes(title_text=metric.label(), row=2, col=1)
    fig.update_yaxes(title_text="EB distance", rangemode="tozero", row=3, col=1)
    fig.update_yaxes(title_text="regulariser λ", rangemode="tozero", row=4, col=1, secondary_y=False)
    fig.update_yaxes(title_text="learning rate", rangemode="tozero", row=4, col=1, secondary_y=True)
    return fig


def similarity_figure(epochs: list[int], sim: np.ndarray, t_star: int | None, font: int = FONT) -> go.Figure:
    """Jaccard similarity of every pair of searched candidates on a fixed 0-1 colour scale, t* marked."""
    fig = matrix_figure(sim, np.array(epochs), np.array(epochs), "Viridis", 0.0, 1.0, "Jaccard")
    shapes = []
    if t_star is not None and epochs and epochs[0] <= t_star <= epochs[-1]:
        shapes = [vline(t_star, "#e53e3e", dash="solid"), dict(type="line", xref="paper", yref="y", x0=0, x1=1,
                                                                 y0=t_star, y1=t_star, line=dict(color="#e53e3e"))]
    fig.update_layout(height=520, font=dict(size=font), shapes=shapes, margin=dict(t=40),
                      title="Similarity of the candidates of every pair of epochs" +
                            (f" (red: t* = {t_star})" if shapes else ""))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="epoch")
    return fig
