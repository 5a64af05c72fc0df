"""Faults that explain themselves: a full disk, named with the file, the folder and the space it needs.

A full disk reaches the engine in several disguises: OSError ENOSPC/EDQUOT from a plain write,
`sqlite3.OperationalError: database or disk is full` (or "disk I/O error", when SQLite cannot grow
its WAL index; counted as a full disk only with under 1 MB free) from the store, and from torch.save PyTorch's
zip writer's own RuntimeError ("unexpected pos 177280 vs 177176", "file write failed"), which carries
no errno. The last is recognised by the free space left on the folder's file system: less than the
file needed. Every one becomes "disk full: writing <file> in <folder> needs about <MB> MB".
"""
from __future__ import annotations

import contextlib
import errno
import shutil
import sqlite3
from pathlib import Path
from typing import Iterator

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write that failed because the disk is full; str() is the one-line explanation."""

    def __init__(self, path: Path, needed_bytes: int) -> None:
        super().__init__(errno.ENOSPC, f"disk full: writing {path.name} in {path.parent} needs about "
                                       f"{max(needed_bytes, 1) / 1e6:.1f} MB")

    def __str__(self) -> str:
        return self.strerror


def payload_bytes(obj) -> int:
    """About how many bytes torch.save writes for `obj`: its tensors' storage, plus 64 bytes per other leaf."""
    import torch                          # here: the command line imports this module before torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 64 if obj is not None else 0


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(e: BaseException, folder: Path, needed_bytes: int) -> bool:
    """Whether `e`, raised while writing `needed_bytes` into `folder`, means the disk is full."""
    for cause in (e, e.__cause__, e.__context__):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            return True
        if isinstance(cause, sqlite3.OperationalError) and "full" in str(cause):
            return True
    free = _free_bytes(folder)
    if isinstance(e, sqlite3.OperationalError) and "I/O error" in str(e):     # SQLite's WAL index on a full disk
        return free is not None and free < max(needed_bytes, 1 << 20)
    return isinstance(e, RuntimeError) and free is not None and free < needed_bytes


@contextlib.contextmanager
def writing(path: Path, needed_bytes: int) -> Iterator[None]:
    """Raise DiskFull(path, needed_bytes) instead of whatever a full disk makes the write inside raise."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if is_disk_full(e, path.parent, needed_bytes):
            raise DiskFull(path, needed_bytes) from e
        raise


def explain(e: BaseException, run_dir: Path) -> str | None:
    """The one-line disk-full explanation of a run's failure `e`, or None when the disk is not full.
    A failed database write needs about one epoch's share of run.db (its size over its epochs)."""
    if isinstance(e, DiskFull):
        return str(e)
    db = run_dir / "run.db"
    if is_disk_full(e, run_dir, 0):
        if isinstance(e, OSError) and e.filename:
            return str(DiskFull(Path(e.filename), 0))
        return str(DiskFull(db, _epoch_share(run_dir)))
    return None


def _epoch_share(run_dir: Path) -> int:
    """run.db's bytes (with its write-ahead log) per stored epoch, at least one 4 kB page."""
    size = sum(p.stat().st_size for p in run_dir.glob("run.db*") if p.is_file())
    try:
        con = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
        epochs = con.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
        con.close()
    except sqlite3.Error:
        epochs = 0
    return max(4096, size // max(epochs, 1))
