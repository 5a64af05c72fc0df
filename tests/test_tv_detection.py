"""torchvision's detectors pruned through `attach` in a detection loop of one's own
(osp_engine.integrations.detection): a one-stage detector's backbone, FPN and head together (the head's
last convolutions kept whole for the box coder), a two-stage detector's backbone (its FPN outputs kept
whole for the RoI heads). Trained a few steps on random boxes with the detector's own losses, pruned at
sl_end; the pruned part's counts equal Torch-Pruning's counter, its outputs keep their shapes, the whole
detector still detects, and the exported part reloads equal."""

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torchvision.models import detection

from osp_engine import attach, load_pruned
from osp_engine.integrations.detection import BackboneAndHead, backbone_input, prunable_part
from osp_engine.method.flops import output_shapes
from osp_engine.storage.metric import Metric
from osp_engine.storage.reader import RunReader

LOSS = Metric("training loss", higher=False, unit="")     # this loop validates nothing: its loss stands in
SIZE = 128                                                # the transform's min and max size: images are 128x128


def _fcos():
    return detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5, min_size=SIZE, max_size=SIZE)


def _retinanet():
    return detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5, min_size=SIZE,
                                            max_size=SIZE)


def _faster_rcnn():
    return detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5,
                                                           min_size=SIZE, max_size=SIZE)


def _ssdlite():
    return detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)


DETECTORS = [pytest.param(_faster_rcnn, id="fasterrcnn_mobilenet_v3_large_320_fpn"),
             pytest.param(_ssdlite, id="ssdlite320_mobilenet_v3_large"),
             pytest.param(_retinanet, id="retinanet_resnet50_fpn"),
             pytest.param(_fcos, id="fcos_resnet50_fpn")]


def _batch(rng: np.random.Generator, n: int = 2):
    """n random images (3, SIZE, SIZE) with 1-2 random boxes each (x0 < x1, y0 < y1 in pixels)."""
    images, targets = [], []
    for _ in range(n):
        k = int(rng.integers(1, 3))
        xy = rng.uniform(0, SIZE / 2, (k, 2))
        wh = rng.uniform(16, SIZE / 2, (k, 2))
        images.append(torch.from_numpy(rng.random((3, SIZE, SIZE), dtype=np.float32)))
        targets.append({"boxes": torch.from_numpy(np.concatenate([xy, xy + wh], 1)).float(),
                        "labels": torch.from_numpy(rng.integers(1, 5, k))})
    return images, targets


@pytest.mark.parametrize("build", DETECTORS)
def test_a_torchvision_detector_prunes_in_a_loop_of_ones_own(build, tmp_path):
    torch.manual_seed(0)
    model = build()
    part = prunable_part(model)
    rng = np.random.default_rng(0)
    example = backbone_input(model, _batch(rng, 1)[0])    # (1, 3, H, W) as the transform makes it
    with torch.no_grad():
        dense_shapes = output_shapes(part.eval()(example))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    epochs = 4
    with attach(part, example, num_classes=None, epochs=epochs, runs_dir=tmp_path, target=0.3,
                sl_start=1, sl_end=1, search="fill", name=build.__name__.strip("_"), metric=LOSS) as pruner:
        for epoch in range(epochs):
            pruner.begin_epoch(epoch)
            model.train()
            images, targets = _batch(rng)
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pruner.after_step(0.005)
            if pruner.end_epoch(epoch, train_loss=loss.item(), train_acc=None, val_loss=None, val_acc=loss.item(),
                                lr=0.005):
                optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)   # the pruned tensors
    reader = RunReader(pruner.store.dir)
    assert reader.info()["status"] == "finished" and reader.info()["t_star"] in (1, 2)
    net = pruner.net
    flops, params = tp.utils.count_ops_and_params(part.eval(), example)
    assert (net.cost.flops(pruner.model_counts), net.cost.params(pruner.model_counts)) == (int(flops), int(params))
    assert abs(reader.summary()["flops_reduction"] - 0.3) <= 0.005
    if isinstance(part, BackboneAndHead):                 # FPN and head inner layers pruned, last convs whole
        assert {g.name.split(".")[0] for g in net.groups} == {"backbone", "head"} and net.whole
        assert all(k.name.startswith("head.") for k in net.whole)
    else:                                                 # the FPN's outputs, which the RoI heads read
        assert net.whole and all("output" in k.reason for k in net.whole)
    reloaded = load_pruned(reader.dir / "model.pt", model=prunable_part(build()))   # traced: not under no_grad
    with torch.no_grad():
        assert output_shapes(part(example)) == dense_shapes
        detections = model.eval()(_batch(rng, 1)[0])      # the whole detector still runs
        assert set(detections[0]) >= {"boxes", "labels", "scores"}
        for a, b in zip(_tensors(part(example)), _tensors(reloaded(example))):
            assert torch.equal(a, b)


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in _tensors(item)]


def test_the_readme_detection_example_runs_as_written(tmp_path):
    import os
    import re
    import subprocess
    import sys

    from conftest import ROOT

    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                if "torchvision" in b]
    (tmp_path / "example.py").write_text(block)
    env = {**os.environ, "OSP_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = out.stdout.strip().splitlines()[-1].split()[0]
    info = RunReader(run_dir).info()
    assert info["status"] == "finished" and info["t_star"] is not None and info["metric"] == LOSS
