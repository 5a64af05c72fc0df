"""Trackers: a run's store mirrored into TensorBoard, MLflow or Weights & Biases (`log_to`).

A `Tracking` (follow.py) reads what the run has committed to its store and hands it to one `Sink` per
tracker (sink.py: the contract; tensorboard.py, mlflow.py, wandb.py: the three). Because the store is
the source, the live mirror of a run and the backfill of a finished one (`python -m osp_engine log`)
are the same code, and a resumed run continues its tracker run from the tracker's own last step.
Each tracker's package is imported only when a run logs to it.
"""
