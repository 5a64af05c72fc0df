"""Trackers (osp_engine/tracking): real demo runs logged to TensorBoard, MLflow and W&B (offline), read
back with each tracker's own reader: TensorBoard's EventAccumulator, MlflowClient on the SQLite store,
W&B's Record protobufs in its offline run files. No tracker is mocked."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, wait_until
from osp_engine.storage.reader import RunReader

ALL = "tensorboard,mlflow,wandb"
SETTINGS = ["epochs=10", "sl_start=2", "sl_end=6", "reg=0.02", "reg_delta=0.02", "speed_budget_s=0"]


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


def _cli(args, root, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "osp_engine", *args, "--runs-dir", str(root)], cwd=ROOT,
                          env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _run(root, *settings, env=None):
    res = _cli(["run", "--preset", "demo", *[a for s in [*SETTINGS, *settings] for a in ("--set", s)]], root, env)
    assert res.returncode == 0, res.stderr[-2000:]
    (run_dir,) = [p for p in root.iterdir() if (p / "run.db").exists()]
    return RunReader(run_dir)


# ---------------------------------------------------------------- each tracker's own reader
def tensorboard_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)], acc


def mlflow_run(root, run_id):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("osp").experiment_id],
                                filter_string=f"tags.`osp.run_id` = '{run_id}'")
    return client, run


def mlflow_scalars(root, run_id, key):
    client, run = mlflow_run(root, run_id)
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def wandb_records(folder, run_id):
    """(history rows [(step, {key: value})], summary {key: value}) from W&B's offline run files."""
    from wandb.proto import wandb_internal_pb2 as pb

    from osp_engine.tracking.wandb_files import records

    rows, summary = [], {}
    for path in sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")):
        for raw in records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            items = record.history.item if kind == "history" else record.summary.update if kind == "summary" else []
            values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
            if kind == "history":
                rows.append((record.history.step.num, values))
            summary.update(values)
    return rows, summary


def wandb_scalars(folder, run_id, key):
    rows, _ = wandb_records(folder, run_id)
    return [(step, row[key]) for step, row in rows if key in row]


# ---------------------------------------------------------------- a live run
pytestmark = pytest.mark.xdist_group("trackers")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    return root, _run(root, f"log_to={ALL}")


def test_each_tracker_holds_one_psi_point_per_searched_epoch_and_the_prune(live_run):
    root, reader = live_run
    rows, t_star = reader.epochs(), reader.info()["t_star"]
    psi = [(r["epoch"], r["psi_smoothed"]) for r in rows if r["psi_smoothed"] is not None]
    assert [e for e, _ in psi] == list(range(1, t_star + 1)) and t_star is not None
    tb, acc = tensorboard_scalars(reader.dir / "tensorboard", "osp/psi_smoothed")
    ml = mlflow_scalars(root, reader.run_id, "osp/psi_smoothed")
    wb = wandb_scalars(reader.dir, reader.run_id, "osp/psi_smoothed")
    for logged in (tb, ml, wb):
        assert [e for e, _ in logged] == [e for e, _ in psi]
        assert [v for _, v in logged] == pytest.approx([v for _, v in psi], rel=1e-6)
    assert [s for s, _ in tensorboard_scalars(reader.dir / "tensorboard", "osp/accuracy")[0]] == list(range(10))
    assert [h.step for h in acc.Histograms("osp/keep_fraction")] == [e for e, _ in psi]
    client, run = mlflow_run(root, reader.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["osp.t_star"] == str(t_star)
    assert run.data.tags["osp.prune_reason"] == reader.info()["prune_reason"]
    assert run.data.params["target"] == "0.5" and run.data.params["log_to"] == ALL
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"model.pt", "structure.json", "events.json",
                                                                        "keep_fractions.json"}
    _, summary = wandb_records(reader.dir, reader.run_id)
    assert summary["osp/t_star"] == t_star and summary["osp/status"] == "finished"
    assert [s for s, _ in wandb_scalars(reader.dir, reader.run_id, "osp/accuracy")] == list(range(10))
    tracker_events = [e["message"] for e in reader.events() if e["kind"] == "tracker"]
    assert [m.split(" ")[2] for m in tracker_events] == ["TensorBoard", "MLflow", "W&B"]


def _kill_after(cmd, run_dir_of, epochs: int, while_live=None):
    """Start `cmd`, wait until its run holds `epochs` more epochs, kill it with -9; returns the run folder."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: run_dir_of() is not None, 240)
        run_dir = run_dir_of()
        start = RunReader(run_dir).last_epoch()
        wait_until(lambda: RunReader(run_dir).last_epoch() >= start + 2 or proc.poll() is not None, 240)
        if while_live:
            while_live(run_dir)
        wait_until(lambda: RunReader(run_dir).last_epoch() >= start + epochs or proc.poll() is not None, 240)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    return run_dir


def _one_run(root):
    found = [p for p in root.iterdir() if (p / "run.db").exists()]
    return found[0] if found else None


def test_a_run_killed_resumed_twice_and_rewound_logs_every_epoch_once_and_its_whole_history(tmp_path):
    """Three processes write the run (the first killed, a resume killed, a resume that rewinds to a kept
    checkpoint because checkpoint.pt was damaged): every epoch once, and the events and keep fractions of
    all three in MLflow's events.json / keep_fractions.json and W&B's events table."""
    def refused_while_live(run_dir):                  # a backfill of a live run: refused
        live = _cli(["log", run_dir.name, "--to", "tensorboard"], tmp_path)
        assert live.returncode == 2 and "is still running (pid " in live.stderr, live.stderr

    run = [sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(tmp_path),
           *[a for s in [*SETTINGS, "epochs=14", "sl_end=10", f"log_to={ALL}"] for a in ("--set", s)]]
    run_dir = _kill_after(run, lambda: _one_run(tmp_path), 4, refused_while_live)
    reader = RunReader(run_dir)
    assert reader.last_epoch() < 13
    online = _env(HOME=str(tmp_path), WANDB_MODE="online", WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    online.pop("WANDB_API_KEY", None)
    res = _cli(["resume", str(run_dir)], tmp_path, online)                 # W&B cannot start: refused, kept
    assert res.returncode == 2 and "no W&B API key" in res.stderr.strip().splitlines()[-1]
    assert reader.info()["status"] == "failed" and "no W&B API key" in reader.info()["error"]
    _kill_after([sys.executable, "-m", "osp_engine", "resume", str(run_dir)], lambda: run_dir, 2)
    assert reader.last_epoch() < 13
    (run_dir / "checkpoint.pt").write_bytes(b"damaged")
    res = _cli(["resume", str(run_dir)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert reader.info()["status"] == "finished" and reader.info()["t_star"] is not None
    kinds = [e["kind"] for e in reader.events()]
    assert kinds.count("resume") == 3 and kinds.count("rewind") == 1
    for logged in (tensorboard_scalars(run_dir / "tensorboard", "osp/accuracy")[0],
                   mlflow_scalars(tmp_path, reader.run_id, "osp/accuracy"),
                   wandb_scalars(run_dir, reader.run_id, "osp/accuracy")):
        assert [s for s, _ in logged] == list(range(14))                     # every epoch, once
        assert [v for _, v in logged] == pytest.approx([r["val_acc"] for r in reader.epochs()], rel=1e-6)
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 3        # one W&B run, continued
    history = [{"epoch": e["epoch"], "kind": e["kind"], "message": e["message"]} for e in reader.events()
               if e["kind"] != "tracker"]
    client, ml = mlflow_run(tmp_path, reader.run_id)
    artifact = lambda name: json.loads(Path(client.download_artifacts(ml.info.run_id, name, str(tmp_path))).read_text())
    assert artifact("events.json") == history
    keep = artifact("keep_fractions.json")
    assert sorted(map(int, keep)) == reader.mask_epochs()
    _, summary = wandb_records(run_dir, reader.run_id)
    (table,) = list((run_dir / "wandb").glob(f"offline-run-*/files/{summary['osp/events']['path']}"))
    rows = json.loads(table.read_text())["data"]
    assert [{"epoch": r[0], "kind": r[1], "message": r[2]} for r in rows] == history


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_a_backfill_logs_a_finished_run_once(filled_root, tracker):
    root, run_id = filled_root
    reader = RunReader(root / run_id)
    epochs = [r["epoch"] for r in reader.epochs()]
    for expected in (len(epochs), 0):                                     # the second backfill adds nothing
        res = _cli(["log", run_id, "--to", tracker], root)
        assert res.returncode == 0, res.stderr[-2000:]
        ours = res.stdout.strip().splitlines()[-1]                      # (a tracker may print lines of its own)
        assert ours == f"logged {expected} epochs of {run_id} to {tracker}", res.stdout + res.stderr
    logged = {"tensorboard": lambda: tensorboard_scalars(root / run_id / "tensorboard", "osp/accuracy")[0],
              "mlflow": lambda: mlflow_scalars(root, run_id, "osp/accuracy"),
              "wandb": lambda: wandb_scalars(root / run_id, run_id, "osp/accuracy")}[tracker]()
    assert [s for s, _ in logged] == epochs


def test_a_tracker_that_cannot_start_is_one_line_and_leaves_no_run(tmp_path):
    res = _cli(["run", "--preset", "demo", "--set", "log_to=tensorbord"], tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: log_to: unknown tracker 'tensorbord': use tensorboard, mlflow, wandb (several joined by commas)"]
    blocked = "import sys; sys.modules['wandb'] = None; from osp_engine.interfaces.cli import main; " \
              f"sys.exit(main(['run', '--runs-dir', {str(tmp_path)!r}, '--set', 'log_to=wandb']))"
    res = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == \
        "error: log_to=wandb needs the wandb package, which is not installed: pip install wandb"
    online = _env(HOME=str(tmp_path), WANDB_MODE="online", WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    online.pop("WANDB_API_KEY", None)
    res = _cli(["run", "--preset", "demo", "--set", "log_to=wandb"], tmp_path, online)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == "error: log_to=wandb: the tracker could not start (RuntimeError: " \
        "no W&B API key: run `wandb login`, or set WANDB_MODE=offline to log to files)"
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name[0].isdigit()]      # no run folder


def test_a_tracker_that_fails_mid_run_is_an_event_and_the_run_goes_on(tmp_path, monkeypatch):
    """The MLflow run is deleted from its store after epoch 1 (as another user might): MLflow then
    refuses every write; the osp run finishes, records why the tracker stopped, and MLflow keeps 0-1."""
    import torch
    from torch import nn
    from mlflow import MlflowClient

    import osp_engine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    with osp_engine.attach(model, x, num_classes=10, epochs=5, runs_dir=tmp_path, sl_start=1, sl_end=2,
                           log_to="mlflow") as pruner:
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        for epoch in range(5):
            pruner.begin_epoch(epoch)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            pruner.after_step(0.01)
            pruner.end_epoch(epoch, train_loss=1.0, train_acc=None, val_loss=None, val_acc=50.0, lr=0.01)
            if epoch == 1:
                (run,) = client.search_runs([client.get_experiment_by_name("osp").experiment_id])
                client.delete_run(run.info.run_id)
    reader = RunReader(pruner.store.dir)
    assert reader.info()["status"] == "finished"
    stopped = [e["message"] for e in reader.events() if e["kind"] == "tracker" and "stopped" in e["message"]]
    assert len(stopped) == 1 and stopped[0].startswith("mlflow stopped logging: MlflowException:")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "osp/accuracy")] == [0, 1]
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    card = next(m.value for m in at.markdown if reader.run_id in m.value)
    assert "mlflow stopped logging" in card                                 # the run card says why
