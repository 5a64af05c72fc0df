"""Export of the pruned model and its loader.

The file holds the state dict, Torch-Pruning's pruning history (which channels of which layer went)
and what is needed to rebuild the dense architecture; `structure.json` beside it lists every layer's
weight shape for people and other tools. `load_pruned` rebuilds the dense model, replays the history
on it, then loads the weights.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import torch

from .faults import payload_bytes, writing
from ..method.groups import remove_together
from ..method.graph import build_graph
from ..models import build_model

MODEL_FILE = "model.pt"
STRUCTURE_FILE = "structure.json"


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a reader never sees half a file. On a full disk,
    DiskFull names the file and the space it needs, and the partial file is removed (freeing its space
    for the record of the failure)."""
    tmp = Path(str(path) + ".tmp")
    try:
        with writing(path, payload_bytes(obj)):
            torch.save(obj, tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17) -> None:
    """`model` as ONNX at `path`: input "input", output "logits", the batch dimension dynamic, traced
    on `example` in eval mode (the TorchScript exporter folds BatchNorm into the convolutions); the
    exporter's warnings and progress lines are kept off the console."""
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)


def structure(model: torch.nn.Module) -> dict:
    return {name: list(p.shape) for name, p in model.state_dict().items() if p.dim() > 0}


def export_model(model: torch.nn.Module, history: list, arch: dict, run_dir: Path) -> Path:
    """Write model.pt and structure.json into run_dir; arch: model, num_classes, image_size, in_channels."""
    path = run_dir / MODEL_FILE
    state = model.state_dict()
    atomic_save({"state_dict": {k: v.detach().cpu() for k, v in state.items()},
                 "metadata": {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()},
                 "pruning_history": history, "arch": arch}, path)
    tmp = run_dir / (STRUCTURE_FILE + ".tmp")
    text = json.dumps({"arch": arch, "layers": structure(model)}, indent=1)
    try:
        with writing(run_dir / STRUCTURE_FILE, len(text)):
            tmp.write_text(text)
            os.replace(tmp, run_dir / STRUCTURE_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replay_history(model: torch.nn.Module, history: list, example: torch.Tensor) -> None:
    """Remove from `model` (dense, of the pruned one's architecture) the channels Torch-Pruning's `history`
    records, as the prune removed them: every group at once, numbered as before anything went.
    example: (1, C, H, W) on the model's device. osp prunes output channels only, each group once."""
    graph = build_graph(model, example)
    remove_together(graph, [(model.get_submodule(name), list(idxs)) for name, _, idxs in history])


def load_pruned(path: str | Path, map_location: str = "cpu", model: torch.nn.Module | None = None) -> torch.nn.Module:
    """The exported network, ready for inference (eval mode).

    A registry model is rebuilt by name; a model of your own (osp_engine.interfaces.api) needs `model`, a fresh
    dense instance of its class, on which the pruning is replayed.
    """
    try:                                      # tensors and plain data only: a crafted file cannot run code
        blob = torch.load(path, map_location=map_location, weights_only=True)
        arch = blob["arch"]
    except Exception as e:
        raise ValueError(f"{path} is not a model exported by osp ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if model is None and arch.get("custom"):
        raise ValueError(f"{path} holds your own model {arch['model']!r}: pass a fresh dense instance, "
                         f"load_pruned(path, model=YourNet())")
    if model is None:
        model = build_model(arch["model"], arch["num_classes"], arch["image_size"], arch["in_channels"])
    shape = arch.get("input_shape") or [arch["in_channels"], arch["image_size"], arch["image_size"]]
    replay_history(model, blob["pruning_history"], torch.zeros(1, *shape))
    state = OrderedDict(blob["state_dict"])
    state._metadata = OrderedDict(blob.get("metadata", {}))       # per-module versions (MNASNet reads its own)
    model.load_state_dict(state)
    return model.eval()
