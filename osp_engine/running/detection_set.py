"""A small detection set built offline from the bundled digits, in the layout Ultralytics reads.

Each canvas (imgsz x imgsz, black) holds 1 to `max_digits` of scikit-learn's 8x8 digits, each scaled
up by nearest neighbour to a random side between `min_side` and `max_side` pixels and pasted at a
random place where it overlaps no other; its box is the tight box of its ink, its class the digit.
Training canvases draw from the digits' training split, validation canvases from its validation split
(the digits demo's fixed stratified 80/20 split), so a detector is validated on digits it never saw.

    <root>/digits-det-<imgsz>/
        images/{train,val}/000000.png   RGB, the digit grey in all three channels
        labels/{train,val}/000000.txt   one line per digit: class cx cy w h (fractions of the canvas)
        data.yaml                       path, train, val, names: what YOLO(...).train(data=...) reads
        manifest.json                   the spec and, per image, the digits' indices in the bundled file

The same spec writes the same pixels, boxes and manifest on every machine (numpy's PCG64 from `seed`;
only the PNG compression may differ with the zlib at hand). A set
is written into a temporary folder beside its place and renamed into it: a reader never sees half a
set, and a set already there with the same spec is reused as it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..method.config import ConfigError

INK = 0.05                      # a pixel above this fraction of full intensity is ink (boxes hug it)
TASKS = ("detect", "segment")
PLACE_TRIES = 50                # random places tried for one digit before the canvas holds fewer


@dataclass(frozen=True)
class DetectionSetSpec:
    imgsz: int = 64             # canvas side, pixels
    train: int = 600            # training canvases
    val: int = 150              # validation canvases
    max_digits: int = 3         # digits per canvas: 1 .. max_digits
    min_side: int = 12          # a pasted digit's side, pixels (the source is 8x8)
    max_side: int = 28
    seed: int = 0
    task: str = "detect"        # "detect": boxes; "segment": each digit's outline too (the convex hull of its ink)

    @classmethod
    def at(cls, imgsz: int, **fields) -> "DetectionSetSpec":
        """The spec of canvases `imgsz` pixels wide, its digits no larger than the canvas (max_side capped)."""
        return cls(imgsz=imgsz, max_side=min(cls.max_side, imgsz), **fields)

    def check(self) -> "DetectionSetSpec":
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}: use {' or '.join(TASKS)}")
        if not 8 <= self.min_side <= self.max_side <= self.imgsz:
            raise ConfigError(f"digit sides must satisfy 8 <= min_side ({self.min_side}) <= max_side "
                              f"({self.max_side}) <= imgsz ({self.imgsz})")
        if self.train < 1 or self.val < 1 or self.max_digits < 1:
            raise ConfigError("train, val and max_digits must be at least 1")
        return self


def write_detection_set(root: str | Path, spec: DetectionSetSpec = DetectionSetSpec()) -> Path:
    """The set's data.yaml under `root` (written if absent; reused if there with the same spec).
    ConfigError if its folder holds something else."""
    spec = spec.check()
    folder = Path(root) / f"digits-{spec.task[:3]}-{spec.imgsz}"
    if folder.exists():
        return _reuse(folder, spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _write(staging, spec)
        _write_yaml(staging, folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if folder.exists():                         # another process wrote it meanwhile
            return _reuse(folder, spec)
        raise
    return folder / "data.yaml"


def _reuse(folder: Path, spec: DetectionSetSpec) -> Path:
    try:
        written = json.loads((folder / "manifest.json").read_text())["spec"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"{folder} exists and is not an osp detection set: move it or pick another folder") from None
    if written != dataclasses.asdict(spec):
        raise ConfigError(f"{folder} holds a detection set of another spec ({written}): remove it to rewrite it")
    return folder / "data.yaml"


def _write(folder: Path, spec: DetectionSetSpec) -> None:
    from PIL import Image                           # torchvision's dependency; only a written set needs it

    from .data import digits_arrays, stratified_split   # torch: the command line imports this module at start
    images, labels = digits_arrays()                # (1797, 8, 8) in [0, 1], (1797,)
    split = dict(zip(("train", "val"), stratified_split(labels, 0.2, seed=0)))
    rng = np.random.default_rng(spec.seed)
    sources: dict[str, list[int]] = {}
    for part, count in (("train", spec.train), ("val", spec.val)):
        (folder / "images" / part).mkdir(parents=True)
        (folder / "labels" / part).mkdir(parents=True)
        for i in range(count):
            canvas, boxes = _canvas(rng, images, labels, split[part], spec)
            grey = np.round(canvas * 255).astype(np.uint8)                  # (imgsz, imgsz)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "images" / part / f"{i:06d}.png")
            if spec.task == "segment":              # class x1 y1 ... xk yk: the outline, as fractions
                lines = [f"{c} " + " ".join(f"{v:.6f}" for v in outline.ravel()) for c, *_, outline in boxes]
            else:
                lines = [f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h, _, _ in boxes]
            (folder / "labels" / part / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
            sources[f"{part}/{i:06d}"] = [src for *_, src, _ in boxes]
    manifest = {"spec": dataclasses.asdict(spec), "classes": [str(c) for c in range(10)], "sources": sources}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _canvas(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, pool: np.ndarray,
            spec: DetectionSetSpec) -> tuple[np.ndarray, list[tuple]]:
    """One canvas (imgsz, imgsz) in [0, 1] and its digits [(class, cx, cy, w, h, source index, outline)],
    outline: (k, 2) the convex hull of the digit's ink pixels (their corners), x and y as fractions."""
    n = spec.imgsz
    canvas = np.zeros((n, n), dtype=np.float32)
    taken: list[tuple[int, int, int]] = []          # (top, left, side) of each pasted square
    boxes = []
    for _ in range(int(rng.integers(1, spec.max_digits + 1))):
        src = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(spec.min_side, spec.max_side + 1))
        place = _free_place(rng, taken, side, n)
        if place is None:
            continue
        top, left = place
        rows = np.arange(side) * 8 // side                                 # nearest neighbour, 8 -> side
        patch = images[src][rows][:, rows]                                 # (side, side)
        ys, xs = np.nonzero(patch > INK)
        if len(ys) == 0:
            continue
        canvas[top:top + side, left:left + side] = patch
        taken.append((top, left, side))
        y0, y1, x0, x1 = top + ys.min(), top + ys.max() + 1, left + xs.min(), left + xs.max() + 1
        boxes.append((int(labels[src]), (x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n, src,
                      _outline(left + xs, top + ys) / n))
    return canvas, boxes


def _outline(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(k, 2) the convex hull, counter-clockwise, of the pixels at (xs, ys) taken as unit squares: its
    bounding box is the pixels' tight box."""
    from scipy.spatial import ConvexHull            # scikit-learn's dependency

    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)
    return corners[ConvexHull(corners).vertices]


def _free_place(rng: np.random.Generator, taken: list[tuple[int, int, int]], side: int, n: int) -> tuple[int, int] | None:
    """(top, left) of a side x side square inside the canvas that overlaps none taken, or None."""
    for _ in range(PLACE_TRIES):
        top, left = (int(v) for v in rng.integers(0, n - side + 1, size=2))
        if all(top + side <= t or t + s <= top or left + side <= l or l + s <= left for t, l, s in taken):
            return top, left
    return None


def _write_yaml(staging: Path, folder: Path) -> None:
    """data.yaml as Ultralytics reads it, pointing at the set's final place."""
    names = "\n".join(f"  {c}: '{c}'" for c in range(10))
    (staging / "data.yaml").write_text(f"path: {json.dumps(str(folder.resolve()))}\ntrain: images/train\n"
                                       f"val: images/val\nnames:\n{names}\n")
