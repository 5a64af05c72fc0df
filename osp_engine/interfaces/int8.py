"""INT8 after the prune: a run's exported model quantized with ONNX Runtime's static quantization.

`export_int8(model_pt, out)` writes the pruned model as ONNX (checked against PyTorch, onnx_export.py),
quantizes it (QDQ: int8 weights per output channel, uint8 activations), calibrated on the first
`calibration_batches` batches of the run's training images, then measures the validation accuracy of
both models on the run's whole validation set and their latency at batch 1 (one thread, the two timed
in turns: running/speed.py). The INT8 model is written only when its accuracy is at most `tolerance` percentage points
below FP32's; otherwise nothing is written and ValueError says by how much it dropped. The run's dataset
must load here (calibration and validation need its images). onnx and onnxruntime are imported only
when called; without them, ConfigError says what to install.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..method.config import Config, ConfigError
from ..running.speed import cpu_session, session_latencies
from ..storage.reader import RunReader
from .onnx_export import _runtime, export_onnx

LATENCY_BUDGET_S = 2.0              # seconds of timing the FP32 and INT8 models in turns (at least 20 rounds)


def _data(run_dir: Path):
    """(train, val) batches of the run's dataset; ConfigError when it does not load here."""
    from ..running.data import load_dataset

    info = RunReader(run_dir).info()
    cfg = Config.from_json(json.dumps(info["config"]))
    if cfg.dataset == "custom" or info["metric"].name != "accuracy":
        raise ConfigError(f"{run_dir.name} trained your own model on your own data: --int8 calibrates and validates "
                          f"on a run's registry dataset (digits, CIFAR, ImageFolder)")
    try:
        train, val, _ = load_dataset(cfg)
    except Exception as e:
        raise ConfigError(f"--int8 calibrates on {run_dir.name}'s training images, and its dataset {cfg.dataset!r} "
                          f"does not load here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return train, val


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().contiguous().numpy()


def accuracy(session, val) -> float:
    """Top-1 accuracy in percent of an ONNX Runtime session over every validation batch."""
    right = total = 0
    for x, y in val:
        logits = session.run(None, {"input": _numpy(x)})[0]
        right += int((logits.argmax(1) == y.cpu().numpy()).sum())
        total += len(y)
    return 100.0 * right / max(total, 1)


def quantize(fp32: Path, int8: Path, batches: list[np.ndarray]) -> None:
    """ONNX Runtime's static quantization of the model at `fp32` (input "input") into `int8`: QDQ, int8
    weights per output channel, uint8 activations, ranges calibrated on `batches` ((N, C, H, W) float32)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self):
            return next(({"input": b} for b in self.left), None)

    # The exporter leaves a folded BatchNorm's bias as a computation, not a constant: a convolution whose
    # bias is not an initializer is not quantized, and ONNX Runtime then ran 54 of ResNet-56's 57
    # convolutions in float behind a DequantizeLinear, slower than FP32. Constant folding first fixes it.
    folded = int8.with_name(f"{int8.stem}.folded.onnx")
    quant_pre_process(str(fp32), str(folded), skip_symbolic_shape=True)
    try:
        quantize_static(str(folded), str(int8), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        folded.unlink(missing_ok=True)


def export_int8(model_pt: str | Path, out: str | Path, calibration_batches: int = 8, tolerance: float = 1.0) -> dict:
    """Write `model_pt` (a run's model.pt) as an INT8 ONNX model at `out` when its accuracy holds.

    Returns {"path", "fp32_acc", "int8_acc", "drop", "fp32_ms", "int8_ms", "speedup", "calibration_images"}.
    """
    _runtime()
    if calibration_batches < 1:
        raise ConfigError("--calibration-batches must be at least 1")
    model_pt, out = Path(model_pt), Path(out)
    train, val = _data(model_pt.parent)
    batches = [_numpy(x) for (x, _), _ in zip(train, range(calibration_batches))]
    with tempfile.TemporaryDirectory(dir=out.resolve().parent, prefix=".int8-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model_pt, fp32)
        quantize(fp32, int8, batches)
        sessions = [cpu_session(p) for p in (fp32, int8)]
        fp32_acc, int8_acc = (accuracy(s, val) for s in sessions)
        drop = fp32_acc - int8_acc
        if drop > tolerance:
            raise ValueError(f"INT8 accuracy {int8_acc:.2f} % is {drop:.2f} pp below FP32's {fp32_acc:.2f} %, beyond "
                             f"the tolerance of {tolerance:g} pp: not written (more calibration batches, or a "
                             f"larger --tolerance)")
        fp32_s, int8_s = session_latencies(sessions, {"input": batches[0][:1]}, LATENCY_BUDGET_S)
        int8.replace(out)
    return {"path": str(out), "fp32_acc": fp32_acc, "int8_acc": int8_acc, "drop": drop, "fp32_ms": 1e3 * fp32_s,
            "int8_ms": 1e3 * int8_s, "speedup": fp32_s / int8_s, "calibration_images": sum(len(b) for b in batches)}
