"""The run store: one folder per run with an SQLite database in WAL mode that other processes read live.

Writer: `RunStore.create(...)` then `write_*` from the run's own thread. Readers: `RunReader(run_dir)`
(reader.py) opens a fresh short-lived connection per query, so any number of threads and processes can
read while the run writes (WAL: readers never block the writer). Masks are stored as packed bits over
original channel ids, saliency as float32 bytes.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .faults import writing
from .metric import ACCURACY, Metric
from .writer_lock import WriterLock

DB_NAME = "run.db"
STALE_AFTER_S = 60.0
TERMINAL = ("finished", "failed", "cancelled")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")

EPOCH_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "reg", "reg_penalty",
                 "psi_raw", "psi_smoothed", "eb_distance", "cand_flops", "cand_params", "cand_reduction",
                 "model_flops", "model_params", "dense_flops", "dense_params", "epoch_seconds", "cand_acc",
                 "cand_seconds"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS run (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT, config TEXT,
    versions TEXT, device TEXT, status TEXT, phase TEXT, heartbeat REAL, created REAL, ended REAL,
    error TEXT, t_star INTEGER, prune_reason TEXT, t_sl_start INTEGER, threshold REAL, dataset TEXT, metric TEXT);
CREATE TABLE IF NOT EXISTS epochs ({", ".join(c + (" INTEGER PRIMARY KEY" if c == "epoch" else "")
                                              for c in EPOCH_COLUMNS)});
CREATE TABLE IF NOT EXISTS groups (gid INTEGER PRIMARY KEY, name TEXT, size INTEGER, layers TEXT);
CREATE TABLE IF NOT EXISTS masks (epoch INTEGER, gid INTEGER, bits BLOB, PRIMARY KEY (epoch, gid));
CREATE TABLE IF NOT EXISTS saliency (epoch INTEGER, gid INTEGER, vals BLOB, PRIMARY KEY (epoch, gid));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL, epoch INTEGER,
    kind TEXT, message TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS commands (id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL, name TEXT, args TEXT, taken REAL);
CREATE TABLE IF NOT EXISTS controls (id INTEGER PRIMARY KEY CHECK (id = 1), t REAL, state TEXT);
"""
STEERING = ("cancel", "pause", "resume", "prune_now", "set_threshold", "set_auto_prune")   # commands another process may send


def runs_root(explicit: str | None = None) -> Path:
    """The runs folder: explicit, else $OSP_RUNS_DIR, else ./runs."""
    return Path(explicit or os.environ.get("OSP_RUNS_DIR") or "runs")


def resolve_run_dir(root: str | Path, run_id: str) -> Path:
    """The folder of `run_id` under `root`; ValueError for an id that could escape the root."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}")
    path = (Path(root) / run_id).resolve()
    if path.parent != Path(root).resolve():
        raise ValueError(f"invalid run id {run_id!r}")
    return path


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=30.0, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


class RunStore:
    """The writer side of one run's folder. Use from one thread. It holds the run's writer lock
    (osp_engine/storage/writer_lock.py) until `close()`."""

    def __init__(self, run_dir: Path, lock: WriterLock | None = None) -> None:
        self.dir = Path(run_dir)
        self.lock = lock
        self.con = connect(self.dir / DB_NAME)
        self.last_beat = 0.0

    @classmethod
    def create(cls, run_dir: Path, run_id: str, config_json: str, versions: dict, device: str,
               threshold: float, dataset: str, what: str = "run", metric: Metric = ACCURACY) -> "RunStore":
        """Make the folder, take its writer lock (`what`: run, branch, attach) and write a complete
        database; readers never see a half-made schema. metric: the name and direction of the figure
        the run records as val_acc (storage/metric.py).

        The database is built under a temporary name with a rollback journal, so every write lands in
        the file itself or raises (a full disk cannot leave the schema in a WAL file that the rename
        leaves behind), then switched to WAL (a setting kept in the file) and renamed into place. If
        anything fails the folder is removed: nothing was recorded, and the error says why (DiskFull
        on a full disk).
        """
        run_dir.mkdir(parents=True, exist_ok=False)
        lock = WriterLock.take(run_dir, what)
        try:
            tmp = run_dir / (DB_NAME + ".init")
            with writing(run_dir / DB_NAME, 64 * 1024):
                con = connect(tmp)
                try:
                    con.executescript(_SCHEMA)
                    now = time.time()
                    con.execute("INSERT INTO run (id, run_id, config, versions, device, status, phase, heartbeat,"
                                " created, threshold, dataset, metric) VALUES (1, ?, ?, ?, ?, 'running', 'setup', ?, ?, ?, ?, ?)",
                                (run_id, config_json, json.dumps(versions), device, now, now, threshold, dataset,
                                 metric.to_json()))
                    if con.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                        raise sqlite3.OperationalError("could not switch run.db to WAL mode")
                finally:
                    con.close()
                os.replace(tmp, run_dir / DB_NAME)
            return cls(run_dir, lock)
        except BaseException:
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def close(self) -> None:
        """Close the database, then free the writer lock: another process may adopt the run from here."""
        try:
            self.con.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def update_run(self, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.con.execute(f"UPDATE run SET {cols} WHERE id = 1", tuple(fields.values()))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are committed together or not at all (a kill between them leaves neither)."""
        with self.con:
            self.con.execute("BEGIN")
            yield

    def heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_beat > 2.0:
            self.last_beat = now
            self.update_run(heartbeat=now)

    def write_groups(self, groups: list[tuple[str, int, list[str]]]) -> None:
        with self.transaction():
            self.con.executemany("INSERT INTO groups VALUES (?, ?, ?, ?)",
                                 [(i, n, s, json.dumps(l)) for i, (n, s, l) in enumerate(groups)])

    def write_epoch(self, row: dict, masks: list[np.ndarray] | None, saliency: list[np.ndarray] | None) -> None:
        """One transaction per epoch: metrics, then masks and saliency when the search ran."""
        cols = [c for c in EPOCH_COLUMNS if c in row]
        with self.transaction():
            self.con.execute(f"INSERT OR REPLACE INTO epochs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             tuple(row[c] for c in cols))
            e = row["epoch"]
            if masks is not None:
                self.con.executemany("INSERT OR REPLACE INTO masks VALUES (?, ?, ?)",
                                     [(e, g, np.packbits(m.astype(np.uint8)).tobytes()) for g, m in enumerate(masks)])
            if saliency is not None:
                self.con.executemany("INSERT OR REPLACE INTO saliency VALUES (?, ?, ?)",
                                     [(e, g, s.astype(np.float32).tobytes()) for g, s in enumerate(saliency)])
            self.con.execute("UPDATE run SET heartbeat = ? WHERE id = 1", (time.time(),))

    def event(self, kind: str, message: str, epoch: int | None = None, **data: Any) -> None:
        self.con.execute("INSERT INTO events (t, epoch, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                         (time.time(), epoch, kind, message, json.dumps(data)))

    def take_commands(self) -> list[tuple[str, list]]:
        """Commands other processes sent (RunReader.send_command), oldest first, each returned once."""
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            rows = self.con.execute("SELECT id, name, args FROM commands WHERE taken IS NULL ORDER BY id").fetchall()
            self.con.execute("UPDATE commands SET taken = ? WHERE taken IS NULL", (time.time(),))
        return [(name, json.loads(args)) for _, name, args in rows if name in STEERING]

    def copy_history(self, parent: Path, upto: int) -> None:
        """A branch's start: the parent's groups and its epochs, masks, saliency, phase and regulariser
        events up to epoch `upto`, in one transaction."""
        self.con.execute("ATTACH DATABASE ? AS parent", (str(parent / DB_NAME),))
        try:
            with self.transaction():
                self.con.execute("INSERT INTO groups SELECT * FROM parent.groups")
                present = {r[1] for r in self.con.execute("PRAGMA parent.table_info(epochs)")}
                cols = ", ".join(c for c in EPOCH_COLUMNS if c in present)
                self.con.execute(f"INSERT INTO epochs ({cols}) SELECT {cols} FROM parent.epochs WHERE epoch <= ?", (upto,))
                for table in ("masks", "saliency"):
                    self.con.execute(f"INSERT INTO {table} SELECT * FROM parent.{table} WHERE epoch <= ?", (upto,))
                self.con.execute("INSERT INTO events (t, epoch, kind, message, data) SELECT t, epoch, kind, message, data"
                                 " FROM parent.events WHERE epoch <= ? AND kind IN ('phase', 'sl_start') ORDER BY id",
                                 (upto,))
        finally:
            self.con.execute("DETACH DATABASE parent")

    def write_controls(self, state: dict) -> None:
        """The live controls (paused, threshold, auto_prune, prune_requested) for other processes to show."""
        self.con.execute("INSERT OR REPLACE INTO controls VALUES (1, ?, ?)", (time.time(), json.dumps(state)))
