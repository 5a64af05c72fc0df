"""Finding a run from the command line: a run folder or a run id under the runs folder."""
from __future__ import annotations

from pathlib import Path

from ..method.config import ConfigError
from ..storage.reader import RunReader
from ..storage.store import runs_root


def find_run(path: str, runs_dir: str | None = None, check: bool = True) -> RunReader:
    """A run from a folder path or a run id under the runs folder (readable, unless check=False);
    ConfigError otherwise."""
    candidates = [Path(path)]
    if "/" not in path and not path.startswith("."):
        candidates.append(runs_root(runs_dir) / path)
    for candidate in candidates:
        try:
            reader = RunReader(candidate)
        except FileNotFoundError:
            continue
        problem = reader.problem() if check else None
        if problem:
            raise ConfigError(f"{reader.dir} is unreadable: {problem}")
        return reader
    raise ConfigError(f"{path!r} is not a run folder or run id: pass one listed by `python -m osp_engine list`")


def runs_folder(runs_dir: str | None) -> Path:
    root = runs_root(runs_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"runs folder {str(root)!r} is a file: pass --runs-dir DIR or set OSP_RUNS_DIR to a folder")
    return root
