"""Resume: a command-line run killed (SIGKILL) at several points and resumed ends with the same store
and model as an uninterrupted run (CPU, one thread each)."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from osp_engine.storage.reader import RunReader, reproducible_content

SETTINGS = ["--set", "epochs=9", "--set", "sl_start=1", "--set", "sl_end=6", "--set", "reg=0.02", "--set", "reg_delta=0.02"]

KILLER = '''
import os, signal, sys
sys.path.insert(0, {root!r})
import osp_engine.running.run as run_module
import osp_engine.running.pruner as pruner_module
from osp_engine.interfaces import cli

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
elif point == "before-prune-record":          # the prune epoch committed, t* not yet (found by the soak)
    def record(self, rec):
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


def killed_run(tmp_path, point):
    """A command-line run with SETTINGS killed (SIGKILL) at `point`: its folder, 'running' in its store."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT), point=point))
    runs = tmp_path / "runs"
    killed = _cli("run", "--runs-dir", str(runs), *SETTINGS, script=script)
    assert killed.returncode == -9, killed.stderr
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("whole")
    res = _cli("run", "--runs-dir", str(runs), *SETTINGS)
    assert res.returncode == 0, res.stderr
    (run_dir,) = runs.iterdir()
    return run_dir


@pytest.mark.parametrize("point", ["mid-epoch", "before-prune-record", "after-prune-commit", "during-checkpoint",
                                   "during-export"])
def test_a_killed_run_resumes_to_the_same_store_and_model(uninterrupted, tmp_path, point):
    run_dir = killed_run(tmp_path, point)
    assert RunReader(run_dir).info()["status"] == "running"            # as a killed process leaves it
    resumed = _cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch" in resumed.stdout
    assert reproducible_content(run_dir) == reproducible_content(uninterrupted)
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(uninterrupted / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kinds = [e["kind"] for e in RunReader(run_dir).events()]
    assert kinds.count("resume") == 1 and kinds[-1] == "finished" and not list(run_dir.glob("*.tmp"))


def test_resume_refuses_what_it_cannot_continue(uninterrupted):
    res = _cli("resume", str(uninterrupted))
    assert res.returncode == 2 and "nothing to resume" in res.stderr and res.stderr.count("\n") == 1


def test_export_exports_again_a_run_whose_export_was_cut_short(tmp_path):
    run_dir = killed_run(tmp_path, "during-export")
    res = _cli("export", str(run_dir), "--out", str(tmp_path / "pruned.pt"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pruned.pt").is_file() and RunReader(run_dir).info()["status"] == "finished"


def test_a_damaged_checkpoint_resumes_from_the_newest_intact_kept_one(uninterrupted, tmp_path):
    """checkpoint.pt truncated in place (its hard-linked kept copy of the same epoch with it): the resume
    rewinds the store to the newest intact kept checkpoint, says so, and ends as the uninterrupted run."""
    from osp_engine.running.branch import branch_epochs, checkpoint_path

    run_dir = killed_run(tmp_path, "mid-epoch")
    last = RunReader(run_dir).last_epoch()
    os.truncate(run_dir / "checkpoint.pt", (run_dir / "checkpoint.pt").stat().st_size // 2)
    intact = [e for e in branch_epochs(run_dir) if checkpoint_path(run_dir, e).stat().st_size > 1000
              and e < last]                                     # epoch `last`'s kept copy is the same file
    from osp_engine.running.origin import Rewind
    from osp_engine.running.run import Run
    adopted = Run.resume(run_dir)                               # how it will begin: a rewind, saying why
    assert isinstance(adopted.origin, Rewind) and adopted.origin.checkpoint["epoch"] == intact[-1]
    assert adopted.origin.reason.startswith("checkpoint.pt cannot be read (")
    adopted.release()
    resumed = _cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after epoch {intact[-1]}" in resumed.stdout
    assert reproducible_content(run_dir) == reproducible_content(uninterrupted)
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(uninterrupted / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rewind = RunReader(run_dir).summary()["rewind"]
    assert rewind["epoch"] == intact[-1] and rewind["reason"].startswith("checkpoint.pt cannot be read (")
    assert rewind["message"].endswith(f"resumed from the kept checkpoint of epoch {intact[-1]}; epochs "
                                      f"{intact[-1] + 1}-{last} are trained again")


def test_resume_refuses_when_no_checkpoint_is_intact(tmp_path):
    run_dir = killed_run(tmp_path, "mid-epoch")
    for path in [run_dir / "checkpoint.pt", *(run_dir / "checkpoints").glob("*.pt")]:
        path.write_bytes(b"damaged")
    res = _cli("resume", str(run_dir))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "checkpoint.pt cannot be read (" in res.stderr and "no kept checkpoint is intact: start it again" in res.stderr


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs with 5 MB taken by a filler file (deleting it frees the space); skipped where
    this process may not mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        (mount / "filler").write_bytes(b"\0" * 5_000_000)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_run_in_one_line_and_it_resumes_once_space_is_freed(uninterrupted, small_disk):
    runs = small_disk / "runs"
    failed = _cli("run", "--runs-dir", str(runs), *SETTINGS)
    assert failed.returncode == 1, failed.stderr
    (run_dir,) = runs.iterdir()
    info = RunReader(run_dir).info()
    assert info["status"] == "failed"
    assert re.fullmatch(rf"disk full: writing (checkpoint\.pt|epoch-\d{{4}}\.pt|run\.db) in {re.escape(str(run_dir))}"
                        rf"(/checkpoints)? needs about \d+\.\d MB", info["error"]), info["error"]
    assert failed.stderr.strip() == f"run failed: {info['error']}"
    assert not list(run_dir.glob("*.tmp"))                   # the partial file is gone
    committed = reproducible_content(run_dir)["epochs"]
    (small_disk / "filler").unlink()
    resumed = _cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert reproducible_content(run_dir) == reproducible_content(uninterrupted)
    assert reproducible_content(run_dir)["epochs"][:len(committed)] == committed           # nothing committed was lost


def test_a_run_whose_store_cannot_be_made_on_a_full_disk_leaves_no_folder(small_disk):
    """Before, the schema could stay in a WAL file the rename left behind: a malformed run.db forever."""
    runs = small_disk / "runs"
    runs.mkdir()
    (small_disk / "rest").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 8192))
    res = _cli("run", "--runs-dir", str(runs), *SETTINGS)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert re.fullmatch(rf"error: disk full: writing run\.db in {re.escape(str(runs))}/\S+ needs about 0\.1 MB\n",
                        res.stderr), res.stderr
    assert list(runs.iterdir()) == []
