"""Compare: several runs overlaid, their final figures, and downloads of metrics and pruned models."""
import importlib.util
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from osp_engine.charts.figures import RUN_COLOURS
from osp_engine.charts.report import report_html
from osp_engine.charts.stability import defined_psi
from osp_engine.storage.metric import summary_metric
from osp_engine.storage.reader import RunReader
from osp_studio.builds import offer
from osp_studio.control import manager
from osp_studio.layout import empty_state, header, teaching
from osp_studio.replay import run_frame, run_info
from osp_studio.routing import pick_runs
from osp_engine.charts.tradeoff import run_latency
from osp_studio.teaching import explain as teaching_explainer
from osp_studio.text import chart_text, flops_ratio, percent


DASH = {"official": "solid", "corrected": "dot"}      # an official and a corrected run of one seed stay apart
MODEL_BYTES_CAP = 200e6                                # larger models are downloaded with `export`, not the page


def final_figures(r: RunReader) -> dict:
    """One table row: how the run ended and what it kept, in the units the other pages use."""
    s = r.summary()
    m = summary_metric(s)                     # a detector's mAP gets columns of its own beside accuracy
    return {"run": r.run_id, "variant": s["variant"], "status": s["status"], "model": s["model"],
            "pruned after epoch (t*)": s["t_star"], "why": s["prune_reason"],
            "FLOPs target (%)": percent(s["target_flops_reduction"]), "FLOPs removed (%)": percent(s["flops_reduction"]),
            "parameters removed (%)": percent(s["params_reduction"]), m.header("at t*"): s["dense_acc_at_prune"],
            m.header("final"): s["final_acc"], m.header("best"): s["best_acc"],
            "wall time (s)": round(s["wall_seconds"], 1),
            "FLOPs ratio (x)": None if not flops_ratio(s) else round(flops_ratio(s), 2),
            "speed-up at batch 1 (x)": None if not s["speed"] else round(s["speed"]["latency_speedup"], 2),
            "throughput speed-up (x)": None if not s["speed"] else round(s["speed"]["throughput_speedup"], 2),
            "ONNX Runtime speed-up at batch 1 (x)": _ort(s, "latency_speedup"),
            "ONNX Runtime throughput speed-up (x)": _ort(s, "throughput_speedup"),
            "measured on": None if not s["speed"] else s["speed"]["device"],
            "target of": "latency" if s.get("cost") == "latency" else "FLOPs",
            "latency at batch 1, measured (ms)": _latency(s, 1),
            "latency predicted by the table (ms)": None if not s["latency"] else round(s["latency"]["predicted_ms"], 3),
            "latency measured on": None if not run_latency(s) else run_latency(s)[2]}


def _latency(s: dict, which: int) -> float | None:
    """The pruned model's measured batch-1 latency (charts.tradeoff.run_latency), in ms."""
    latency = run_latency(s)
    return None if latency is None else round(latency[which], 3)


def _ort(s: dict, key: str) -> float | None:
    ort = (s["speed"] or {}).get("onnxruntime")
    return None if not ort else round(ort[key], 2)


def downloads(r: RunReader, df: pd.DataFrame) -> None:
    """Metrics as CSV, the run's report (HTML, built when pressed), and the pruned model's bytes, read
    once per page draw; a model is only promised while the run can still finish. No download reruns the
    page: a rerun would replace the deferred downloads (ONNX, report) while a click on one is on its way.
    A viewer of a shared studio gets the report and the ONNX model once built (builds.py)."""
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button(f"metrics of {r.run_id} (CSV)", df.to_csv(index=False).encode(), f"{r.run_id}-metrics.csv",
                       "text/csv", key=f"csv_{r.run_id}", on_click="ignore")
    model, status = r.dir / "model.pt", r.info()["display_status"]
    version = (status, len(df))                                        # the report changes with every epoch
    offer(c4, "report", r.run_id, version, lambda: report_html(r.dir), f"report of {r.run_id} (HTML)",
          file_name=f"{r.run_id}-report.html", mime="text/html", key=f"report_{r.run_id}",
          help="one self-contained file: the run card and every chart, interactive, opens offline")
    if model.is_file() and model.stat().st_size <= MODEL_BYTES_CAP:
        c2.download_button(f"pruned model of {r.run_id} ({model.stat().st_size / 1e6:.1f} MB)", model.read_bytes(),
                           f"{r.run_id}-pruned.pt", "application/octet-stream", key=f"model_{r.run_id}",
                           on_click="ignore")
        onnx_download(c3, r, model, version)
    elif model.is_file():
        c2.caption(f"The pruned model is {model.stat().st_size / 1e6:.0f} MB: "
                   f"`python -m osp_engine export {r.run_id} --out FILE` copies it.")
    elif status == "running":
        c2.caption("The pruned model is exported when the run finishes.")
    else:
        c2.caption(f"No pruned model: the run is {status}" +
                   (" (Resume on the Runs page finishes it)." if status in ("cancelled", "failed", "stale") else "."))


def onnx_download(column, r: RunReader, model: Path, version: tuple) -> None:
    """The pruned model as ONNX, written and checked on ONNX Runtime when the button is pressed (not on
    every draw); without onnx and onnxruntime, what to install."""
    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        column.caption("ONNX download: `pip install onnx onnxruntime`")
        return
    if r.info()["config"].get("dataset") == "custom":
        column.caption("Your own model: `osp_engine.export_onnx` needs its class, in Python.")
        return

    def onnx_bytes() -> bytes:
        from osp_engine.interfaces.onnx_export import export_onnx     # torch, only when pressed
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, Path(tmp) / "model.onnx")
            return (Path(tmp) / "model.onnx").read_bytes()

    offer(column, "onnx", r.run_id, version, onnx_bytes, f"pruned model of {r.run_id} (ONNX)",
          file_name=f"{r.run_id}-pruned.onnx", mime="application/octet-stream", key=f"onnx_{r.run_id}",
          help="dynamic batch; checked on ONNX Runtime against PyTorch's outputs before download")


def overlay(readers: list[RunReader], frames: list[pd.DataFrame]) -> tuple[go.Figure, go.Figure]:
    """Smoothed PSI and validation metric of every run: a colour per run, a dash per variant, each
    run's t* as a dotted line of its colour and the threshold(s) on the PSI."""
    psi, acc = go.Figure(), go.Figure()
    thresholds, metrics = set(), set()
    for i, (r, df) in enumerate(zip(readers, frames)):
        if df.empty:
            continue
        info, x = run_info(r), df["epoch"].to_numpy()
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        variant = info["config"].get("variant", "unrecorded")
        style = dict(name=chart_text(f"{r.run_id[-9:]} ({variant})"), line=dict(color=colour, dash=DASH.get(variant, "dashdot")))
        psi.add_trace(go.Scatter(x=x, y=defined_psi(df)[1], **style))
        acc.add_trace(go.Scatter(x=x, y=df["val_acc"].to_numpy(dtype=float), **style))
        if info["t_star"] is not None:
            for fig in (psi, acc):
                fig.add_vline(x=int(info["t_star"]), line=dict(color=colour, dash="dot", width=1.5))
        thresholds.add(float(info["threshold"]))
        metrics.add(info["metric"])
    metric = metrics.pop() if len(metrics) == 1 else None
    for thr in sorted(thresholds):
        psi.add_hline(y=thr, line=dict(color="#c53030", dash="dash", width=1),
                      annotation_text=f"threshold {thr:g}", annotation_position="bottom right")
    for fig, title, y in ((psi, "Smoothed PSI (dotted lines: each run's t*)", "PSI (0-1)"),
                          (acc, f"Validation {metric.name}" if metric else "Validation metric (each run's own)",
                           metric.label() if metric else "metric")):
        fig.update_layout(title=title, xaxis_title="epoch (counted from 0)", yaxis_title=y, height=380,
                          font=dict(size=15), legend=dict(orientation="h", yanchor="top", y=-0.25))
    return psi, acc


def render() -> None:
    header("Compare", "Overlay runs to see how the target, the threshold or the regulariser change when the "
           "sub-network settles and what accuracy it keeps. The table lists each run's final figures; download any "
           "run's metrics as CSV or its pruned model.")
    if teaching():
        teaching_explainer("compare")
    chosen = pick_runs("compare_runs")
    if not chosen:
        empty_state("Pick one or more runs above.")
        return
    readers = [manager().reader(run_id) for run_id in chosen]
    frames = [run_frame(r) for r in readers]
    psi, acc = overlay(readers, frames)
    c1, c2 = st.columns(2)
    c1.plotly_chart(psi, key="compare_psi")
    c2.plotly_chart(acc, key="compare_acc")
    st.dataframe(pd.DataFrame([final_figures(r) for r in readers]), hide_index=True, key="compare_table")
    st.subheader("Downloads")
    for r, df in zip(readers, frames):
        downloads(r, df)
