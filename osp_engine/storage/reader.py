"""The read side of a run folder: `RunReader` (safe from any thread or process while the run writes)
and the listing of a runs folder, newest first, readable runs apart from damaged ones.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from .store import DB_NAME, STALE_AFTER_S, RUN_ID, EPOCH_COLUMNS, STEERING, connect
from .metric import Metric
from .writer_lock import holder


class RunReader:
    """Read-only view of one run folder; safe from any thread or process while the run writes."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.db = self.dir / DB_NAME
        self._epoch_select: str | None = None
        self._run_select: str | None = None
        if not self.db.is_file():
            raise FileNotFoundError(f"{self.dir} is not a run folder (no {DB_NAME})")

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        con = connect(self.db)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    @property
    def run_id(self) -> str:
        return self.dir.name

    def info(self) -> dict:
        """The run's row: config, status, t*, ... and `metric`, a Metric (accuracy for a run made before
        metrics had names)."""
        cols = ["run_id", "config", "versions", "device", "status", "phase", "heartbeat", "created", "ended",
                "error", "t_star", "prune_reason", "t_sl_start", "threshold", "dataset", "metric"]
        if self._run_select is None:                  # a run.db's columns never change: asked once per reader
            present = {r[1] for r in self._query("PRAGMA table_info(run)")}
            self._run_select = ", ".join(c if c in present else f"NULL AS {c}" for c in cols)
        row = self._query(f"SELECT {self._run_select} FROM run WHERE id = 1")[0]
        out = dict(zip(cols, row))
        out["config"] = json.loads(out["config"])
        out["metric"] = Metric.from_json(out["metric"])
        out["versions"] = json.loads(out["versions"] or "{}")
        out["holder"] = holder(self.dir)                  # who holds the writer lock now, if anyone
        out["stale"] = out["status"] == "running" and out["holder"] is None and (
            time.time() - (out["heartbeat"] or 0) > STALE_AFTER_S or self.writer_alive() is False)  # writer gone
        out["display_status"] = "stale" if out["stale"] else out["status"]
        return out

    def writer_alive(self) -> bool | None:
        """Whether the process that last started or resumed this run still exists (None: another
        machine, or a run made before writers were recorded)."""
        rows = self._query("SELECT data FROM events WHERE kind IN ('started', 'resume') ORDER BY id DESC LIMIT 1")
        data = json.loads(rows[0][0] or "{}") if rows else {}
        if "pid" not in data or data.get("host") != socket.gethostname():
            return None
        try:
            os.kill(int(data["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def problem(self) -> str | None:
        """Why this run cannot be read (a damaged, empty or row-less run.db, a folder name no run id
        can have), or None when it reads."""
        if not RUN_ID.match(self.run_id) or ".." in self.run_id:
            return "its folder name is not a run id"
        try:
            self.info()
            self.last_epoch()
        except (sqlite3.DatabaseError, IndexError, ValueError, TypeError) as e:
            return f"run.db is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
        return None

    def controls(self) -> dict | None:
        """The live controls the writing process published, or None when it is not live (ended, stale,
        or a run made before runs could be steered from another process)."""
        try:
            info = self.info()
            rows = self._query("SELECT state FROM controls WHERE id = 1")
        except sqlite3.OperationalError:
            return None
        if info["display_status"] != "running" or not rows:
            return None
        return json.loads(rows[0][0])

    def send_command(self, name: str, *args: Any) -> None:
        """Queue a command for the process writing this run (it applies it within about a second)."""
        if name not in STEERING:
            raise ValueError(f"unknown command {name!r}")
        con = connect(self.db)
        try:
            con.execute("INSERT INTO commands (t, name, args) VALUES (?, ?, ?)", (time.time(), name, json.dumps(args)))
        finally:
            con.close()

    def last_epoch(self) -> int:
        row = self._query("SELECT MAX(epoch) FROM epochs")[0][0]
        return -1 if row is None else int(row)

    def epochs(self, since: int = -1) -> list[dict]:
        """Every epoch after `since`, each with every column of EPOCH_COLUMNS (None where a run made by
        an older osp has no such column)."""
        if self._epoch_select is None:                # a run.db's columns never change: asked once per reader
            present = {r[1] for r in self._query("PRAGMA table_info(epochs)")}
            self._epoch_select = ", ".join(c if c in present else f"NULL AS {c}" for c in EPOCH_COLUMNS)
        rows = self._query(f"SELECT {self._epoch_select} FROM epochs WHERE epoch > ? ORDER BY epoch", (since,))
        return [dict(zip(EPOCH_COLUMNS, r)) for r in rows]

    def groups(self) -> list[dict]:
        rows = self._query("SELECT gid, name, size, layers FROM groups ORDER BY gid")
        return [dict(gid=g, name=n, size=s, layers=json.loads(l)) for g, n, s, l in rows]

    def mask_epochs(self) -> list[int]:
        return [r[0] for r in self._query("SELECT DISTINCT epoch FROM masks ORDER BY epoch")]

    def masks(self, epoch: int) -> list[np.ndarray]:
        sizes = {g["gid"]: g["size"] for g in self.groups()}
        rows = self._query("SELECT gid, bits FROM masks WHERE epoch = ? ORDER BY gid", (epoch,))
        return [np.unpackbits(np.frombuffer(b, np.uint8))[:sizes[g]].astype(bool) for g, b in rows]

    def mask_matrix(self) -> tuple[list[int], np.ndarray]:
        """(epochs, kept) with kept (E, total channels) bool, groups concatenated in gid order.

        An epoch's masks are written in one transaction, so every searched epoch holds every group and
        the rows, ordered by (gid, epoch), form G runs of E; each run is unpacked in one numpy call.
        """
        sizes = [g["size"] for g in self.groups()]
        rows = self._query("SELECT epoch, gid, bits FROM masks ORDER BY gid, epoch")
        epochs = sorted({e for e, _, _ in rows})
        if not epochs:
            return [], np.zeros((0, sum(sizes)), dtype=bool)
        per_group = len(epochs)
        blocks = []
        for g, size in enumerate(sizes):
            packed = b"".join(b for _, _, b in rows[g * per_group:(g + 1) * per_group])
            bits = np.unpackbits(np.frombuffer(packed, np.uint8).reshape(per_group, -1), axis=1)
            blocks.append(bits[:, :size].astype(bool))                  # (E, C_g)
        return epochs, np.concatenate(blocks, axis=1)

    def saliency(self, epoch: int) -> list[np.ndarray]:
        rows = self._query("SELECT gid, vals FROM saliency WHERE epoch = ? ORDER BY gid", (epoch,))
        return [np.frombuffer(v, np.float32).copy() for _, v in rows]

    def events(self, since_id: int = 0) -> list[dict]:
        rows = self._query(f"SELECT {_EVENT} FROM events WHERE id > ? ORDER BY id", (since_id,))
        return [_event(row) for row in rows]

    def last_event(self, kind: str) -> dict | None:
        """The newest event of `kind` (as `events` gives it), or None: one row, however long the run."""
        rows = self._query(f"SELECT {_EVENT} FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,))
        return _event(rows[0]) if rows else None

    def trackers(self) -> dict[str, str]:
        """{tracker: the newest word on it} from the run's 'tracker' events: where it logs, or why it stopped."""
        rows = self._query("SELECT message, data FROM events WHERE kind = 'tracker' ORDER BY id")
        return {json.loads(d or "{}").get("tracker", "?"): m for m, d in rows}

    def summary(self) -> dict:
        """The figures `show --json` prints: status, prune epoch and reason, reductions, accuracies, PSI."""
        info, rows = self.info(), self.epochs()
        cfg = info["config"]
        last = rows[-1] if rows else {}
        t_star = info["t_star"]
        at_prune = next((r for r in rows if r["epoch"] == t_star), None)
        metric = info["metric"]
        accs = [r["val_acc"] for r in rows if r["val_acc"] is not None]
        dense_flops, dense_params = last.get("dense_flops"), last.get("dense_params")
        def red(now, dense):
            return None if not now or not dense else 1.0 - now / dense
        return dict(
            run_id=info["run_id"], status=info["display_status"], error=info["error"], preset=cfg.get("preset"),
            variant=cfg.get("variant", "unrecorded"), model=cfg.get("model"), dataset=cfg.get("dataset"), phase=info["phase"], t_star=t_star,
            prune_reason=info["prune_reason"], t_sl_start=info["t_sl_start"],
            target_flops_reduction=cfg.get("target"), round_to=cfg.get("round_to", 0),
            search=cfg.get("search", "threshold"), cost=cfg.get("cost", "flops"), distill=cfg.get("distill", 0.0),
            flops_reduction=red(last.get("model_flops"), dense_flops),
            params_reduction=red(last.get("model_params"), dense_params),
            dense_flops=dense_flops, dense_params=dense_params,
            final_flops=last.get("model_flops"), final_params=last.get("model_params"),
            dense_acc_at_prune=at_prune["val_acc"] if at_prune else None,
            best_acc=metric.best(accs), final_acc=last.get("val_acc"),
            metric=metric.name, metric_higher=metric.higher, metric_unit=metric.unit,
            psi=[r["psi_smoothed"] for r in rows], epochs=len(rows), total_epochs=cfg.get("epochs"),
            wall_seconds=(info["ended"] or time.time()) - info["created"], device=info["device"],
            **self._facts(),
        )

    def _facts(self) -> dict:
        """{speed: the newest 'speed' event's figures or None, world_size and kept_whole (name, size, reason)
        of the first 'started' event, rewind: the newest 'rewind' event's {epoch, reason, message} or None,
        target_miss: the newest 'target' event's {target, reduction, cause, reason, remedy, message} (the
        prune's reduction lies further than 0.5 pp from the target: method/miss.py) or None, latency: the
        newest 'latency' event's figures and message (cost=latency: predicted against measured,
        running/latency.py) or None, teacher: the 'teacher' event's figures and message (distill > 0: the
        teacher the fine-tuning learnt from, running/teacher.py) or None} in one query:
        summary() is read for every run card on every refresh."""
        rows = self._query("SELECT kind, data, message, epoch FROM events WHERE id IN (SELECT MAX(id) FROM events WHERE "
                           "kind = 'speed' UNION SELECT MIN(id) FROM events WHERE kind = 'started' UNION "
                           "SELECT MAX(id) FROM events WHERE kind = 'rewind' UNION "
                           "SELECT MAX(id) FROM events WHERE kind = 'target' UNION "
                           "SELECT MAX(id) FROM events WHERE kind = 'latency' UNION "
                           "SELECT MAX(id) FROM events WHERE kind = 'teacher')")
        data = {kind: (json.loads(d or "{}"), message, epoch) for kind, d, message, epoch in rows}
        started = data.get("started", ({},))[0]
        rewind, miss = data.get("rewind"), data.get("target")
        return dict(speed=data.get("speed", (None,))[0], world_size=int(started.get("world_size", 1)),
                    kept_whole=list(started.get("kept_whole", [])),
                    rewind=None if rewind is None else {**rewind[0], "message": rewind[1], "epoch": rewind[2]},
                    target_miss=None if miss is None else {**miss[0], "message": miss[1]},
                    latency=None if "latency" not in data else {**data["latency"][0], "message": data["latency"][1]},
                    teacher=None if "teacher" not in data else {**data["teacher"][0], "message": data["teacher"][1]})

    def kept_whole(self) -> list[dict]:
        """The groups the run never pruned: [{name, size, reason}] (empty for a run from before they were recorded)."""
        return self._facts()["kept_whole"]

    def speed(self) -> dict | None:
        """The exported model's measured speed against the dense one (osp_engine/running/speed.py), or None."""
        return self._facts()["speed"]

    def world_size(self) -> int:
        """How many processes trained the run (torchrun's world size; 1 for a single process)."""
        return self._facts()["world_size"]


def split_runs(root: str | Path) -> tuple[list[RunReader], list[tuple[str, str]]]:
    """(readable runs newest first, [(folder name, why it is unreadable)]) under root."""
    readable, unreadable = [], []
    for r in list_runs(root):
        problem = r.problem()
        if problem is None:
            readable.append(r)
        else:
            unreadable.append((r.run_id, problem))
    return readable, unreadable


def list_runs(root: str | Path) -> list[RunReader]:
    """Every run folder under root, newest first; an absent root is an empty list."""
    root = Path(root)
    if not root.exists():
        return []
    found = []
    for p in root.iterdir():
        try:
            found.append(RunReader(p))
        except FileNotFoundError:                           # not a run, or deleted while we looked
            continue
    return sorted(found, key=lambda r: r.run_id, reverse=True)          # ids start with their start time


def reproducible_content(run_dir: str | Path) -> dict:
    """What a run and the same run stopped and resumed (on CPU) must share, read straight from run.db:
    the epoch rows without wall times, masks, saliency and the run row's outcome. The resume tests
    and benchmarks/soak_faults.py compare it."""
    con = sqlite3.connect(f"file:{Path(run_dir) / DB_NAME}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(epochs)") if r[1] not in ("epoch_seconds", "cand_seconds")]
        return dict(epochs=con.execute(f"SELECT {', '.join(cols)} FROM epochs ORDER BY epoch").fetchall(),
                    masks=con.execute("SELECT * FROM masks ORDER BY epoch, gid").fetchall(),
                    saliency=con.execute("SELECT * FROM saliency ORDER BY epoch, gid").fetchall(),
                    run=con.execute("SELECT status, phase, error, t_star, prune_reason, t_sl_start FROM run").fetchall())
    finally:
        con.close()


_EVENT = "id, t, epoch, kind, message, data"     # an event row's columns, as `_event` reads them


def _event(row: tuple) -> dict:
    i, t, epoch, kind, message, data = row
    return dict(id=i, t=t, epoch=epoch, kind=kind, message=message, data=json.loads(data or "{}"))
