"""The run's quality metric: its name and direction, as whoever reports it says (accuracy for a
classifier, mAP50-95 for a detector, ...). Plain data, importable without torch.

A run stores its metric in run.db (`run.metric`, JSON); a run made before metrics had names, or a
classifier run, reads as `ACCURACY`. The epoch column holding it stays `val_acc` (and `cand_acc` for
the candidate): the store's schema is the same for every metric, only the labels change.
"""
from __future__ import annotations

import dataclasses
import json
import re


@dataclasses.dataclass(frozen=True)
class Metric:
    """name: what the studio, the report and the trackers call it; higher: whether higher is better;
    unit: printed after a value ("%" for a percentage, "" for none)."""
    name: str = "accuracy"
    higher: bool = True
    unit: str = "%"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40:
            raise ValueError(f"a metric's name is 1 to 40 characters, not {self.name!r}")

    def best(self, values: list[float]) -> float | None:
        """The best of `values` in this metric's direction, None for none."""
        if not values:
            return None
        return max(values) if self.higher else min(values)

    def format(self, value: float | None) -> str:
        """'97.22 %' for accuracy, '41.30' for a unitless figure, '–' for none."""
        if value is None:
            return "–"
        return f"{value:.2f} {self.unit}" if self.unit else f"{value:.2f}"

    def label(self) -> str:
        """An axis title or column header: 'accuracy (%)', 'mAP50-95 (%)'."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def header(self, words: str) -> str:
        """A table column: header("final") is 'final accuracy (%)', header("at t*") 'accuracy at t* (%)'."""
        text = f"{self.name} {words}" if words.startswith("at ") else f"{words} {self.name}"
        return f"{text} ({self.unit})" if self.unit else text

    @property
    def slug(self) -> str:
        """The tracker key's tail: 'accuracy', 'mAP50-95_box' (letters, digits, '-', '_' and '.')."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.strip()).strip("_") or "metric"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "Metric":
        """The stored metric; None (an older run, a classifier run) is accuracy."""
        return cls(**json.loads(text)) if text else ACCURACY


ACCURACY = Metric()


def summary_metric(summary: dict) -> Metric:
    """The metric of a run from its RunReader.summary() (accuracy for a summary without one)."""
    if not summary.get("metric"):
        return ACCURACY
    return Metric(summary["metric"], bool(summary.get("metric_higher", True)), summary.get("metric_unit") or "")


def as_metric(value: "Metric | str | None") -> Metric:
    """A Metric from what a caller gave: a Metric, a name (higher is better, in percent), or None (accuracy)."""
    if value is None:
        return ACCURACY
    if isinstance(value, Metric):
        return value
    if isinstance(value, str):
        return ACCURACY if value == "accuracy" else Metric(value)
    raise TypeError(f"metric: a Metric or a name, not {type(value).__name__}")
