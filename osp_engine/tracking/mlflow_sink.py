"""MLflow: one MLflow run per osp run, found again by its tag osp.run_id (a resume continues it).

The tracking URI is MLFLOW_TRACKING_URI, else a local SQLite store beside the runs
(`sqlite:///<runs folder>/mlflow.db`, artifacts in `<runs folder>/mlflow-artifacts`); the experiment is
MLFLOW_EXPERIMENT_NAME, else "osp". Parameters: the config. Metrics osp/<metric> per epoch; MLflow has
no histograms, so the keep fractions are osp/keep_fraction_min|mean|max per epoch and the whole table is
the artifact keep_fractions.json. Events: tags osp.t_star / osp.prune_reason at the prune, the list as
events.json. At the end: the summary as tags, model.pt and structure.json as artifacts, the status;
events.json and keep_fractions.json are written from the store then, so the files of a resumed or rewound run
hold its whole history, not one process's part of it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .metrics import key
from .sink import History, Sink, Target

STATUS = {"finished": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class MlflowSink(Sink):
    name = "mlflow"

    def __init__(self, target: Target) -> None:
        from mlflow import MlflowClient

        self.marker = target.marker                       # an epoch whose marker is logged is logged whole
        local = not os.environ.get("MLFLOW_TRACKING_URI")
        self.uri = f"sqlite:///{(target.runs_root / 'mlflow.db').resolve()}" if local else os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "osp")
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = (target.runs_root / "mlflow-artifacts").resolve().as_uri() if local else None
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`osp.run_id` = '{target.run_id}'",
                                        max_results=1)
        self.run_id = found[0].info.run_id if found else \
            self.client.create_run(experiment_id, run_name=target.run_id, tags={"osp.run_id": target.run_id}).info.run_id
        self.client.update_run(self.run_id, status="RUNNING")

    def where(self) -> str:
        return f"MLflow run {self.run_id} at {self.uri}"

    def last_step(self) -> int:
        return max((m.step for m in self.client.get_metric_history(self.run_id, self.marker)), default=-1)

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):                       # MLflow takes 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def epoch(self, step: int, metrics: dict[str, float], keep: np.ndarray | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if keep is not None and len(keep):
            metrics = {**metrics, key("keep_fraction_min"): float(keep.min()), key("keep_fraction_mean"): float(keep.mean()),
                       key("keep_fraction_max"): float(keep.max())}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def event(self, step: int, kind: str, message: str, data: dict) -> None:
        if kind == "prune":
            self.client.set_tag(self.run_id, "osp.t_star", str(step))
            self.client.set_tag(self.run_id, "osp.prune_reason", str(data.get("reason", "")))

    def finish(self, status: str, summary: dict[str, float | str], run_dir: Path, history: History) -> None:
        for k, v in summary.items():
            self.client.set_tag(self.run_id, k.replace("/", "."), str(v))
        if history.events:
            self.client.log_dict(self.run_id, history.events, "events.json")
        if history.keep:
            self.client.log_dict(self.run_id, {str(k): v for k, v in sorted(history.keep.items())}, "keep_fractions.json")
        for artifact in ("model.pt", "structure.json"):
            if (run_dir / artifact).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / artifact))
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))
