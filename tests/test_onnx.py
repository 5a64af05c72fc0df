"""ONNX export: a pruned demo model and a pruned torchvision model run on ONNX Runtime with PyTorch's
outputs (within 1e-4) at batch sizes 1 and 7, with a dynamic batch; without onnxruntime, one line."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from osp_engine import export_onnx, get_preset, load_pruned
from osp_engine.method.config import apply_overrides
from osp_engine.running.run import Run

ort = pytest.importorskip("onnxruntime")


def _check(model_pt, out):
    done = export_onnx(model_pt, out)
    assert set(done["max_abs_diff"]) == {1, 7} and max(done["max_abs_diff"].values()) <= 1e-4, done
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "input" and given.shape[0] == "batch"                 # the batch is dynamic
    import onnx
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops                  # folded into the convolutions
    model = load_pruned(model_pt)
    assert all(p.is_contiguous() for p in model.parameters())                  # the pruned tensors are new
    x = torch.randn(3, *given.shape[1:])
    theirs = session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        assert np.abs(theirs - model(x).numpy()).max() <= 1e-4
    return done


def test_the_pruned_demo_model_exports_to_onnx(finished_run, tmp_path):
    done = _check(finished_run.dir / "model.pt", tmp_path / "demo.onnx")
    assert done["inputs"] == "validation images" and done["opset"] == 17


def test_a_pruned_torchvision_model_exports_to_onnx(tmp_path):
    cfg = apply_overrides(get_preset("demo"), ["model=tv-resnet18", "dataset=synthetic-cifar10", "synthetic_size=128",
                                               "batch_size=64", "epochs=4", "sl_start=0", "sl_end=1", "monitor_start=0",
                                               "lr=0.01", "speed_budget_s=0", "round_to=8"])
    run = Run(cfg, tmp_path / "runs")
    assert run.execute() == "finished", run.error
    _check(run.dir / "model.pt", tmp_path / "tv.onnx")


def test_the_command_line_exports_onnx_and_says_what_to_install_without_it(finished_run, tmp_path):
    out = tmp_path / "m.onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "osp_engine", "export", str(finished_run.dir), "--format", "onnx",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and out.is_file(), res.stderr
    assert "ONNX opset 17, dynamic batch; ONNX Runtime's outputs differ from PyTorch's by at most" in res.stdout
    blocked = ("import sys; sys.modules['onnxruntime'] = None\nfrom osp_engine.interfaces.cli import main\n"
               f"sys.exit(main(['export', {str(finished_run.dir)!r}, '--out', {str(tmp_path / 'n.onnx')!r}]))")
    res = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and not (tmp_path / "n.onnx").exists()
    assert res.stderr == "error: ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime\n"
