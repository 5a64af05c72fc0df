"""Weights & Biases: one W&B run per osp run, its id derived from the run id (a resume continues it).

Works offline (WANDB_MODE=offline: files under the run folder's wandb/, or log_dir/<run id>/wandb,
for `wandb sync` later). Project: WANDB_PROJECT, else "osp". The config; osp/<metric> per epoch with
the keep fractions as the histogram osp/keep_fraction; t* and the prune reason in the summary as soon
as the prune happens, and the run's figures at the end; the events as the table osp/events (in the summary),
written from the store at the end, so a resumed or rewound run's table holds its whole history.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .metrics import key
from .sink import History, Sink, Target
from .wandb_files import logged_steps


def wandb_id(run_id: str) -> str:
    """A W&B run id for an osp run id (letters, digits, - and _ only; at most 64 characters)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[-64:]


class WandbSink(Sink):
    name = "wandb"

    def __init__(self, target: Target) -> None:
        import wandb

        self.wandb, self.id = wandb, wandb_id(target.run_id)
        self.folder = target.folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._last = max(logged_steps(self.folder / "wandb", self.id, target.marker), default=-1)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "osp"), id=self.id, name=target.run_id,
                                  resume="allow", dir=str(self.folder), reinit="create_new",
                                  settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        except Exception as e:
            if "API key" in str(e):
                raise RuntimeError("no W&B API key: run `wandb login`, or set WANDB_MODE=offline to log to files") from None
            raise

    def where(self) -> str:
        return f"W&B run {self.id} ({self.run.settings.mode or 'online'}) in {self.folder / 'wandb'}"

    def last_step(self) -> int:
        return self._last

    def params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def epoch(self, step: int, metrics: dict[str, float], keep: np.ndarray | None) -> None:
        data = dict(metrics)
        if keep is not None and len(keep):
            data[key("keep_fraction")] = self.wandb.Histogram(np_histogram=np.histogram(keep, bins=20, range=(0, 1)))
        self.run.log(data, step=step)

    def event(self, step: int, kind: str, message: str, data: dict) -> None:
        if kind == "prune":
            self.run.summary[key("t_star")] = step
            self.run.summary[key("prune_reason")] = str(data.get("reason", ""))

    def finish(self, status: str, summary: dict[str, float | str], run_dir: Path, history: History) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v
        if history.events:                                # in the summary: a log() would add a step after the last
            rows = [[e["epoch"], e["kind"], e["message"]] for e in history.events]
            self.run.summary[key("events")] = self.wandb.Table(columns=["epoch", "kind", "message"], data=rows)
        self.run.finish(exit_code=0 if status == "finished" else 1)
