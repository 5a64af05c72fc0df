"""The bundled detection set: digits pasted on canvases with their boxes, in Ultralytics' layout."""

import dataclasses
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from osp_engine.interfaces.cli import main
from osp_engine.method.config import ConfigError
from osp_engine.running.data import digits_arrays, stratified_split
from osp_engine.running.detection_set import INK, DetectionSetSpec, write_detection_set

SMALL = DetectionSetSpec(imgsz=48, train=40, val=12, max_digits=3, min_side=10, max_side=24, seed=3)


def _read(folder, part, i):
    """(grey pixels (H, W) in [0, 1], [(class, cx, cy, w, h)]) of one image of the set."""
    rgb = np.asarray(Image.open(folder / "images" / part / f"{i:06d}.png"))
    assert rgb.shape == (SMALL.imgsz, SMALL.imgsz, 3) and (rgb == rgb[..., :1]).all()
    lines = (folder / "labels" / part / f"{i:06d}.txt").read_text().split()
    return rgb[..., 0] / 255.0, [(int(c), *map(float, r)) for c, *r in np.array(lines).reshape(-1, 5)]


def test_every_ink_pixel_lies_in_exactly_one_tight_box_of_its_digit(tmp_path):
    folder = write_detection_set(tmp_path, SMALL).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    _, labels = digits_arrays()
    n = SMALL.imgsz
    for part, count in (("train", SMALL.train), ("val", SMALL.val)):
        for i in range(count):
            grey, boxes = _read(folder, part, i)
            sources = manifest["sources"][f"{part}/{i:06d}"]
            assert 1 <= len(boxes) <= SMALL.max_digits and len(sources) == len(boxes)
            covered = np.zeros((n, n), dtype=int)
            for (c, cx, cy, w, h), src in zip(boxes, sources):
                assert c == labels[src]                             # the class is the pasted digit
                x0, x1 = round((cx - w / 2) * n), round((cx + w / 2) * n)
                y0, y1 = round((cy - h / 2) * n), round((cy + h / 2) * n)
                assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n
                ink = grey[y0:y1, x0:x1] > INK
                assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()   # tight
                covered[y0:y1, x0:x1] += 1
            assert covered.max() <= 1                               # boxes never overlap
            assert not ((grey > INK) & (covered == 0)).any()        # no ink outside a box


def test_validation_canvases_hold_only_digits_of_the_validation_split(tmp_path):
    folder = write_detection_set(tmp_path, SMALL).parent
    sources = json.loads((folder / "manifest.json").read_text())["sources"]
    train_idx, val_idx = stratified_split(digits_arrays()[1], 0.2, seed=0)
    used = {part: {s for k, v in sources.items() if k.startswith(part) for s in v} for part in ("train", "val")}
    assert used["train"] <= set(train_idx.tolist()) and used["val"] <= set(val_idx.tolist())


def test_the_same_spec_gives_the_same_set_and_is_reused(tmp_path):
    a = write_detection_set(tmp_path / "a", SMALL).parent
    b = write_detection_set(tmp_path / "b", SMALL).parent
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    for part, count in (("train", SMALL.train), ("val", SMALL.val)):
        for i in range(count):
            (pa, la), (pb, lb) = _read(a, part, i), _read(b, part, i)
            assert np.array_equal(pa, pb) and la == lb
    other = write_detection_set(tmp_path / "c", DetectionSetSpec(**{**SMALL.__dict__, "seed": 4})).parent
    assert (other / "manifest.json").read_bytes() != (a / "manifest.json").read_bytes()
    stamp = os.stat(a / "manifest.json").st_mtime_ns
    assert write_detection_set(tmp_path / "a", SMALL) == a / "data.yaml"      # there: reused, not rewritten
    assert os.stat(a / "manifest.json").st_mtime_ns == stamp


def test_data_yaml_names_the_folders_and_classes_as_ultralytics_reads_them(tmp_path):
    data = yaml.safe_load(write_detection_set(tmp_path, SMALL).read_text())
    root = tmp_path / "digits-det-48"
    assert data["path"] == str(root.resolve()) and (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == {c: str(c) for c in range(10)}
    for part in ("train", "val"):
        images = sorted(p.stem for p in (root / "images" / part).iterdir())
        assert images == sorted(p.stem for p in (root / "labels" / part).iterdir())


def test_a_foreign_folder_another_spec_or_a_bad_spec_is_refused_in_one_line(tmp_path):
    (tmp_path / "digits-det-48").mkdir()
    with pytest.raises(ConfigError, match="not an osp detection set"):
        write_detection_set(tmp_path, SMALL)
    write_detection_set(tmp_path / "x", SMALL)
    with pytest.raises(ConfigError, match="another spec"):
        write_detection_set(tmp_path / "x", DetectionSetSpec(**{**SMALL.__dict__, "train": 41}))
    with pytest.raises(ConfigError, match="min_side"):
        write_detection_set(tmp_path / "y", DetectionSetSpec(imgsz=16, min_side=12, max_side=20))
    assert not (tmp_path / "y" / "digits-det-16").exists()


def test_a_failed_write_leaves_no_half_set(tmp_path, monkeypatch):
    from osp_engine.running import detection_set

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(detection_set, "_write_yaml", full_disk)
    with pytest.raises(OSError):
        write_detection_set(tmp_path, SMALL)
    assert list(tmp_path.iterdir()) == []                          # the staging folder went with it


def test_the_command_line_writes_it_and_prints_its_data_yaml(tmp_path, capsys):
    assert main(["detection-set", "--out", str(tmp_path), "--imgsz", "32", "--train", "3", "--val", "2"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "digits-det-32" / "data.yaml")
    assert len(list((tmp_path / "digits-det-32" / "images" / "train").iterdir())) == 3
    assert main(["detection-set", "--out", str(tmp_path), "--imgsz", "8"]) == 2     # one line, no traceback
    assert "error: digit sides" in capsys.readouterr().err


def test_a_segmentation_set_outlines_each_digit_inside_its_tight_box(tmp_path):
    """task=segment: one polygon per digit, the convex hull of its ink, whose bounding box is the detection
    set's tight box of the same digit (Ultralytics derives the box from the polygon)."""
    seg = dataclasses.replace(SMALL, task="segment")
    folder = write_detection_set(tmp_path, seg).parent
    assert folder.name == f"digits-seg-{SMALL.imgsz}"
    boxes_folder = write_detection_set(tmp_path, SMALL).parent
    for i in range(SMALL.train):
        _, boxes = _read(boxes_folder, "train", i)
        lines = (folder / "labels" / "train" / f"{i:06d}.txt").read_text().splitlines()
        assert len(lines) == len(boxes)
        for line, (c, cx, cy, w, h) in zip(lines, boxes):
            cls, *coords = line.split()
            xy = np.array(coords, dtype=float).reshape(-1, 2)
            assert int(cls) == c and len(xy) >= 4
            assert np.allclose([xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()],
                               [cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2], atol=2e-6)
    with pytest.raises(ConfigError, match="unknown task"):
        write_detection_set(tmp_path, dataclasses.replace(SMALL, task="pose"))
