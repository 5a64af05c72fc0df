"""Figure pieces of the pages: exact shapes of the layout dicts, and the heatmap/image switch of matrices."""
import base64
import io

import numpy as np
from PIL import Image

from osp_engine.charts.figures import IMAGE_ROWS, colour_lut, hline, matrix_figure, phase_bands, vline

TWO = [[0, "#e2e8f0"], [1, "#2b6cb0"]]


def _pixels(source: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_phase_bands_cover_each_contiguous_phase():
    bands = phase_bands([0, 1, 2, 3, 4, 5], ["dense", "dense", "sparsity", "sparsity", "pruned", "pruned"])
    assert [(b["x0"], b["x1"]) for b in bands] == [(-0.5, 1.5), (1.5, 3.5), (3.5, 5.5)]
    assert all(b["yref"] == "paper" and b["y0"] == 0 and b["y1"] == 1 for b in bands)


def test_lines_refer_to_their_subplot():
    assert hline(0.99, "red")["xref"] == "x domain"
    assert hline(0.1, "green", yref="y2") == dict(type="line", xref="x2 domain", yref="y2", x0=0, x1=1, y0=0.1,
                                                  y1=0.1, line=dict(color="green", dash="dash"))
    assert vline(7, "red")["yref"] == "paper" and vline(7, "red")["x0"] == 7


def test_colour_lut_runs_from_the_first_to_the_last_colour():
    lut = colour_lut(TWO)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].tolist() == [226, 232, 240] and lut[255].tolist() == [43, 108, 176]


def test_matrix_is_a_heatmap_up_to_the_limit():
    z = np.zeros((IMAGE_ROWS, 4))
    fig = matrix_figure(z, np.arange(4), None, TWO, 0, 1, "kept")
    assert fig.data[0].type == "heatmap" and np.asarray(fig.data[0].z).shape == (IMAGE_ROWS, 4)
    assert fig.data[0].colorbar.title.text == "kept"


def test_matrix_over_the_limit_is_one_image_with_the_same_colours():
    z = np.zeros((IMAGE_ROWS + 1, 5), dtype=np.uint8)
    z[3, 2] = 1
    fig = matrix_figure(z, np.arange(10, 15), None, TWO, 0, 1, None)
    image = fig.data[0]
    assert image.type == "image" and (image.x0, image.dx) == (10, 1)   # columns stay on the epoch axis
    px = _pixels(image.source)
    assert px.shape == (IMAGE_ROWS + 1, 5, 3)
    assert px[3, 2].tolist() == [43, 108, 176] and px[0, 0].tolist() == [226, 232, 240]
    assert "1001" in fig.layout.yaxis.title.text
    assert fig.layout.yaxis.scaleanchor is False                    # pixels stretch to the figure, not squares
