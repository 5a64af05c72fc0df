"""Torch-Pruning, imported without timm: `from .tp import tp` everywhere in the engine.

Torch-Pruning's FLOPs counter imports timm when it is installed (2-5 s on 2 cores) only to register
two timm attention layers, which osp refuses anyway. Hiding timm while Torch-Pruning loads keeps the
demo's start-up the same with or without timm; a timm model imports timm itself when it is built.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType


def load() -> ModuleType:
    """torch_pruning, imported with `import timm` failing inside it unless timm is already loaded."""
    if "torch_pruning" in sys.modules:
        return sys.modules["torch_pruning"]
    hide = "timm" not in sys.modules
    if hide:
        sys.modules["timm"] = None              # `import timm` raises ImportError while this is set
    try:
        return importlib.import_module("torch_pruning")
    finally:
        if hide and sys.modules.get("timm", 0) is None:
            del sys.modules["timm"]


tp = load()
