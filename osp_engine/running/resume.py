"""Adopting a run to resume it: its writer lock, the checks, and the checkpoint to continue from.

checkpoint.pt is written atomically after every epoch, so it is normally intact. When it cannot be
read (a damaged disk, a file truncated by hand or by a full disk outside osp), the newest intact kept
checkpoint (`checkpoints/epoch-NNNN.pt`, the branch points) takes its place: the store is rewound to
that epoch (its later epochs, masks, saliency and method events removed, the run row set back) and a
'rewind' event says so. The resumed run then retrains the lost epochs exactly as the first time.
Only when no checkpoint is intact is the run refused.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .branch import branch_epochs, checkpoint_path
from .origin import Resume, Rewind
from ..method.config import Config, ConfigError
from ..storage.store import STALE_AFTER_S, RunStore
from ..storage.reader import RunReader
from ..storage.writer_lock import WriterLock

METHOD_EVENTS = ("phase", "sl_start", "prune", "target", "ranks", "exported", "speed", "speed_failed")   # redone after a rewind


@dataclass
class Adopted:
    """A run taken over for resuming: its config, how it continues (a Resume from checkpoint.pt, or a
    Rewind to a kept checkpoint when checkpoint.pt could not be read) and the held lock."""
    cfg: Config
    origin: Resume | Rewind
    lock: WriterLock | None


def adopt(path: Path, leader: bool = True) -> Adopted:
    """Take `path`'s writer lock (rank 0 only), check it can be resumed, load its checkpoint.
    ConfigError (RunHeld for a run another process writes) when it cannot; the lock is then freed."""
    reader = _reader(path)
    lock = WriterLock.take(path, "resume") if leader else None        # of N resumes at once, one passes
    try:
        info = reader.info()
        _check(path, reader, info)
        checkpoint, rewind = _load_checkpoint(path)
        origin = Resume(checkpoint) if rewind is None else Rewind(checkpoint, rewind["reason"])
        return Adopted(Config.from_json(json.dumps(info["config"])), origin, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _reader(path: Path) -> RunReader:
    try:
        reader = RunReader(path)
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} is not a run folder: pass one listed by `python -m osp_engine list`") from None
    problem = reader.problem()
    if problem:
        raise ConfigError(f"{path} is unreadable: {problem}")
    return reader


def _check(path: Path, reader: RunReader, info: dict) -> None:
    if info["status"] == "running" and reader.writer_alive() is not False and \
            time.time() - (info["heartbeat"] or 0) <= STALE_AFTER_S:       # a writer from before runs had locks
        raise ConfigError(f"{path.name} is still running (its process sends heartbeats): cancel it first")
    if info["status"] == "finished" and (path / "model.pt").is_file():
        raise ConfigError(f"{path.name} finished and exported its model: nothing to resume")
    if info["config"].get("dataset") == "custom":
        raise ConfigError(f"{path.name} trained your own model from Python: it cannot be resumed from here")


def _load_checkpoint(path: Path) -> tuple[dict, dict | None]:
    """checkpoint.pt, else the newest intact kept checkpoint with the reason; ConfigError when none reads."""
    main = path / "checkpoint.pt"
    if not main.exists():
        raise ConfigError(f"{path.name} has no checkpoint (it ended before its first epoch): start it again")
    try:
        return torch.load(main, map_location="cpu", weights_only=True), None
    except Exception as e:
        damage = f"checkpoint.pt cannot be read ({type(e).__name__})"
    kept = [e for e in branch_epochs(path) if e >= 0]      # the untrained network is a branch point only
    for epoch in reversed(kept):
        try:
            checkpoint = torch.load(checkpoint_path(path, epoch), map_location="cpu", weights_only=True)
        except Exception:
            continue
        return checkpoint, {"epoch": epoch, "reason": damage}
    none = " and no kept checkpoint is intact" if kept else " and the run kept no other checkpoint"
    raise ConfigError(f"{path.name}'s {damage}{none}: start it again")


def rewind(store: RunStore, checkpoint: dict, reason: str) -> None:
    """Set `store` back to the end of the checkpoint's epoch t, in one transaction: later epochs, masks,
    saliency and method events go, the run row takes the checkpoint's phase and regulariser start,
    and a 'rewind' event records why."""
    t, state = checkpoint["epoch"], checkpoint["pruner"]
    last = RunReader(store.dir).last_epoch()
    con = store.con
    with store.transaction():
        for table in ("epochs", "masks", "saliency"):
            con.execute(f"DELETE FROM {table} WHERE epoch > ?", (t,))
        con.execute(f"DELETE FROM events WHERE epoch > ? AND kind IN ({', '.join('?' * len(METHOD_EVENTS))})",
                    (t, *METHOD_EVENTS))
        con.execute("UPDATE run SET phase = ?, t_sl_start = ?, t_star = NULL, prune_reason = NULL WHERE id = 1",
                    (state["phase"], state["t_sl_start"]))
    lost = f"; epochs {t + 1}-{last} are trained again" if last > t else ""
    store.event("rewind", f"{reason}: resumed from the kept checkpoint of epoch {t}{lost}", epoch=t,
                reason=reason, lost_epochs=max(0, last - t))
