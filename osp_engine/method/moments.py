"""The moments of one cycle worth stopping at to explain, read from the epoch rows a run stores.

A lesson pauses the run at each moment it names (`Config.pause_at`), right after the epoch that
reached it is committed, and the studio's guided lesson walks the same moments for a run that ended.
Pure functions of plain rows (dicts as `RunReader.epochs()` gives them): no torch.
"""
from __future__ import annotations

MOMENTS: dict[str, str] = {           # name -> the first epoch at which ...
    "searched": "a candidate sub-network was searched",
    "regularizer": "the regulariser started shrinking the unselected channels",
    "stability": "the smoothed PSI came within 0.1 of the threshold",
    "pruned": "the network was pruned",
}
NEAR = 0.1                            # "approaching the threshold": smoothed PSI >= threshold - NEAR


def reached(previous: dict | None, row: dict, pruned: bool, threshold: float) -> list[str]:
    """The moments epoch `row` reaches for the first time, in MOMENTS order. previous: the epoch
    before's row (None at the first epoch); pruned: whether the network was pruned at this epoch."""
    before = previous or {}
    found = []
    if row.get("cand_flops") is not None and before.get("cand_flops") is None:
        found.append("searched")
    if (row.get("reg") or 0) > 0 and not (before.get("reg") or 0) > 0:
        found.append("regularizer")
    if _near(row, threshold) and not _near(before, threshold):
        found.append("stability")
    if pruned:
        found.append("pruned")
    return found


def moment_epochs(rows: list[dict], t_star: int | None, threshold: float) -> dict[str, int]:
    """name -> the first epoch each moment was reached at in a stored run (absent: not reached)."""
    found: dict[str, int] = {}
    previous = None
    for row in rows:
        for name in reached(previous, row, row["epoch"] == t_star, threshold):
            found.setdefault(name, row["epoch"])
        previous = row
    return found


def _near(row: dict, threshold: float) -> bool:
    psi = row.get("psi_smoothed")
    return psi is not None and psi >= threshold - NEAR
