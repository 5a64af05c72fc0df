"""Text from a run.db made safe to show (Markdown, Plotly) and the figures' formats."""
from __future__ import annotations

import html
import re

import numpy as np

from osp_engine.storage.reader import RunReader

VARIANT_TEXT = {
    "official": "reproduces the official code, its known quirks included",
    "corrected": "fixes the official code's known quirks (see docs/method.md)",
    "unrecorded": "made before osp recorded variants",
}

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:])")

def plain(value) -> str:
    """Text read from a run.db as literal text inside Markdown: one line, every Markdown character
    escaped, so a crafted name or error can draw no link, image or formatting (nothing is fetched)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))

def chart_text(value) -> str:
    """Text read from a run.db as literal text inside a Plotly chart: Plotly draws <a href>, <img>-free
    pseudo-HTML in names, ticks and annotations, so every tag character becomes an entity it shows as is."""
    return html.escape(" ".join(str(value).split()), quote=False)

def variant_line(variant: str) -> str:
    """'variant official — reproduces the official code, …': what a run's variant means, in one line."""
    return f"variant **{plain(variant)}** — {VARIANT_TEXT.get(variant, 'unknown')}"

def percent(x) -> float | None:
    """A fraction as a percentage with one decimal, for tables (None stays None)."""
    return None if x is None else round(100 * x, 1)

def seconds_per_epoch(r: RunReader, epochs_done: int) -> float | None:
    """The mean wall time of the run's last five stored epochs (None before the first)."""
    recent = [row["epoch_seconds"] for row in r.epochs(epochs_done - 6) if row.get("epoch_seconds")]
    return sum(recent) / len(recent) if recent else None

def flops_ratio(s: dict) -> float | None:
    """Dense FLOPs over the final model's (2.0 at 50 % removed), the bound a speed-up is measured
    against; None before the run has both. s: a run's summary."""
    return s["dense_flops"] / s["final_flops"] if s.get("dense_flops") and s.get("final_flops") else None


def fmt_pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f} %"
