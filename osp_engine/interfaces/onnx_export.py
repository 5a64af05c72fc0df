"""ONNX export of a pruned model, checked on ONNX Runtime (optional: onnx and onnxruntime).

`export_onnx(model_pt, out)` loads the exported model.pt (storage/export.py, load_pruned),
writes it as ONNX with a dynamic batch dimension (input "input", output "logits"; BatchNorm folded
into the convolutions by the exporter in eval mode), then runs the file on ONNX Runtime's CPU provider
at batch sizes 1 and 7 and refuses it unless every output equals PyTorch's within 1e-4 + 1e-5 |output|
(numpy's allclose with those tolerances; the result gives the largest absolute difference). The inputs
are the run's own validation images when its dataset loads here, else standard normal noise; the
result says which. This module imports onnx and onnxruntime only when called.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from ..method.config import ConfigError
from ..storage.export import load_pruned, write_onnx

TOLERANCE = 1e-4          # absolute, plus RELATIVE of the output's size: float32 logits in the hundreds
RELATIVE = 1e-5           # differ by more than 1e-4 between two correct kernels (a conv with BatchNorm folded)
BATCHES = (1, 7)
INSTALL = "ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime"


def _runtime():
    """onnxruntime, or ConfigError saying what to install."""
    try:
        if importlib.util.find_spec("onnx") is None:          # the exporter writes with it
            raise ImportError("onnx")
        import onnxruntime
    except (ImportError, ValueError):
        raise ConfigError(INSTALL) from None
    return onnxruntime


def _inputs(run_dir: Path, input_shape: list[int], n: int) -> tuple[torch.Tensor, str]:
    """(n images, where they come from): the run's validation images when its dataset loads, else noise."""
    try:
        from ..method.config import Config
        from ..running.data import load_dataset
        from ..storage.reader import RunReader

        cfg = Config.from_json(json.dumps(RunReader(run_dir).info()["config"]))
        _, val, _ = load_dataset(cfg)
        x = torch.cat([batch[0] for batch, _ in zip(val, range(8))])[:n].float().cpu()
        if len(x) == n and list(x.shape[1:]) == list(input_shape):
            return x, "validation images"
    except Exception:
        pass
    return torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(0)), "random inputs"


def export_onnx(model_pt: str | Path, out: str | Path, opset: int = 17) -> dict:
    """Write `model_pt` (a run's model.pt) as ONNX to `out` and check it on ONNX Runtime.

    Returns {"path", "inputs", "max_abs_diff": {batch: diff}, "opset"}; ConfigError without onnx or
    onnxruntime, ValueError (and no file left at `out`) when a model's outputs differ by more than 1e-4.
    """
    ort = _runtime()
    model_pt, out = Path(model_pt), Path(out)
    model = load_pruned(model_pt)
    shape = torch.load(model_pt, map_location="cpu", weights_only=True)["arch"]["input_shape"]
    x, source = _inputs(model_pt.parent, shape, max(BATCHES))
    tmp = out.with_name(out.name + ".tmp")
    write_onnx(model, x[:1], tmp, opset)
    try:
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diffs, close = {}, True
        with torch.inference_mode():
            for b in BATCHES:
                ours = model(x[:b]).numpy()
                theirs = session.run(None, {"input": x[:b].numpy()})[0]
                diffs[b] = float(np.abs(ours - theirs).max())
                close &= bool(np.allclose(theirs, ours, rtol=RELATIVE, atol=TOLERANCE))
        if not close:
            raise ValueError(f"the ONNX model's outputs differ from PyTorch's by up to {max(diffs.values()):.2e} "
                             f"(more than {TOLERANCE:g} + {RELATIVE:g} x |output|) on {source}: not written")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "inputs": source, "max_abs_diff": diffs, "opset": opset}
