"""Where a run lives and what it starts from: its id, its runs folder, its device, optional weights.

Checked before a run folder exists, so a bad choice is a ConfigError and nothing is written.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path

import torch

from ..method.config import Config, ConfigError
from ..storage.store import runs_root


def new_run_id(cfg: Config) -> str:
    """<start time>-<preset, or the model when none>-<4 hex>; only characters a run id allows."""
    label = "".join(c if c.isalnum() or c in "._-" else "-" for c in (cfg.preset or cfg.model))[:60]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(2)}"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The run's device; under torchrun a GPU run takes GPU `local_rank`."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible: use --set device=cpu or device=auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def load_weights(model: torch.nn.Module, path: str) -> list[str]:
    """Load a local state_dict (weights_only) into `model`; entries whose shape differs (a classifier
    trained for another class count) are left at their initial values and returned by name."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"weights file {path!r} could not be read ({type(e).__name__}): give a state_dict "
                          f"saved with torch.save(model.state_dict(), ...)") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    fitting = {k: v for k, v in state.items() if k in own and k not in skipped}
    missing = [k for k in own if k not in state]
    if not fitting or missing:
        raise ConfigError(f"weights file {path!r} does not fit the model ({len(missing)} of its tensors missing, "
                          f"e.g. {missing[:1]}): give weights of the same architecture")
    model.load_state_dict(fitting, strict=False)
    return skipped


def prepare_root(root: str | Path | None) -> Path:
    """The runs folder, created if needed; ConfigError if it cannot be used."""
    path = runs_root(None if root is None else str(root))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{secrets.token_hex(4)}"
        probe.write_text("")
        probe.unlink()
        list(path.iterdir())
    except OSError as e:
        raise ConfigError(f"runs folder {str(path)!r} is not usable ({e.strerror or e}): "
                          f"pass --runs-dir DIR or set OSP_RUNS_DIR to a writable folder") from None
    return path


def package_version(module: str) -> str:
    """The installed version of a package ('unknown' if it cannot be read), recorded with each run."""
    try:
        from importlib.metadata import version
        return version(module.replace("_", "-"))
    except Exception:
        return "unknown"
