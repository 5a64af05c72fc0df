"""TensorBoard: event files under the run folder (`tensorboard/`) or log_dir/<run id>.

Scalars osp/<metric> per epoch, the keep fractions as the histogram osp/keep_fraction, events as the
text osp/events, the configuration as the text osp/config. A resumed run writes a new event file in the
same folder, from the step after the last one any earlier file holds; TensorBoard shows them as one run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import key
from .sink import History, Sink, Target


def logged_steps(folder: Path, metric: str = key("accuracy")) -> list[int]:
    """Every step of the scalar `metric` in the event files of `folder`, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and any(v.tag == metric for v in event.summary.value):
                steps.append(int(event.step))
    return steps


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, target: Target) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = target.folder / "tensorboard" if target.folder == target.run_dir else target.folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marker = target.marker
        self._last = max(logged_steps(self.folder, self.marker), default=-1)   # before this process's file exists
        self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=3600)   # flushed by every sync

    def where(self) -> str:
        return f"TensorBoard in {self.folder} (tensorboard --logdir {self.folder})"

    def last_step(self) -> int:
        return self._last

    def params(self, params: dict[str, str]) -> None:
        self.writer.add_text(key("config"), "    " + json.dumps(params, indent=1).replace("\n", "\n    "), 0)

    def epoch(self, step: int, metrics: dict[str, float], keep: np.ndarray | None) -> None:
        if keep is not None and len(keep):
            self.writer.add_histogram(key("keep_fraction"), keep, step, bins=np.linspace(0.0, 1.0, 21))
        last = self.marker                   # written last: the file is append-only, so an epoch whose
        for name, value in sorted(metrics.items(), key=lambda kv: kv[0] == last):   # marker is on disk is whole
            self.writer.add_scalar(name, value, step)

    def event(self, step: int, kind: str, message: str, data: dict) -> None:
        self.writer.add_text(key("events"), f"**{kind}**: {message}", step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, status: str, summary: dict[str, float | str], run_dir: Path, history: History) -> None:
        self.writer.add_text(key("summary"), "\n\n".join(f"{k}: {v}" for k, v in summary.items()), 0)
        self.writer.close()
