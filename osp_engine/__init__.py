"""osp engine: one-cycle structured pruning via stability-driven sub-network search (OCSPruner)."""
from .config import Config, ConfigError
from .presets import PRESETS, get_preset

__all__ = ["Config", "ConfigError", "PRESETS", "get_preset"]
