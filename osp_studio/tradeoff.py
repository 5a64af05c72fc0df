"""Trade-off: accuracy against FLOPs of measured models (each run's dense and pruned network), beside published points."""
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine import ConfigError, get_preset
from osp_engine.charts.figures import RUN_COLOURS
from osp_engine.charts.tradeoff import add_candidates, add_run, add_run_latency, curves_figure, run_latency
from osp_engine.interfaces.presets import PRESETS
from osp_engine.storage.sweep import sweep_labels, target_sweep
from osp_studio.control import manager, may_steer, steering
from osp_studio.layout import compact, header, teaching
from osp_studio.replay import run_frame
from osp_studio.routing import pick_runs
from osp_studio.teaching import explain as teaching_explainer
from osp_studio.text import chart_text, plain

REFERENCE_CSV = Path(__file__).with_name("reference_points.csv")      # package data, installed with the studio




@st.cache_data(show_spinner=False)
def reference_points() -> pd.DataFrame:
    """The published (model, dataset, method, FLOPs kept %, top-1 %) points; 'same' in the source column
    means the source of the row above, and is resolved here."""
    ref = pd.read_csv(REFERENCE_CSV)
    ref["source"] = ref["source"].mask(ref["source"] == "same").ffill()
    return ref


def published_network(model: str) -> str:
    """The network name the published points use: a registry name without its torchvision prefix."""
    return model.removeprefix("tv-")


def add_target_sweep(fig: go.Figure, label: str, sweep: dict, dense_mflops: float | None) -> None:
    """One recipe's final accuracy against FLOPs at each target, and its dense baseline as a line."""
    if sweep["points"] and dense_mflops:
        fig.add_trace(go.Scatter(x=[(1 - p[1]) * dense_mflops for p in sweep["points"]],
                                 y=[p[2] for p in sweep["points"]], mode="lines+markers",
                                 name=f"target sweep {label}", text=[f"target {100 * p[0]:.0f} %" for p in sweep["points"]],
                                 marker=dict(size=12, symbol="square", color="#2c7a7b"), line=dict(color="#2c7a7b"),
                                 hovertemplate="%{text}: %{x:.3f} M FLOPs, %{y:.2f} %<extra></extra>"))
    if sweep["baseline"] is not None:
        fig.add_hline(y=sweep["baseline"], line=dict(color="#2c7a7b", dash="dot"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="#2c7a7b", dash="dot"),
                                 name=f"dense baseline, same schedule: {sweep['baseline']:.2f} %"))


@steering
def start_target_sweep() -> None:
    """The form's callback: the preset at each target plus its dense baseline, queued one after another."""
    st.session_state.pop("sweep_error", None)
    try:
        targets = [float(t) for t in st.session_state["sweep_targets"].split(",") if t.strip()]
        manager().sweep_targets(get_preset(st.session_state["sweep_preset"]), targets)
    except (ConfigError, ValueError) as e:
        st.session_state["sweep_error"] = str(e) if isinstance(e, ConfigError) else \
            "targets: give fractions separated by commas, e.g. 0.3,0.5,0.7"


def sweep_form() -> None:
    if not may_steer():                            # a viewer of a shared studio: nothing to start
        return
    with st.expander("Sweep FLOPs targets", expanded="sweep_error" in st.session_state):
        with st.form("sweep_form"):
            c1, c2 = st.columns(2)
            c1.selectbox("Preset", list(PRESETS), key="sweep_preset")
            c2.text_input("Targets (fractions of FLOPs to remove)", "0.3,0.5,0.7", key="sweep_targets")
            st.form_submit_button("Start the sweep", on_click=start_target_sweep,
                                  help="one run per target plus a dense baseline of the same schedule, queued")
        if "sweep_error" in st.session_state:
            st.error(f"Could not start: {plain(st.session_state['sweep_error'])}")


def add_paper_points(fig: go.Figure, model: str, dataset: str, dense_mflops: float) -> list[str]:
    """The published points for exactly this network and dataset; returns their sources (none: [])."""
    ref = reference_points()
    mine = ref[(ref["model"] == published_network(model)) & (ref["dataset"] == dataset)]
    for method, part in mine.groupby("method"):
        fig.add_trace(go.Scatter(x=part["flops_kept_pct"].to_numpy() / 100 * dense_mflops,
                                 y=part["top1_pct"].to_numpy(), mode="markers",
                                 name=f"published: {method} ({published_network(model)}, {dataset})",
                                 marker=dict(symbol="star" if method == "OCSPruner" else "diamond", size=11),
                                 hovertemplate=f"{method}: %{{y:.2f}} %<extra></extra>"))
    return sorted(set(mine["source"]))


def run_label(run_id: str, cfg: dict) -> str:
    what = "latency" if cfg.get("cost") == "latency" else ""
    return chart_text(f"{run_id[-9:]} · {cfg['model']} · target {100 * cfg['target']:.0f} % {what}".rstrip())


def lay_out(fig: go.Figure, x_title: str, metrics: set) -> None:
    """The page's axes and legend; runs of one metric get its name on the y axis."""
    metric = metrics.pop() if len(metrics) == 1 else None
    fig.update_layout(xaxis_title=x_title, height=520,
                      yaxis_title=f"validation {metric.label()}" if metric else "validation metric (each run's own)",
                      font=dict(size=18 if teaching() else 16), showlegend=True,
                      legend=dict(orientation="h", yanchor="top", y=-0.2))


def latency_view(chosen: list[str]) -> None:
    """The metric against each run's measured batch-1 latency; runs with no measurement are named."""
    fig, metrics, missing = go.Figure(), set(), []
    for i, run_id in enumerate(chosen):
        r = manager().reader(run_id)
        df, latency = run_frame(r), run_latency(r.summary())
        if df.empty or latency is None:
            missing.append(run_id)
            continue
        info = r.info()
        metrics.add(info["metric"])
        add_run_latency(fig, run_label(run_id, info["config"]), RUN_COLOURS[i % len(RUN_COLOURS)], df, latency,
                        info["metric"])
    lay_out(fig, "latency at batch 1 (ms, measured)", metrics)
    st.plotly_chart(fig, key="tradeoff_latency_chart")
    if missing:
        st.caption("Not timed yet (a run is timed when it ends, unless speed_budget_s=0): "
                   + ", ".join(plain(m) for m in missing))


def render() -> None:
    header("Trade-off", "Each run is two measured models joined by a line: its dense network at its best accuracy "
           "(open circle) and its pruned network at the end of fine-tuning (filled). Look for the pruned model "
           "ending near the dense accuracy at about half the FLOPs; published points appear for the networks "
           "they were published for.")
    if teaching():
        teaching_explainer("tradeoff")
    chosen = pick_runs("tradeoff_runs")
    every_epoch = not compact() and st.toggle(          # a lesson: the chart in view at 1280x720
        "Every epoch's model", key="tradeoff_every_epoch",
        help="each epoch's evaluated model too: the dense one while it trains, the pruned one after, and each "
             "candidate at its own FLOPs with its own accuracy if pruned then")
    axis = st.radio("Against", ["FLOPs", "measured latency"], horizontal=True, key="tradeoff_axis",
                    help="measured latency: each run's dense and pruned model timed at batch 1 when it ended "
                         "(a cost=latency run on its table's runtime, any other in ONNX Runtime)")
    if axis != "FLOPs":
        latency_view(chosen)
        return
    sweeps = sweep_labels(manager().list())
    shown_sweeps = st.multiselect("Target sweeps", sweeps, default=sweeps[:1], key="tradeoff_sweeps") if sweeps else []
    frames = {run_id: (r, run_frame(r)) for run_id in chosen for r in [manager().reader(run_id)]}
    fig, networks, sources, metrics = go.Figure(), {}, [], set()
    for i, (run_id, (r, df)) in enumerate(frames.items()):
        if df.empty:
            continue
        info = r.info()
        cfg, metric = info["config"], info["metric"]
        metrics.add(metric)
        add_run(fig, run_label(run_id, cfg), RUN_COLOURS[i % len(RUN_COLOURS)], df, every_epoch, metric)
        if every_epoch:
            add_candidates(fig, run_label(run_id, cfg), RUN_COLOURS[i % len(RUN_COLOURS)], df, metric)
        networks.setdefault((cfg["model"], cfg["dataset"]), df["dense_flops"].iloc[0] / 1e6)
    for label in shown_sweeps:
        sweep = target_sweep(manager().root, label)
        add_target_sweep(fig, chart_text(label), sweep, sweep["dense_flops"] and sweep["dense_flops"] / 1e6)
    for (model, dataset), dense_mflops in networks.items():       # once per network, however many runs use it
        sources += add_paper_points(fig, model, dataset, dense_mflops)
    lay_out(fig, "M FLOPs (multiply-accumulates)", metrics)
    st.plotly_chart(fig, key="tradeoff_chart")
    if sources:
        st.caption("Published points sit at their published share of this run's dense FLOPs. Sources: "
                   + "; ".join(plain(s) for s in sources))
    else:
        st.caption("No published points exist for these networks (the paper reports CIFAR-10 ResNet-56 and "
                   "VGG-16, and ImageNet ResNet-18 and ResNet-50).")
    sweep_form()
    if chosen and not frames[chosen[0]][1].empty:
        r, df = frames[chosen[0]]
        st.plotly_chart(curves_figure(chosen[0], df, r.info()["metric"]), key="curves_chart")
