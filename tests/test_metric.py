"""The run's quality metric has a name and a direction: a run attached with metric="mAP50-95" (or a
lower-is-better metric) is shown under that name by the run card, the charts and the report, and its
best value is taken in its direction; a run made before metrics had names reads as accuracy."""

import sqlite3

import pytest
import torch
from torch import nn

from osp_engine import attach
from osp_engine.charts.report import card_rows, report_html
from osp_engine.charts.stability import stability_figure
from osp_engine.charts.tradeoff import curves_figure
from osp_engine.method.config import ConfigError
from osp_engine.storage.metric import ACCURACY, Metric, as_metric, summary_metric
from osp_engine.storage.reader import RunReader

import pandas as pd


def test_a_metric_formats_labels_and_picks_its_best_in_its_direction():
    m = Metric("mAP50-95 (box)")
    assert (m.best([30.0, 41.5, 40.0]), m.format(41.5), m.label(), m.header("final"), m.header("at t*")) == \
        (41.5, "41.50 %", "mAP50-95 (box) (%)", "final mAP50-95 (box) (%)", "mAP50-95 (box) at t* (%)")
    assert m.slug == "mAP50-95_box"
    loss = Metric("val loss", higher=False, unit="")
    assert (loss.best([0.9, 0.4, 0.6]), loss.format(0.4), loss.label(), loss.best([])) == (0.4, "0.40", "val loss", None)
    assert Metric.from_json(loss.to_json()) == loss and Metric.from_json(None) == ACCURACY
    assert as_metric(None) == as_metric("accuracy") == ACCURACY and as_metric("mAP50") == Metric("mAP50")
    with pytest.raises(ValueError):
        Metric("")


def _attached_run(tmp_path, metric, values):
    """A tiny classifier in a loop of one's own, reporting `values` as its metric, one per epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with attach(model, x[:1], num_classes=4, epochs=len(values), runs_dir=tmp_path, metric=metric, target=0.3,
                sl_start=1, sl_end=len(values) - 3, variant="corrected") as pruner:
        for epoch, value in enumerate(values):
            pruner.begin_epoch(epoch)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            pruner.after_step(0.05)
            if pruner.end_epoch(epoch, train_loss=loss.item(), train_acc=None, val_loss=None, val_acc=value, lr=0.05):
                opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return RunReader(pruner.store.dir)


def test_an_attached_run_is_shown_under_its_metric_name(tmp_path):
    reader = _attached_run(tmp_path, "mAP50-95", [10.0, 20.0, 30.0, 25.0, 28.0, 27.0])
    info, s = reader.info(), reader.summary()
    assert info["metric"] == Metric("mAP50-95") and summary_metric(s) == Metric("mAP50-95")
    assert (s["metric"], s["best_acc"], s["final_acc"]) == ("mAP50-95", 30.0, 27.0)
    rows = dict(card_rows(s, info))
    assert rows["mAP50-95"] == "final 27.00 %, best 30.00 %" and "accuracy" not in rows
    df = pd.DataFrame(reader.epochs())
    fig = stability_figure(df, info, whole_run=True)
    names = {t.name for t in fig.data}
    assert "mAP50-95 of the network as trained" in names and not any("accuracy" in n for n in names)
    assert fig.layout.yaxis2.title.text == "mAP50-95 (%)"
    assert curves_figure(reader.run_id, df, info["metric"]).layout.yaxis.title.text == "mAP50-95 (%)"
    prune = reader.last_event("prune")["message"]
    assert "mAP50-95 " in prune and "accuracy" not in prune
    page = report_html(reader.dir)
    assert "final 27.00 %, best 30.00 %" in page and "the mAP50-95 of the network" in page


def test_a_lower_is_better_metric_takes_its_minimum_as_best(tmp_path):
    reader = _attached_run(tmp_path, Metric("val loss", higher=False, unit=""), [0.9, 0.5, 0.7, 0.6, 0.65, 0.62])
    s = reader.summary()
    assert (s["best_acc"], s["metric_higher"]) == (0.5, False)
    assert dict(card_rows(s, reader.info()))["val loss"] == "final 0.62, best 0.50"


def test_a_bad_metric_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="metric"):
        with attach(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), torch.randn(1, 1, 8, 8), num_classes=None,
                    epochs=4, runs_dir=tmp_path, metric=3, sl_start=1, sl_end=1):
            pass
    assert not list(tmp_path.iterdir())


def test_a_run_made_before_metrics_had_names_reads_as_accuracy(tmp_path):
    reader = _attached_run(tmp_path, None, [50.0, 60.0, 70.0, 65.0, 66.0, 67.0])
    con = sqlite3.connect(reader.db)
    con.execute("ALTER TABLE run DROP COLUMN metric")     # the run table of osp before this change
    con.close()
    old = RunReader(reader.dir)
    assert old.info()["metric"] == ACCURACY and old.summary()["best_acc"] == 70.0
    assert dict(card_rows(old.summary(), old.info()))["accuracy"] == "final 67.00 %, best 70.00 %"


def test_trackers_log_the_metric_under_its_name():
    from osp_engine.tracking.metrics import epoch_metrics, run_summary

    row = {"epoch": 3, "phase": "pruned", "val_acc": 41.5, "cand_acc": 39.0, "train_loss": 1.2}
    box = Metric("mAP50-95 (box)")
    assert epoch_metrics(row, box) == {"osp/mAP50-95_box": 41.5, "osp/candidate_mAP50-95_box": 39.0,
                                       "osp/loss": 1.2, "osp/phase": 2.0}
    assert set(epoch_metrics(row)) == {"osp/accuracy", "osp/candidate_accuracy", "osp/loss", "osp/phase"}
    summary = {"status": "finished", "final_acc": 40.0, "best_acc": 41.5, "metric": box.name, "metric_higher": True,
               "metric_unit": "%"}
    assert run_summary(summary) == {"osp/status": "finished", "osp/final_mAP50-95_box": 40.0,
                                    "osp/best_mAP50-95_box": 41.5}
