"""Figure pieces for the studio pages: phase bands and marker lines as layout dicts, matrices as heatmaps or images.

Bands and lines are plain dicts handed to `update_layout` once. Plotly's add_vline/add_vrect on a
subplot figure re-validate every shape already there; for the Stability chart of a 300-epoch run
that alone took about 140 ms, half the page's render budget.
"""
from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

from osp_engine.method.analysis import kept_fraction, phase_spans

PHASE_COLOURS = {"dense": "rgba(120,120,120,0.10)", "sparsity": "rgba(221,107,32,0.12)",
                 "pruned": "rgba(43,108,176,0.12)"}
RUN_COLOURS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#c53030", "#d69e2e", "#319795", "#b83280",
               "#4a5568", "#2c7a7b")           # one per run, in the order picked (Trade-off, Compare)
IMAGE_ROWS = 1000            # a matrix with more rows is sent as one PNG instead of a heatmap's cells


def phase_bands(epochs: list[int], phases: list[str], xref: str = "x") -> list[dict]:
    """One shaded rectangle per contiguous phase, spanning the full height of the figure."""
    return [dict(type="rect", xref=xref, yref="paper", x0=a - 0.5, x1=b + 0.5, y0=0, y1=1, line_width=0,
                 fillcolor=PHASE_COLOURS.get(phase, "rgba(0,0,0,0)"), layer="below")
            for phase, a, b in phase_spans(epochs, phases)]


def vline(x: float, colour: str, xref: str = "x", yref: str = "paper", dash: str = "dash") -> dict:
    """A vertical line at x over the whole height of yref ('paper': every subplot; 'y2 domain': one)."""
    return dict(type="line", xref=xref, yref=yref, x0=x, x1=x, y0=0, y1=1, line=dict(color=colour, dash=dash))


def hline(y: float, colour: str, yref: str = "y", dash: str = "dash") -> dict:
    """A horizontal line at y across the full width of the subplot that owns yref."""
    xref = "x domain" if yref == "y" else "x" + yref[1:] + " domain"
    return dict(type="line", xref=xref, yref=yref, x0=0, x1=1, y0=y, y1=y, line=dict(color=colour, dash=dash))


def label(x: float, y: float, text: str, colour: str, xref: str = "x", yref: str = "paper") -> dict:
    """A small text annotation, left-aligned at (x, y), above the point."""
    return dict(x=x, y=y, xref=xref, yref=yref, text=text, showarrow=False, xanchor="left", yanchor="bottom",
                font=dict(color=colour, size=11))


def colour_lut(colorscale: str | list) -> np.ndarray:
    """(256, 3) uint8: the colour scale sampled at 256 evenly spaced points."""
    colours = sample_colorscale(get_colorscale(colorscale) if isinstance(colorscale, str) else colorscale,
                                list(np.linspace(0.0, 1.0, 256)))
    return np.array([unlabel_rgb(c) for c in colours], dtype=np.float64).round().astype(np.uint8)


def matrix_figure(z: np.ndarray, x: np.ndarray, y: list | np.ndarray | None, colorscale: str | list,
                  zmin: float, zmax: float, colour_title: str | None) -> go.Figure:
    """A (rows, cols) matrix: a heatmap up to IMAGE_ROWS rows, above that one PNG image.

    Contract: x (cols,) and, when numeric, y (rows,) evenly spaced once rows > IMAGE_ROWS (the image
    maps pixel i to x0 + i*dx); text row labels are kept by the heatmap only. The image carries the same colours but no per-cell hover values and
    no colour bar; pages pair it with a drill-down that shows a slice as a heatmap. colour_title None:
    no colour bar either way.
    """
    if z.shape[0] <= IMAGE_ROWS:
        return go.Figure(go.Heatmap(z=z, x=x, y=y, colorscale=colorscale, zmin=zmin, zmax=zmax,
                                    showscale=colour_title is not None, colorbar=dict(title=colour_title)))
    scaled = np.clip((np.asarray(z, dtype=np.float64) - zmin) / max(zmax - zmin, 1e-12), 0.0, 1.0)
    rgb = colour_lut(colorscale)[(scaled * 255).round().astype(np.intp)]          # (rows, cols, 3) uint8
    numeric_y = isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.number)
    fig = px.imshow(rgb, x=x, y=y if numeric_y else None, aspect="auto", binary_string=True,
                    binary_backend="pypng", binary_compression_level=1)
    fig.update_yaxes(scaleanchor=False)      # plotly.js ties an image's pixels to squares unless told not to
    if not numeric_y:
        fig.update_yaxes(title_text=f"row, of {z.shape[0]} (drawn as an image)")
    return fig


def kept_fraction_figure(x: np.ndarray, kept: np.ndarray, sizes: list[int], names: list[str]) -> go.Figure:
    """(G, E) share of each group's channels the candidate keeps, group 0 on top (the Channels page and the
    report). kept: (E, N) bool over every channel; sizes: channels per group; names: the groups' labels."""
    fig = matrix_figure(kept_fraction(kept, sizes), x, names, "Blues", 0.0, 1.0, "kept")
    fig.update_layout(height=200 + 22 * len(sizes), xaxis_title="epoch", yaxis_autorange="reversed")
    return fig
