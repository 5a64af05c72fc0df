"""osp engine: one-cycle structured pruning via stability-driven sub-network search (OCSPruner).

Public API (docs in README, 'Your own model'):
    prune(model, train, val, num_classes=...)          the whole cycle on your nn.Module and batches
    attach(model, example, num_classes=..., epochs=...) a Pruner for your own training loop
    load_pruned(path, model=None)                       the exported pruned network
    export_onnx(model_pt, out)                          that network as ONNX, checked on ONNX Runtime
    Metric(name, higher=True, unit="%")                 what a run's val_acc is, when it is not accuracy
"""
from .method.config import Config, ConfigError
from .interfaces.presets import PRESETS, get_preset
from .storage.metric import Metric


def __getattr__(name: str):
    """prune, attach, Pruner, load_pruned and export_onnx import torch: only when used (the CLI stays quick)."""
    if name in ("prune", "attach"):
        from .interfaces import api
        return getattr(api, name)
    if name == "Pruner":
        from .running.pruner import Pruner
        return Pruner
    if name == "export_onnx":
        from .interfaces.onnx_export import export_onnx
        return export_onnx
    if name == "load_pruned":
        from .storage.export import load_pruned
        return load_pruned
    raise AttributeError(f"module 'osp_engine' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "Metric", "PRESETS", "get_preset", "prune", "attach", "Pruner", "load_pruned", "export_onnx"]
