"""The contract every tracker implements. Steps are epochs; every call may raise (the Tracking decides)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class History:
    """The run's whole history as its store holds it at the end, whichever processes wrote it (a resume,
    a rewind): events [{epoch, kind, message}] in order (tracker notes left out), and every searched
    epoch's per-group keep fractions {epoch: [fraction of group g kept, ...]}."""
    events: list[dict]
    keep: dict[int, list[float]]


@dataclass(frozen=True)
class Target:
    """Where a run's tracker run lives. folder: TensorBoard's and W&B's files (log_dir/<run id>, or inside
    the run folder); runs_root: the runs folder (MLflow's local SQLite store when no tracking URI is set);
    marker: the metric a sink writes last in every epoch and reads its last step from (the run's own:
    osp/accuracy, osp/mAP50-95_box, ...): an epoch whose marker is logged is logged whole."""
    run_dir: Path
    run_id: str
    folder: Path
    runs_root: Path
    marker: str = "osp/accuracy"


class Sink:
    """One tracker run mirroring one osp run. A sink is opened on a new or an existing tracker run (the
    same osp run always maps to the same tracker run), and says how far that tracker run already goes."""

    name = "sink"

    def where(self) -> str:
        """A few words saying where the run is logged (for the run's event and the CLI)."""
        raise NotImplementedError

    def last_step(self) -> int:
        """The last epoch the tracker run already holds, read from the tracker itself (-1: none)."""
        raise NotImplementedError

    def params(self, params: dict[str, str]) -> None:
        """The run's configuration (called once, for a tracker run that holds no epoch yet)."""
        raise NotImplementedError

    def epoch(self, step: int, metrics: dict[str, float], keep: np.ndarray | None) -> None:
        """One epoch's metrics (osp/...), and the candidate's per-group keep fractions, (G,), when searched."""
        raise NotImplementedError

    def event(self, step: int, kind: str, message: str, data: dict) -> None:
        """One event of the run (the prune, a phase, a resume, ...), at the epoch it belongs to."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything logged so far durable (a killed run loses nothing logged before it)."""

    def finish(self, status: str, summary: dict[str, float | str], run_dir: Path, history: History) -> None:
        """The run ended (finished, failed or cancelled): its summary, its history from the store, its
        artifacts, then close."""
        raise NotImplementedError
