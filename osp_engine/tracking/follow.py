"""Tracking: a run's store, mirrored epoch by epoch into one sink per tracker.

Contract:
- `Tracking.open(cfg, run_dir, runs_root)` opens every tracker of `cfg.log_to` (a new tracker run, or the
  run's existing one) and logs the configuration once; a tracker that cannot start raises ConfigError
  with one line, and nothing of the others is kept open.
- `sync()` logs every epoch committed since the last sync (from each tracker's own last step on, so a
  resumed or backfilled run never logs a step twice) and the events up to that epoch; call it after
  each epoch's commit. `finish(status)` logs what is left, the summary and the artifacts, and closes.
- A tracker that fails after its start is dropped with an event (`tracker`) and never fails the run.

Events are matched across processes by their id in the store: `<run>/trackers.json` holds, per
tracker, the last event id logged (written after every sync, once the tracker has flushed).
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from ..method.config import Config, ConfigError
from ..storage.reader import RunReader
from .metrics import epoch_metrics, keep_fractions, key, named, run_params, run_summary
from .sink import History, Sink, Target

SINKS = {"tensorboard": "tensorboard:TensorBoardSink", "mlflow": "mlflow_sink:MlflowSink",
         "wandb": "wandb_sink:WandbSink"}
MARKS = "trackers.json"


def target_of(cfg: Config, run_dir: Path, runs_root: Path) -> Target:
    folder = Path(cfg.log_dir) / run_dir.name if cfg.log_dir else run_dir
    marker = key(named("accuracy", RunReader(run_dir).info()["metric"]))      # the run's own metric
    return Target(run_dir, run_dir.name, folder, runs_root, marker)


def open_sink(name: str, target: Target) -> Sink:
    """The sink of tracker `name` on `target`; ConfigError (one line) if its package or start fails."""
    module, cls = SINKS[name].split(":")
    try:
        sink_class = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
        return sink_class(target)
    except ImportError as e:
        raise ConfigError(f"log_to={name}: {e.name or name} cannot be imported ({e}): pip install {name}") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"log_to={name}: the tracker could not start ({type(e).__name__}: {first[:200]})") from None


class Tracking:
    def __init__(self, run_dir: Path, sinks: dict[str, Sink], record=None) -> None:
        """record(kind, message, **data): writes an event of the run (None: a backfill, which only prints)."""
        self.dir, self.sinks, self.record = Path(run_dir), sinks, record
        self.reader = RunReader(run_dir)
        self.metric = self.reader.info()["metric"]       # accuracy, or what the run reports (an mAP)
        marks = self._marks()
        self.done_epoch = {n: s.last_step() for n, s in sinks.items()}
        self.done_event = {n: int(marks.get(n, {}).get("event", 0)) for n in sinks}   # every id up to it is logged
        self.logged: dict[str, set[int]] = {n: set() for n in sinks}                   # ids beyond it logged by this process

    @classmethod
    def open(cls, cfg: Config, run_dir: Path, runs_root: Path, record=None, names: list[str] | None = None
             ) -> "Tracking | None":
        """The run's trackers (those of cfg.log_to, or `names`), each at its last step; None if there are none."""
        names = cfg.trackers if names is None else names
        if not names:
            return None
        target, sinks = target_of(cfg, Path(run_dir), Path(runs_root)), {}
        try:
            for name in names:
                sinks[name] = open_sink(name, target)
            tracking = cls(run_dir, sinks, record)
        except BaseException:
            for sink in sinks.values():
                _quietly(sink.finish, "cancelled", {}, Path(run_dir), History([], {}))
            raise
        for name, sink in sinks.items():
            if tracking.done_epoch[name] < 0 and not tracking.done_event[name]:
                tracking._guard(name, lambda s=sink: s.params(run_params(json.loads(cfg.to_json()))))
            tracking._note(name, f"logging to {sink.where()}")
        return tracking

    def sync(self, final: bool = False) -> int:
        """Log what the store holds beyond each tracker's position; returns the epochs logged (all sinks)."""
        if not self.sinks:
            return 0
        try:
            rows = self.reader.epochs(since=min(self.done_epoch.values()))
            events = self.reader.events(since_id=min(self.done_event.values()))
            searched = set(self.reader.mask_epochs())
        except Exception as e:                            # the store could not be read now: the next sync will
            self._note("tracking", f"the trackers skipped a sync: {type(e).__name__}: {e}")
            return 0
        last = max([r["epoch"] for r in rows] + [max(self.done_epoch.values())])
        logged = 0
        for name, sink in list(self.sinks.items()):
            due = [e for e in events if e["id"] > self.done_event[name] and e["id"] not in self.logged[name]
                   and e["kind"] != "tracker" and (final or e["epoch"] is None or e["epoch"] <= last)]

            def mirror():
                count = 0
                for row in rows:
                    if row["epoch"] > self.done_epoch[name]:
                        keep = keep_fractions(self.reader.masks(row["epoch"])) if row["epoch"] in searched else None
                        sink.epoch(row["epoch"], epoch_metrics(row, self.metric), keep)
                        count += 1
                for ev in due:
                    step = last if ev["epoch"] is None else min(max(ev["epoch"], 0), last)   # a prune at init: 0
                    sink.event(step, ev["kind"], ev["message"], ev["data"])
                sink.flush()
                return count
            count = self._guard(name, mirror)
            if count is not None:
                logged += count
                self.done_epoch[name] = max(self.done_epoch[name], last)
                self.logged[name].update(e["id"] for e in due)
                held = [e["id"] for e in events if e["id"] > self.done_event[name] and e["id"] not in self.logged[name]
                        and e["kind"] != "tracker"]
                self.done_event[name] = min(held) - 1 if held else max([self.done_event[name]] + [e["id"] for e in events])
        self._save_marks()
        return logged

    def finish(self, status: str) -> int:
        """Log the rest, the summary and the artifacts, then close every tracker; returns the epochs the
        last sync logged. Never raises."""
        logged = self.sync(final=True)
        try:
            summary = run_summary({**self.reader.summary(), "status": status})
        except Exception:
            summary = {}
        history = self.history()
        for name, sink in list(self.sinks.items()):
            self._guard(name, lambda s=sink: s.finish(status, summary, self.dir, history))
        self.sinks.clear()
        return logged

    def history(self) -> History:
        """What the store holds now, every process's part of it (empty if it cannot be read)."""
        try:
            events = [{"epoch": e["epoch"], "kind": e["kind"], "message": e["message"]}
                      for e in self.reader.events() if e["kind"] != "tracker"]
            keep = {e: [round(float(k), 6) for k in keep_fractions(self.reader.masks(e))]
                    for e in self.reader.mask_epochs()}
        except Exception:
            return History([], {})
        return History(events, keep)

    def _guard(self, name: str, fn):
        """fn()'s result, or None with the tracker dropped and an event saying why (the run goes on)."""
        try:
            return fn()
        except Exception as e:
            self.sinks.pop(name, None)
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            self._note(name, f"{name} stopped logging: {type(e).__name__}: {first} (the run goes on)")
            return None

    def _note(self, name: str, message: str) -> None:
        if self.record is not None:
            try:
                self.record("tracker", message, tracker=name)
            except Exception:
                pass

    def _marks(self) -> dict:
        try:
            return json.loads((self.dir / MARKS).read_text())
        except (OSError, ValueError):
            return {}

    def _save_marks(self) -> None:
        marks = {**self._marks(), **{n: {"event": e} for n, e in self.done_event.items() if n in self.sinks}}
        tmp = self.dir / f"{MARKS}.tmp"
        try:
            tmp.write_text(json.dumps(marks))
            os.replace(tmp, self.dir / MARKS)
        except OSError:
            pass                                  # a full disk: the next sync writes them again


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:
        pass
