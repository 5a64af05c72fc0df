"""A run's record, from its start to its terminal status: one `RunRecord` per run, whichever way it runs
(the Run, so `prune` and the command line; `attach`, so the Lightning callback).

It owns the run folder's store, which holds the writer lock (closing the store frees it), and the
run's trackers. It begins one way per origin (running/origin.py): a new store, a branch's with its
parent's history, a resumed one's (rewound first when a kept checkpoint replaces checkpoint.pt), or
`attached` for your own loop. Beginning never leaves anything half-held: a new folder that cannot
begin is removed, a resumed run that cannot is recorded as failed with the reason. It ends once,
`end(status, ...)`: the terminal event and status, retried while the disk is full, then the trackers'
rest, then the store closed, whatever happened before."""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..method.config import Config, ConfigError
from ..method.network import Prunable, kept_whole_note
from ..storage.faults import DiskFull, is_disk_full
from ..storage.metric import ACCURACY, Metric
from ..storage.reader import RunReader
from ..storage.store import RunStore
from ..storage.writer_lock import WriterLock
from .branch import INIT
from .distributed import NullStore
from .origin import Branch, New, Rewind, new_folder
from .resume import rewind

if TYPE_CHECKING:
    from .run import Run


class RunRecord:
    """The store (and writer lock) and the trackers of one run, from `begin` or `attached` to `end`."""

    def __init__(self, store: RunStore, tracking=None) -> None:
        self.store, self.tracking = store, tracking

    @classmethod
    def begin(cls, run: "Run", versions: dict) -> "RunRecord":
        """The record of a Run, by its origin; the trackers are rank 0's."""
        store = _open_store(run, versions)
        tracking = start_tracking(run.cfg, store, run.root, new_folder(run.origin)) if run.world.leader else None
        return cls(store, tracking)

    @classmethod
    def attached(cls, cfg: Config, net: Prunable, shape: list[int], device, root: Path, run_id: str,
                 versions: dict, metric: Metric = ACCURACY) -> "RunRecord":
        """A new record for `attach` (your training loop): the store with its groups, dataset and 'started'
        event, and the trackers. On any failure (a full disk, a tracker that cannot start) the folder is
        removed and the lock freed: a run that never began is no run."""
        store = RunStore.create(root / run_id, run_id, cfg.to_json(), versions, str(device), cfg.threshold,
                                "custom", what="attach", metric=metric)
        record = cls(store)
        try:
            record._first(net, f"custom ({'x'.join(map(str, shape))})",
                          f"{cfg.model} (your training loop), {len(net.groups)} groups{kept_whole_note(net)}, "
                          f"{net.cost.dense_flops / 1e6:.2f} M FLOPs dense, variant {cfg.variant}")
            record.tracking = start_tracking(cfg, store, root, new=True)
        except BaseException:
            record.abandon()
            raise
        return record

    @classmethod
    def reattached(cls, run_dir: Path, cfg: Config, state: dict, epoch: int) -> "RunRecord":
        """An attached run continued after epoch `epoch` by another process (Lightning's fit(ckpt_path=...)):
        its writer lock taken (RunHeld while another process writes it), the epochs recorded after `epoch`
        rewound (state: Pruner.state() at that epoch), marked running with a 'resume' event, its trackers
        at their last step. Nothing is changed when it cannot be taken."""
        lock = WriterLock.take(run_dir, "attach")
        try:
            info = RunReader(run_dir).info()
            if info["status"] == "finished":
                raise ConfigError(f"{run_dir.name} finished (its model is exported): start a new fit instead")
            store = RunStore(run_dir, lock)
        except BaseException:
            lock.release()
            raise
        if RunReader(run_dir).last_epoch() > epoch:
            rewind(store, {"epoch": epoch, "pruner": state}, "the checkpoint resumed is of an earlier epoch")
        store.update_run(status="running", ended=None, error=None, heartbeat=time.time())
        store.event("resume", f"resumed after epoch {epoch}", epoch=epoch, pid=os.getpid(), host=socket.gethostname())
        record = cls(store)
        record.tracking = start_tracking(cfg, store, run_dir.parent, new=False)
        return record

    def started(self, run: "Run", info, amp: bool, cl: bool) -> None:
        """A new Run's first record: its groups, dataset and 'started' event."""
        cfg, net, world = run.cfg, run.net, run.world
        self._first(net, info.label, f"{cfg.model} on {info.label}, {len(net.groups)} groups{kept_whole_note(net)}, "
                                     f"{net.cost.dense_flops / 1e6:.2f} M FLOPs dense, device {run.device}, variant "
                                     f"{cfg.variant}" + (f", {world.size} processes" if world.size > 1 else ""),
                    variant=cfg.variant, amp=amp, channels_last=cl, world_size=world.size)

    def _first(self, net: Prunable, dataset: str, message: str, **data) -> None:
        """A new record's groups, dataset and 'started' event (with this process, to tell a stale run)."""
        self.store.write_groups([(g.name, g.size, g.layers) for g in net.groups])
        self.store.update_run(dataset=dataset, phase="dense")
        self.store.event("started", message, epoch=0, pid=os.getpid(), host=socket.gethostname(),
                         kept_whole=[dataclasses.asdict(k) for k in net.whole], **data)

    def abandon(self) -> None:
        """A new record that will never run: close it (the lock with it) and remove its folder."""
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.store.dir, ignore_errors=True)

    def end(self, status: str, error: str | None, message: str | None, trace: str | None = None,
            attempts: int = 30) -> None:
        """Write the terminal status, its event and reason, retrying while the disk is full (the reason is
        kept in memory meanwhile); then the trackers' rest, then close the store, which frees the writer
        lock: never leave the run 'running' while any write can still succeed."""
        store = self.store
        recorded = False
        for attempt in range(attempts):
            try:
                if not recorded:
                    store.event(status, message, trace=trace)
                    recorded = True
                store.update_run(status=status, error=error, ended=time.time(), heartbeat=time.time())
                break
            except Exception:                 # e.g. sqlite3.OperationalError: database or disk is full
                time.sleep(min(0.1 * 2 ** attempt, 2.0))
        else:
            print(f"osp: could not record the end of run {store.dir.name} ({status}: {error})", file=sys.stderr)
        if self.tracking is not None:         # the rest, the summary and the artifacts; never raises
            self.tracking.finish(status)
        try:
            store.close()
        except Exception:
            pass


def _open_store(run: "Run", versions: dict) -> RunStore:
    """A new store (a branch's begins with its parent's history), or for a resumed run its own,
    marked running again with a 'resume' event."""
    cfg = run.cfg
    if not run.world.leader:
        return NullStore(run.dir)                    # rank 0 writes the run folder
    origin = run.origin
    if isinstance(origin, Branch):
        store = RunStore.create(run.dir, run.run_id, cfg.to_json(), versions, str(run.device), cfg.threshold,
                                cfg.dataset, what="branch")
        try:
            what = "the untrained network's sub-network (at initialization), then trains it" \
                if cfg.branch_epoch == INIT else f"the sub-network of epoch {cfg.branch_epoch}, then fine-tunes"
            store.event("started", f"branch of {cfg.parent}: prunes {what} to epoch {cfg.epochs - 1}",
                        epoch=max(cfg.branch_epoch, 0),
                        variant=cfg.variant, parent=cfg.parent, pid=os.getpid(), host=socket.gethostname())
            store.copy_history(origin.parent, origin.epoch)
        except BaseException as e:                    # a branch without its history is no run: remove it
            full = is_disk_full(e, run.dir, 1 << 20)
            store.close()
            shutil.rmtree(run.dir, ignore_errors=True)
            raise DiskFull(run.dir / "run.db", 1 << 20) if full else e
        return store
    if isinstance(origin, New):
        return RunStore.create(run.dir, run.run_id, cfg.to_json(), versions, str(run.device), cfg.threshold,
                               cfg.dataset)
    for leftover in run.dir.glob("*.tmp"):          # a save that was cut short
        leftover.unlink()
    store = RunStore(run.dir, run.lock)
    if isinstance(origin, Rewind):
        rewind(store, origin.checkpoint, origin.reason)
    store.update_run(status="running", ended=None, error=None, heartbeat=time.time())
    store.event("resume", f"resumed after epoch {origin.checkpoint['epoch']}", epoch=origin.checkpoint["epoch"],
                pid=os.getpid(), host=socket.gethostname(), world_size=run.world.size)
    return store


def start_tracking(cfg, store: RunStore, root, new: bool):
    """The trackers of cfg.log_to on the run `store` writes (None without any), at their last step. A
    tracker that cannot start is a ConfigError, and then a new run (or branch, or attached run) is removed,
    a resumed one recorded as failed with the reason (it can resume once the tracker can start)."""
    if not cfg.trackers:
        return None
    from ..tracking.follow import Tracking

    try:
        return Tracking.open(cfg, store.dir, root, record=lambda kind, message, **data:
                             store.event(kind, message, epoch=None, **data))
    except ConfigError as e:
        if not new:
            store.event("failed", str(e))
            store.update_run(status="failed", error=str(e), ended=time.time())
        store.close()
        if new:
            shutil.rmtree(store.dir, ignore_errors=True)
        raise
