"""What a tracker receives, as plain data: the epoch's metrics, the keep fractions, the parameters."""
from __future__ import annotations

import json

import numpy as np

from ..storage.metric import ACCURACY, Metric, summary_metric

NAMESPACE = "osp"
PHASES = {"dense": 0, "sparsity": 1, "pruned": 2}       # osp/phase: a number a chart can draw

# (metric name under osp/, the store's epoch column)
EPOCH_METRICS = (
    ("accuracy", "val_acc"), ("train_accuracy", "train_acc"), ("loss", "train_loss"), ("val_loss", "val_loss"),
    ("lr", "lr"), ("regulariser", "reg"), ("regulariser_penalty", "reg_penalty"),
    ("psi", "psi_raw"), ("psi_smoothed", "psi_smoothed"), ("early_bird_distance", "eb_distance"),
    ("candidate_accuracy", "cand_acc"), ("candidate_flops", "cand_flops"), ("candidate_params", "cand_params"),
    ("candidate_reduction", "cand_reduction"), ("model_flops", "model_flops"), ("model_params", "model_params"),
    ("epoch_seconds", "epoch_seconds"),
)


def key(name: str) -> str:
    return f"{NAMESPACE}/{name}"


def named(name: str, metric: Metric) -> str:
    """A metric's name under osp/ for a run whose quality metric is `metric`: accuracy, train_accuracy,
    candidate_accuracy become mAP50-95_box, train_mAP50-95_box, candidate_mAP50-95_box for a detector."""
    return name.replace("accuracy", metric.slug)


def epoch_metrics(row: dict, metric: Metric = ACCURACY) -> dict[str, float]:
    """{osp/<name>: value} of one epoch row of the store: the columns that have a value, and the phase."""
    out = {key(named(name, metric)): float(row[column]) for name, column in EPOCH_METRICS if row.get(column) is not None}
    if row.get("phase") in PHASES:
        out[key("phase")] = float(PHASES[row["phase"]])
    return out


def keep_fractions(masks: list[np.ndarray]) -> np.ndarray:
    """(G,) float: the fraction of each group's channels the epoch's candidate keeps (masks: (C_g,) bool)."""
    return np.array([m.mean() for m in masks], dtype=np.float64)


def run_params(config: dict) -> dict[str, str]:
    """The run's config as tracker parameters: every field as a string (tuples as 0.3,0.6), `extra` left out."""
    def text(v) -> str:
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return v if isinstance(v, str) else json.dumps(v)
    return {k: text(v) for k, v in sorted(config.items()) if k != "extra"}


def run_summary(summary: dict) -> dict[str, float | str]:
    """The figures a tracker keeps as the run's summary: status, t*, why, reductions, the run's metric."""
    metric = summary_metric(summary)
    fields = {"status": "status", "t_star": "t_star", "prune_reason": "prune_reason",
              "flops_reduction": "flops_reduction", "params_reduction": "params_reduction",
              "final_accuracy": "final_acc", "best_accuracy": "best_acc",
              "accuracy_at_prune": "dense_acc_at_prune", "final_flops": "final_flops", "final_params": "final_params"}
    return {key(named(name, metric)): summary[field] for name, field in fields.items() if summary.get(field) is not None}
