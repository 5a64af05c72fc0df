"""A run's report: one self-contained HTML file to take away (no server, no network to open it).

The studio's own figures (stability_chart, figures, tradeoff_chart, sweep_chart), drawn from the run's
store, with Plotly's JavaScript inlined once: the run card, the stability chart, the channel heatmap,
the trade-off and, when the run has branches, the branches chart. Every chart stays interactive (zoom,
hover) and has PNG and SVG download buttons that work offline. No Streamlit here: the studio's download
button and `python -m osp_engine report RUN --out run.html` both call `report_html`.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from osp_engine.charts.figures import RUN_COLOURS, kept_fraction_figure
from osp_engine.charts.stability import stability_figure
from osp_engine.charts.sweep import sweep_figure
from osp_engine.charts.tradeoff import add_candidates, add_run
from osp_engine.running.branch import epoch_label
from osp_engine.storage.reader import RunReader
from osp_engine.storage.sweep import indicator_picks, sweep_rows

CONFIG = {"displaylogo": False, "responsive": True}        # no link out of the file, charts fit the page
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1a202c; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; }
.sub { color: #4a5568; margin-top: 0; } table.card { border-collapse: collapse; margin-top: 1rem; }
table.card td { padding: 0.25rem 1.2rem 0.25rem 0; vertical-align: top; } table.card td:first-child { color: #4a5568; }
.downloads button { margin-right: 0.5rem; padding: 0.25rem 0.8rem; border: 1px solid #a0aec0; border-radius: 4px;
  background: #f7fafc; cursor: pointer; font-size: 0.9rem; } .note { color: #4a5568; font-size: 0.9rem; }
"""
SCRIPT = """
function osp_download(id, format) {
  var div = document.getElementById(id);
  Plotly.downloadImage(div, {format: format, filename: id, width: div.offsetWidth, height: div.offsetHeight});
}
"""


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def card_rows(s: dict, info: dict) -> list[tuple[str, str]]:
    """(label, value) lines of the run card, from the run's summary and info."""
    cfg, m = info["config"], info["metric"]
    rows = [("network", f"{s['model']} on {s['dataset']}"), ("status", f"{s['status']}, {s['epochs']} of "
            f"{s['total_epochs']} epochs, {s['wall_seconds']:.0f} s"), ("variant", s["variant"]),
            ("latency target" if s["cost"] == "latency" else "FLOPs target", _pct(s["target_flops_reduction"])
             + " removed"),
            ("pruned", "not pruned" if s["t_star"] is None else f"after epoch {s['t_star']} ({s['prune_reason']})"
             if s["t_star"] >= 0 else f"at initialization ({s['prune_reason']})"),
            ("FLOPs removed", _pct(s["flops_reduction"])), ("parameters removed", _pct(s["params_reduction"])),
            (m.name, f"final {m.format(s['final_acc'])}, best {m.format(s['best_acc'])}" if s["final_acc"] is not None
             else "–"),
            ("threshold", f"{info['threshold']:g} (smoothed PSI)")]
    if s["target_miss"]:
        rows.insert(6, ("target missed", s["target_miss"]["message"]))
    if s["dense_acc_at_prune"] is not None:
        rows.append((f"{m.name} at the prune", m.format(s["dense_acc_at_prune"])))
    if cfg.get("parent"):
        rows.append(("branch of", f"{cfg['parent']}, pruned at epoch {epoch_label(cfg['branch_epoch'])}"))
    if s["kept_whole"]:
        rows.append(("groups kept whole", f"{len(s['kept_whole'])} (never pruned)"))
    if s["latency"]:
        rows.append(("latency", s["latency"]["message"]))
    if s["teacher"]:
        rows.append(("distillation", s["teacher"]["message"]))
    if s["speed"]:
        rows.append(("exported model", f"{s['speed']['latency_speedup']:.2f}x the dense speed at batch 1 "
                                       f"({s['speed']['device']})"))
    return rows


def channel_figure(r: RunReader) -> go.Figure | None:
    """(G, E) share of each group's channels the candidate keeps, as on the Channels page."""
    epochs, kept = r.mask_matrix()
    if not epochs:
        return None
    groups = r.groups()
    sizes, names = [g["size"] for g in groups], [html.escape(g["name"], quote=False) for g in groups]
    fig = kept_fraction_figure(np.array(epochs), kept, sizes, names)
    fig.update_layout(margin=dict(t=10))
    return fig


def tradeoff_figure(r: RunReader, df: pd.DataFrame) -> go.Figure:
    metric = r.info()["metric"]
    fig = go.Figure()
    add_run(fig, html.escape(r.run_id, quote=False), RUN_COLOURS[0], df, every_epoch=True, metric=metric)
    add_candidates(fig, html.escape(r.run_id, quote=False), RUN_COLOURS[0], df, metric)
    fig.update_layout(xaxis_title="M FLOPs (multiply-accumulates)", yaxis_title=f"validation {metric.label()}", height=480,
                      font=dict(size=15), legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


def branches_figure(r: RunReader, df: pd.DataFrame, info: dict) -> go.Figure | None:
    """The branches chart of the run (its own, or its parent's when it is a branch), if it has branches."""
    from osp_engine.running.branch import branches_of

    parent = r if not info["config"].get("parent") else RunReader(r.dir.parent / info["config"]["parent"])
    rows = sweep_rows(parent, branches_of(r.dir.parent, parent.run_id))
    if not rows:
        return None
    pinfo, pdf = parent.info(), pd.DataFrame(parent.epochs())
    picks = indicator_picks(pdf.to_dict("records"), pinfo["threshold"], float(pinfo["config"].get("eb_threshold", 0.1)))
    return sweep_figure(pdf, rows, picks, pinfo, 15)


def _section(title: str, key: str, fig: go.Figure | None, note: str = "") -> str:
    if fig is None:
        return ""
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=key, config=CONFIG)
    buttons = "".join(f'<button onclick="osp_download(\'{key}\', \'{f}\')">{f.upper()}</button>' for f in ("png", "svg"))
    return (f'<section id="section-{key}"><h2>{html.escape(title)}</h2>'
            + (f'<p class="note">{html.escape(note)}</p>' if note else "")
            + div + f'<div class="downloads">{buttons}</div></section>')


def report_html(run_dir: str | Path) -> str:
    """The whole report of the run in `run_dir`, as one HTML document (plotly.js inlined, about 4 MB)."""
    r = RunReader(run_dir)
    info, s = r.info(), r.summary()
    name = info["metric"].name
    df = pd.DataFrame(r.epochs())
    card = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in card_rows(s, info))
    parts = [f"<h1>{html.escape(r.run_id)}</h1>",
             f'<p class="sub">osp run report, written {time.strftime("%Y-%m-%d %H:%M")} from the run\'s store</p>',
             f'<table class="card">{card}</table>']
    if not df.empty:
        parts += [_section("Stability", "stability", stability_figure(df, info, whole_run=True, font=14),
                           f"The smoothed PSI against its threshold, the {name} of the network and of its candidate, "
                           "the Early-Bird distance and the schedules, epoch by epoch."),
                  _section("Channels", "channels", channel_figure(r),
                           "The fraction of each group's channels the candidate sub-network keeps, at every searched "
                           "epoch."),
                  _section("Trade-off", "tradeoff", tradeoff_figure(r, df),
                           f"{name[:1].upper() + name[1:]} against FLOPs: the dense network at its best, the pruned one at "
                           "the end, every "
                           "epoch's model and each candidate as if pruned then."),
                  _section("Branches", "branches", branches_figure(r, df, info),
                           f"Final {name} of the branches that pruned at other epochs.")]
    data = json.dumps({"run_id": r.run_id, "summary": {k: v for k, v in s.items() if k != "psi"}}, default=str)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(r.run_id)} · osp"
            f"</title><style>{STYLE}</style><script>{get_plotlyjs()}</script><script>{SCRIPT}</script></head>"
            f"<body>{''.join(parts)}<script type=\"application/json\" id=\"osp-summary\">"
            f"{html.escape(data, quote=False)}</script></body></html>")


def write_report(run_dir: str | Path, out: str | Path) -> Path:
    """report_html(run_dir) written to `out` (atomically: a .tmp beside it, then renamed)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(report_html(run_dir), encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
