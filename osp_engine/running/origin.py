"""How a run began, one of four ways, each its own type (no nullable fields to branch on):

- New: a fresh run folder, trained from the untrained network;
- Branch: a fresh folder that continues `parent`'s kept checkpoint of `epoch` (the parent's history copied);
- Resume: the run's own folder, continued after its last checkpointed epoch;
- Rewind: a resume from a kept checkpoint, because checkpoint.pt could not be read (`reason`).

`checkpoint` is the state a run continues from (None for a new run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Union


@dataclass(frozen=True)
class New:
    what: ClassVar[str] = "start"
    checkpoint: ClassVar[None] = None


@dataclass(frozen=True)
class Branch:
    parent: Path
    epoch: int
    checkpoint: dict = field(repr=False)
    what: ClassVar[str] = "branch"


@dataclass(frozen=True)
class Resume:
    checkpoint: dict = field(repr=False)
    what: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Rewind:
    checkpoint: dict = field(repr=False)
    reason: str
    what: ClassVar[str] = "resume"


Origin = Union[New, Branch, Resume, Rewind]


def new_folder(origin: Origin) -> bool:
    """Whether the run writes a folder of its own from nothing (a new run or a branch), not one it continues."""
    return isinstance(origin, (New, Branch))
