"""Resume: a command-line run killed (SIGKILL) at several points and resumed ends with the same store
and model as an uninterrupted run (CPU, one thread each)."""
import os
import sqlite3
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from osp_engine.store import RunReader

SETTINGS = ["--set", "epochs=9", "--set", "sl_start=1", "--set", "sl_end=6", "--set", "reg=0.02", "--set", "reg_delta=0.02"]

KILLER = '''
import os, signal, sys
sys.path.insert(0, {root!r})
import osp_engine.run as run_module
import osp_engine.pruner as pruner_module
from osp_engine import cli

point = {point!r}
def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-epoch":                      # a few batches into epoch 3
    calls = [0]
    original = run_module.Run._between_batches
    def between(self, store):
        calls[0] += 1
        if calls[0] == 3 * 24 + 5:
            die()
        return original(self, store)
    run_module.Run._between_batches = between
elif point == "after-prune-commit":           # the prune epoch and t* are committed, nothing after
    original = pruner_module.Pruner.record_prune
    def record(self, rec):
        original(self, rec)
        die()
    pruner_module.Pruner.record_prune = record
elif point == "during-checkpoint":            # epoch 4's checkpoint half written
    original = run_module.atomic_save
    def save(obj, path):
        if obj.get("epoch") == 4:
            with open(str(path) + ".tmp", "wb") as f:
                f.write(b"half a checkpoint")
            die()
        return original(obj, path)
    run_module.atomic_save = save
elif point == "during-export":
    def export(*args, **kwargs):
        die()
    pruner_module.export_model = export
sys.exit(cli.main(sys.argv[1:]))
'''


def _cli(*args, script=None):
    cmd = [sys.executable, str(script)] if script else [sys.executable, "-m", "osp_engine"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _store(run_dir):
    con = sqlite3.connect(run_dir / "run.db")
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(epochs)") if r[1] not in ("epoch_seconds", "cand_seconds")]
        return dict(epochs=con.execute(f"SELECT {', '.join(cols)} FROM epochs ORDER BY epoch").fetchall(),
                    masks=con.execute("SELECT * FROM masks ORDER BY epoch, gid").fetchall(),
                    saliency=con.execute("SELECT * FROM saliency ORDER BY epoch, gid").fetchall(),
                    run=con.execute("SELECT status, phase, error, t_star, prune_reason, t_sl_start FROM run").fetchall())
    finally:
        con.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("whole")
    res = _cli("run", "--runs-dir", str(runs), *SETTINGS)
    assert res.returncode == 0, res.stderr
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.mark.parametrize("point", ["mid-epoch", "after-prune-commit", "during-checkpoint", "during-export"])
def test_a_killed_run_resumes_to_the_same_store_and_model(uninterrupted, tmp_path, point):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT), point=point))
    runs = tmp_path / "runs"
    killed = _cli("run", "--runs-dir", str(runs), *SETTINGS, script=script)
    assert killed.returncode == -9, killed.stderr
    (run_dir,) = runs.iterdir()
    assert RunReader(run_dir).info()["status"] == "running"            # as a killed process leaves it
    resumed = _cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch" in resumed.stdout
    assert _store(run_dir) == _store(uninterrupted)
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(uninterrupted / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kinds = [e["kind"] for e in RunReader(run_dir).events()]
    assert kinds.count("resume") == 1 and kinds[-1] == "finished" and not list(run_dir.glob("*.tmp"))


def test_resume_refuses_what_it_cannot_continue(uninterrupted):
    res = _cli("resume", str(uninterrupted))
    assert res.returncode == 2 and "nothing to resume" in res.stderr and res.stderr.count("\n") == 1


def test_export_exports_again_a_run_whose_export_was_cut_short(tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT), point="during-export"))
    runs = tmp_path / "runs"
    assert _cli("run", "--runs-dir", str(runs), *SETTINGS, script=script).returncode == -9
    (run_dir,) = runs.iterdir()
    res = _cli("export", str(run_dir), "--out", str(tmp_path / "pruned.pt"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pruned.pt").is_file() and RunReader(run_dir).info()["status"] == "finished"
