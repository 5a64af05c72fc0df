"""Ultralytics YOLO pruned inside its own trainer (osp_engine.integrations.ultralytics), on the bundled
detection set at imgsz 64: the cycle's steps in the trainer's callbacks, the prune within 0.5 pp of the
target by Torch-Pruning's counter, the mAP recorded under its name every epoch, the LR on the trainer's
schedule through the prune, last.pt loading as a YOLO model (without osp) that validates and exports
to ONNX equal to PyTorch. Properties only: which epoch prunes, and the mAP, differ between CPUs."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="osp-yolo-settings-"))   # not ~/.config
os.environ["YOLO_OFFLINE"] = "1"                                                          # no network probe
ultralytics = pytest.importorskip("ultralytics")
ultralytics.settings.update({"mlflow": False, "tensorboard": False, "wandb": False, "sync": False})

import torch_pruning as tp  # noqa: E402
from ultralytics import RTDETR, YOLO  # noqa: E402

from osp_engine.integrations.ultralytics import OneCyclePruning  # noqa: E402
from osp_engine.method.config import ConfigError  # noqa: E402
from osp_engine.running.detection_set import DetectionSetSpec, write_detection_set  # noqa: E402
from osp_engine.storage.metric import Metric  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402

pytestmark = pytest.mark.xdist_group("ultralytics")   # one worker: the trained YOLOv8n is shared, not trained twice
IMGSZ, EPOCHS, TARGET = 64, 6, 0.5
TRAIN = dict(imgsz=IMGSZ, batch=16, workers=0, plots=False, verbose=False, device="cpu", amp=False, exist_ok=True,
             seed=0, deterministic=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_detection_set(tmp_path_factory.mktemp("set"), DetectionSetSpec(imgsz=IMGSZ, train=64, val=32))


def _train(yaml: str, data: Path, root: Path, epochs: int = EPOCHS, callbacks: dict | None = None, **settings):
    model = YOLO(yaml)
    pruning = OneCyclePruning(target=TARGET, runs_dir=root / "runs", **settings).add_to(model)
    for event, fn in (callbacks or {}).items():
        model.add_callback(event, fn)
    model.train(data=str(data), epochs=epochs, project=str(root / "ultralytics"), name=yaml.split(".")[0], **TRAIN)
    return pruning


def _tensors(out) -> list[np.ndarray]:
    """Every tensor of a model's output (tensors, tuples, lists, dicts), depth first."""
    if isinstance(out, torch.Tensor):
        return [out.numpy()]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in _tensors(item)]


def _flops(model: torch.nn.Module) -> int:
    flops, _ = tp.utils.count_ops_and_params(model.float().eval(), torch.zeros(1, 3, IMGSZ, IMGSZ))
    return int(flops)


def _ema_lag(trainer) -> tuple[float, float]:
    """(the EMA's decay now, the largest relative difference between a parameter of the EMA model and the
    trained model's): with a small decay the EMA follows the model closely, if it is updated at all (the
    BatchNorm statistics move with every forward pass, the EMA with every optimiser step: left out)."""
    model, ema = dict(trainer.model.named_parameters()), dict(trainer.ema.ema.named_parameters())
    lag = max(((ema[k] - v).abs().max() / v.abs().max().clamp_min(1e-6)).item() for k, v in model.items())
    return trainer.ema.decay(trainer.ema.updates), lag


@pytest.fixture(scope="module")
def yolov8n(data, tmp_path_factory):
    lags = []
    pruning = _train("yolov8n.yaml", data, tmp_path_factory.mktemp("v8n"),
                     callbacks={"on_train_epoch_end": lambda trainer: lags.append(_ema_lag(trainer))})
    pruning.ema_lags = lags
    return pruning


def test_the_ema_follows_the_pruned_model(yolov8n):
    """After the prune the EMA model is pruned alike and goes on averaging the trained one (Ultralytics
    caches the tensors it averages: they are the new ones)."""
    decay, lag = yolov8n.ema_lags[-1]
    assert decay < 0.05 and lag < 0.02


def test_yolov8n_prunes_at_its_stop_rule_with_the_map_recorded_every_epoch(yolov8n):
    reader = RunReader(yolov8n.run_dir)
    info, rows = reader.info(), reader.epochs()
    assert info["status"] == "finished" and info["prune_reason"] in ("stable", "sl_end")
    assert info["metric"] == Metric("mAP50-95 (box)") and "-yolov8n-" in reader.run_id
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    assert all(r["val_acc"] is not None and 0.0 <= r["val_acc"] <= 100.0 for r in rows)
    t_star = info["t_star"]
    assert 0 <= t_star < EPOCHS - 1 and all(r["phase"] == "pruned" for r in rows if r["epoch"] > t_star)
    kept = {k["name"]: k["reason"] for k in reader.summary()["kept_whole"]}
    assert any("output" in why for why in kept.values())          # the neck convolutions the head returns
    assert (reader.dir / "model.pt").is_file()


def test_the_pruned_last_pt_is_within_half_a_point_of_the_target_by_torch_prunings_counter(yolov8n, data):
    dense = _flops(YOLO("yolov8n.yaml").model.__class__("yolov8n.yaml", nc=10, verbose=False))
    pruned = _flops(YOLO(yolov8n.trainer.last).model)
    assert abs((1 - pruned / dense) - TARGET) <= 0.005
    assert abs((1 - pruned / dense) - RunReader(yolov8n.run_dir).summary()["flops_reduction"]) < 1e-9


def test_the_lr_follows_the_trainers_schedule_through_the_prune(yolov8n):
    """After the warm-up every epoch's LR is initial_lr x lf(epoch), the trainer's own LambdaLR, before the
    prune and after it (the scheduler rebuilt on the new optimiser at the same epoch)."""
    trainer = yolov8n.trainer
    rows = RunReader(yolov8n.run_dir).epochs()
    t_star = RunReader(yolov8n.run_dir).info()["t_star"]
    group = next(g for g in trainer.optimizer.param_groups if g.get("param_group") == "weight")
    warm = int(np.ceil(trainer.args.warmup_epochs))
    checked = [r for r in rows if r["epoch"] >= warm]
    assert any(r["epoch"] > t_star for r in checked)
    for r in checked:
        assert r["lr"] == pytest.approx(group["initial_lr"] * trainer.lf(r["epoch"]), rel=1e-9)


def test_last_pt_loads_without_osp_and_validates(yolov8n, data):
    """In a fresh process where osp cannot be imported: YOLO(last.pt) is the pruned model and validates."""
    code = ("import sys; sys.modules['osp_engine'] = None\n"
            "from ultralytics import YOLO\n"
            f"m = YOLO({str(yolov8n.trainer.last)!r})\n"
            "n = sum(p.numel() for p in m.model.parameters())\n"
            f"r = m.val(data={str(data)!r}, imgsz={IMGSZ}, batch=16, workers=0, plots=False, device='cpu', "
            "verbose=False)\n"
            "print('OK', n, r.box.map)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n, box_map = out.stdout.split("OK")[-1].split()
    dense = sum(p.numel() for p in YOLO("yolov8n.yaml").model.__class__("yolov8n.yaml", nc=10, verbose=False)
                .parameters())
    assert int(n) < dense and 0.0 <= float(box_map) <= 1.0


def test_the_pruned_model_exports_to_onnx_equal_to_pytorch(yolov8n, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = YOLO(yolov8n.trainer.last)
    path = model.export(format="onnx", imgsz=IMGSZ, simplify=False, dynamic=False, device="cpu")
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        expected = YOLO(yolov8n.trainer.last).model.float().eval()(x)[0].numpy()
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    # boxes in pixels (an untrained head puts some at 480, where float32 steps by 3e-5): relative there
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_rt_detr_and_other_tasks_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="RT-DETR"):
        OneCyclePruning().add_to(RTDETR("rtdetr-l.yaml"))
    with pytest.raises(ConfigError, match="task 'classify'"):
        OneCyclePruning().add_to(YOLO("yolov8n-cls.yaml"))


def test_yolo11n_keeps_its_attention_block_whole_and_prunes_the_rest(data, tmp_path):
    pruning = _train("yolo11n.yaml", data, tmp_path)
    reader = RunReader(pruning.run_dir)
    assert reader.info()["status"] == "finished" and reader.info()["t_star"] is not None
    kept = {k["name"]: k["reason"] for k in reader.summary()["kept_whole"]}
    assert any("attention" in why for why in kept.values())
    dense = _flops(YOLO("yolo11n.yaml").model.__class__("yolo11n.yaml", nc=10, verbose=False))
    assert abs((1 - _flops(YOLO(pruning.trainer.last).model) / dense) - TARGET) <= 0.005
    assert all(r["val_acc"] is not None for r in reader.epochs())
    metrics = YOLO(pruning.trainer.last).val(data=str(data), imgsz=IMGSZ, batch=16, workers=0, plots=False,
                                             device="cpu", verbose=False)
    assert 0.0 <= metrics.box.map <= 1.0


def test_yolov8n_seg_prunes_on_the_mask_map_and_its_last_pt_validates_and_exports(tmp_path_factory, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    data = write_detection_set(tmp_path_factory.mktemp("seg"), DetectionSetSpec(imgsz=IMGSZ, train=64, val=32,
                                                                                 task="segment"))
    pruning = _train("yolov8n-seg.yaml", data, tmp_path)
    reader = RunReader(pruning.run_dir)
    assert reader.info()["status"] == "finished" and reader.info()["t_star"] is not None
    assert reader.info()["metric"] == Metric("mAP50-95 (mask)")
    assert all(r["val_acc"] is not None for r in reader.epochs())
    dense = _flops(YOLO("yolov8n-seg.yaml").model.__class__("yolov8n-seg.yaml", nc=10, verbose=False))
    assert abs((1 - _flops(YOLO(pruning.trainer.last).model) / dense) - TARGET) <= 0.005
    metrics = YOLO(pruning.trainer.last).val(data=str(data), imgsz=IMGSZ, batch=16, workers=0, plots=False,
                                             device="cpu", verbose=False)
    assert 0.0 <= metrics.seg.map <= 1.0
    path = YOLO(pruning.trainer.last).export(format="onnx", imgsz=IMGSZ, simplify=False, dynamic=False, device="cpu")
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        out = YOLO(pruning.trainer.last).model.float().eval()(x)
    tensors = _tensors(out)                              # output0 first, the mask prototypes among the rest
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    np.testing.assert_allclose(got[0], tensors[0], rtol=1e-4, atol=1e-4)       # boxes, scores, mask coefficients
    proto = next(t for t in tensors if t.shape == got[1].shape)
    np.testing.assert_allclose(got[1], proto, rtol=1e-4, atol=1e-4)


def test_a_cancel_from_the_studio_stops_the_trainer_and_records_the_run_cancelled(data, tmp_path):
    model = YOLO("yolov8n.yaml")
    pruning = OneCyclePruning(target=TARGET, runs_dir=tmp_path / "runs").add_to(model)
    model.add_callback("on_train_epoch_start",          # as the studio's Cancel button: through run.db
                       lambda trainer: trainer.epoch == 1 and RunReader(pruning.run_dir).send_command("cancel"))
    model.train(data=str(data), epochs=EPOCHS, project=str(tmp_path / "ultralytics"), name="cancel", **TRAIN)
    reader = RunReader(pruning.run_dir)
    assert reader.info()["status"] == "cancelled" and reader.info()["holder"] is None
    assert reader.last_epoch() < EPOCHS - 1


def test_an_error_in_the_trainer_records_the_run_failed_and_frees_it(data, tmp_path):
    def fail(trainer):
        if trainer.epoch == 1:
            raise RuntimeError("a broken batch")

    with pytest.raises(RuntimeError, match="a broken batch"):
        _train("yolov8n.yaml", data, tmp_path, callbacks={"on_train_epoch_start": fail})
    (run,) = list((tmp_path / "runs").iterdir())
    info = RunReader(run).info()
    assert info["status"] == "failed" and info["holder"] is None and "stopped before the end" in info["error"]


def test_the_yolo_command_prunes_on_the_bundled_set_offline(tmp_path, capsys):
    from osp_engine.__main__ import main

    code = main(["yolo", "--epochs", "4", "--imgsz", "32", "--batch", "32", "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "ul"), "--runs-dir", str(tmp_path / "runs"), "--set", "sl_end=1"])
    out = capsys.readouterr().out
    assert code == 0 and "finished: pruned after epoch" in out and "mAP50-95 (box)" in out
    (run,) = list((tmp_path / "runs").iterdir())
    assert RunReader(run).info()["t_star"] is not None and (tmp_path / "data" / "digits-det-32" / "data.yaml").is_file()


@pytest.mark.slow
def test_the_readme_yolo_example_runs_as_written(tmp_path):
    """The README's YOLO block in a fresh interpreter (30 epochs on the bundled set: minutes on 2 cores)."""
    import re

    from conftest import ROOT

    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                if "ultralytics" in b]
    (tmp_path / "example.py").write_text(block)
    env = {**os.environ, "OSP_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir, onnx = out.stdout.strip().splitlines()[-1].split()
    assert RunReader(run_dir).info()["status"] == "finished" and Path(onnx).is_file()


def test_the_studio_shows_the_yolo_run_under_its_metric(yolov8n, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    monkeypatch.setenv("OSP_RUNS_DIR", str(yolov8n.run_dir.parent))
    monkeypatch.chdir(ROOT)
    runs = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    assert not runs.exception
    assert "Final mAP50-95 (box)" in [m.label for m in runs.metric]
    page = AppTest.from_string("from osp_studio.stability import render\nrender()\n", default_timeout=60)
    page.session_state["run_id"] = yolov8n.run_dir.name
    page.run()
    assert not page.exception
    assert any("mAP50-95 (box) (%)" in chart.proto.spec for chart in page.get("plotly_chart"))
