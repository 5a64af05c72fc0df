"""`python -m osp_engine log RUN --to TRACKER`: a run that ended, logged to a tracker after the fact.

The same mirror as a live run's (follow.Tracking), so a run logged live and then backfilled, or
backfilled twice, holds every epoch once: the tracker run is found again and continued from its last step.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..method.config import Config, ConfigError, TRACKERS
from ..storage.reader import RunReader
from .follow import Tracking


def backfill(reader: RunReader, tracker: str, log_dir: str | None = None, say=print) -> int:
    """Log the run of `reader` to `tracker`; returns the epochs logged now. ConfigError (one line) if the
    run is still being written, or the tracker is unknown, not installed or cannot start."""
    if tracker not in TRACKERS:
        raise ConfigError(f"--to {tracker!r}: use one of {', '.join(TRACKERS)}")
    info = reader.info()
    if info["holder"] is not None or info["status"] == "running" and not info["stale"]:
        who = info["holder"] or {}
        raise ConfigError(f"{reader.run_id} is still running (pid {who.get('pid', '?')}): backfill it once it has "
                          f"ended (a run started with --set log_to={tracker} logs live)")
    cfg = Config.from_json(json.dumps(info["config"]))
    cfg = dataclasses.replace(cfg, log_to=tracker, log_dir=cfg.log_dir if log_dir is None else log_dir)
    cfg.validate(model_registry=False, dataset_registry=False)
    tracking = Tracking.open(cfg, reader.dir, Path(reader.dir).parent, names=[tracker],
                             record=lambda kind, message, **data: say(message))
    return tracking.finish("stale" if info["stale"] else info["status"])
