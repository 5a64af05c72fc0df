"""INT8 after the prune (`export --int8`): the pruned demo model quantized by ONNX Runtime's static
quantization, calibrated on the run's training images, written only within the accuracy tolerance, with
its accuracy and speed against FP32; without onnxruntime, one line."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from osp_engine.interfaces.cli import main
from osp_engine.interfaces.int8 import export_int8

ort = pytest.importorskip("onnxruntime")


def test_the_pruned_demo_model_exports_to_int8_within_the_tolerance(finished_run, tmp_path):
    out = tmp_path / "demo-int8.onnx"
    done = export_int8(finished_run.dir / "model.pt", out, calibration_batches=4, tolerance=2.0)
    assert out.is_file() and done["drop"] <= 2.0 and done["calibration_images"] == 4 * 64
    import onnx
    graph = onnx.load(str(out)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops           # weights and activations quantized
    made_by = {o: node.op_type for node in graph.node for o in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(made_by.get(i) == "DequantizeLinear" for c in convs for i in c.input)   # bias too: else
    # ONNX Runtime runs the convolution in float behind a DequantizeLinear, slower than FP32
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    logits = session.run(None, {"input": np.zeros((3, *given.shape[1:]), np.float32)})[0]
    assert logits.shape == (3, 10)                                          # the batch stays dynamic
    assert done["int8_ms"] > 0 and done["fp32_ms"] > 0 and abs(done["speedup"] - done["fp32_ms"] / done["int8_ms"]) < 1e-9


def test_beyond_the_tolerance_nothing_is_written_and_the_drop_is_said(finished_run, tmp_path, capsys):
    out = tmp_path / "refused.onnx"
    code = main(["export", str(finished_run.dir), "--out", str(out), "--int8", "--tolerance", "-100",
                 "--calibration-batches", "1"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and "beyond the tolerance of -100 pp: not written" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".int8-")]     # no temporary folder left


def test_int8_needs_an_onnx_output(finished_run, tmp_path, capsys):
    assert main(["export", str(finished_run.dir), "--out", str(tmp_path / "m.pt"), "--int8"]) == 2
    assert "--int8 writes an ONNX model" in capsys.readouterr().err


def test_without_onnxruntime_int8_says_what_to_install(finished_run, tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from osp_engine.interfaces.cli import main\n"
            f"sys.exit(main(['export', {str(finished_run.dir)!r}, '--out', {str(tmp_path / 'x.onnx')!r}, '--int8']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime"]


def test_every_convolution_of_a_cifar_resnet_is_quantized(tmp_path):
    """The TorchScript exporter leaves some folded BatchNorm biases as computations: without constant
    folding before quantization those convolutions stayed float (54 of ResNet-56's 57) and INT8 ran slower."""
    import onnx
    import torch

    from osp_engine.interfaces.int8 import quantize
    from osp_engine.models import build_model
    from osp_engine.storage.export import write_onnx

    torch.manual_seed(0)
    model = build_model("resnet20", 10, 32, 3).eval()
    write_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "fp32.onnx")
    quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", [np.random.default_rng(0).standard_normal(
        (4, 3, 32, 32), dtype=np.float32)])
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    made_by = {o: node.op_type for node in graph.node for o in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert all(made_by.get(i) == "DequantizeLinear" for c in convs for i in c.input)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]    # no folded copy left
