"""Every ending recorded: signals, a full disk, interrupts; the checkpoint never behind the database;
crafted model files refused; bad input answered in one line."""
import os
import signal
import re
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from osp_engine import ConfigError, get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.running.run import Run
from osp_engine.storage.store import RunStore
from osp_engine.storage.reader import RunReader

SHORT = ["epochs=8", "sl_start=1", "sl_end=5", "reg=0.02", "reg_delta=0.02"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_command_line_run_as_cancelled_with_its_reason(tmp_path, sig):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--runs-dir", str(runs)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while time.time() < deadline:                         # wait for two stored epochs, then signal
        dirs = list(runs.iterdir()) if runs.exists() else []
        if dirs and (dirs[0] / "run.db").exists() and RunReader(dirs[0]).last_epoch() >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    s = RunReader(dirs[0]).summary()
    assert s["status"] == "cancelled" and s["error"] == f"stopped by {sig.name}" and 2 <= s["epochs"] < 40
    assert f"run cancelled: stopped by {sig.name}" in err


def test_a_full_disk_ends_the_run_failed_with_the_reason_after_retries(tmp_path, monkeypatch):
    writes, failing = [], {"update_run": 2}
    real_write, real_update = RunStore.write_epoch, RunStore.update_run

    def write_epoch(self, row, masks, scores):
        if row["epoch"] == 2:
            raise sqlite3.OperationalError("database or disk is full")
        writes.append(row["epoch"])
        real_write(self, row, masks, scores)

    def update_run(self, **fields):
        if fields.get("status") == "failed" and failing["update_run"] > 0:   # the disk is still full at first
            failing["update_run"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        real_update(self, **fields)

    monkeypatch.setattr(RunStore, "write_epoch", write_epoch)
    monkeypatch.setattr(RunStore, "update_run", update_run)
    run = Run(apply_overrides(get_preset("demo"), SHORT), tmp_path)
    assert run.execute() == "failed"
    s = RunReader(run.dir).summary()
    assert s["status"] == "failed" and re.fullmatch(rf"disk full: writing run\.db in {re.escape(str(run.dir))} "
                                                    rf"needs about \d+\.\d MB", s["error"]), s["error"]
    assert writes == [0, 1] and s["epochs"] == 2 and failing["update_run"] == 0


def test_the_checkpoint_is_on_disk_before_its_epoch_is_committed(tmp_path, monkeypatch):
    seen = []
    real_write = RunStore.write_epoch

    def write_epoch(self, row, masks, scores):
        ckpt = torch.load(self.dir / "checkpoint.pt", weights_only=False)
        seen.append((row["epoch"], ckpt["epoch"], ckpt["pruned"]))
        real_write(self, row, masks, scores)

    monkeypatch.setattr(RunStore, "write_epoch", write_epoch)
    run = Run(apply_overrides(get_preset("demo"), SHORT), tmp_path)
    assert run.execute() == "finished"
    t_star = RunReader(run.dir).info()["t_star"]
    assert [(e, c) for e, c, _ in seen] == [(e, e) for e in range(8)]
    assert [p for _, _, p in seen] == [e >= t_star for e in range(8)]       # pruned in the checkpoint of t* on


def test_a_crafted_model_file_is_refused_not_run(tmp_path):
    from osp_engine.storage.export import load_pruned

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "pwned"),))

    torch.save({"arch": Payload(), "state_dict": {}}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="is not a model exported by osp"):
        load_pruned(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()


BAD_SETTINGS = [("lr=nan", "lr is nan"), ("reg=nan", "reg is nan"), ("l_k=-5", "l_k must be positive"),
                ("momentum=-0.5", "momentum -0.5 is outside"), ("weight_decay=-1", "weight_decay must be >= 0"),
                ("momentum=0", "nesterov needs a momentum"), ("milestones=nan", "milestones"),
                ("milestones=0.8,0.3", "increasing"), ("seed=-1", "seed -1 is outside"),
                ("seed=5000000000", "is outside [0, 2^32)"), ("preset=../../../x", "not a plain name"),
                ("preset=a/b", "not a plain name"), ("gamma=0", "gamma must be positive")]


@pytest.mark.parametrize("setting,needle", BAD_SETTINGS)
def test_bad_settings_are_one_line_config_errors(tmp_path, setting, needle):
    with pytest.raises(ConfigError, match=None) as e:
        Run(apply_overrides(get_preset("demo"), [setting]), tmp_path)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_unusable_destinations(finished_run, tmp_path):
    def export(out):
        return subprocess.run([sys.executable, "-m", "osp_engine", "export", str(finished_run.dir), "--out", str(out)],
                              capture_output=True, text=True, cwd=ROOT)
    before = (finished_run.dir / "run.db").read_bytes()
    for out, needle in ((tmp_path / "missing" / "m.pt", "does not exist"), (tmp_path, "is a folder"),
                        (finished_run.dir / "run.db", "inside the run folder")):
        res = export(out)
        assert res.returncode == 2 and needle in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert (finished_run.dir / "run.db").read_bytes() == before
    assert export(tmp_path / "pruned.pt").returncode == 0 and (tmp_path / "pruned.pt").is_file()
