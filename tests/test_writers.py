"""One writer per run: the OS lock every writer holds, N resumes at once, a killed writer, the studio's
manager refusing a run another process writes."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, wait_until
from osp_engine import ConfigError, get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.running.manager import RunManager
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader
from osp_engine.storage.writer_lock import RunHeld, WriterLock, holder
from test_resume import SETTINGS, killed_run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

WAIT_S = 300                                    # seconds a condition may take on a loaded machine


def test_the_lock_excludes_a_second_writer_and_names_the_holder(tmp_path):
    first = WriterLock.take(tmp_path, "run")
    assert holder(tmp_path)["pid"] == os.getpid() and holder(tmp_path)["what"] == "run"
    with pytest.raises(RunHeld) as refused:
        WriterLock.take(tmp_path, "resume")                  # another open file: excluded even in one process
    message = str(refused.value)
    assert message.startswith(f"{tmp_path.name} is being written by pid {os.getpid()} on {socket.gethostname()} (run) "
                              f"since ") and "\n" not in message
    first.release()
    assert holder(tmp_path) is None
    WriterLock.take(tmp_path, "resume").release()            # free again at once


FORKED_WORKER = """import os, sys, time
from osp_engine.storage.writer_lock import WriterLock
lock = WriterLock.take(sys.argv[1], "run")
if os.fork() == 0:                    # a forked DataLoader worker: outlives its parent's kill -9
    time.sleep(120)
    os._exit(0)
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_killed_with_forked_workers_alive_is_free_at_once(tmp_path):
    """The child of a fork closes its copy of the lock's descriptor: the lock dies with its holder."""
    proc = subprocess.Popen([sys.executable, "-c", FORKED_WORKER, str(tmp_path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "held\n"
        assert holder(tmp_path)["pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        workers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert workers, "the forked worker should still be alive"
        assert holder(tmp_path) is None
        WriterLock.take(tmp_path, "resume").release()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_a_lock_whose_holder_line_cannot_be_written_is_not_held(tmp_path, monkeypatch):
    """ENOSPC while recording the holder: a one-line disk-full error, and the run stays free."""
    from osp_engine.storage.faults import DiskFull

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFull, match="disk full: writing writer.lock"):
        WriterLock.take(tmp_path, "run")
    monkeypatch.undo()
    assert holder(tmp_path) is None
    WriterLock.take(tmp_path, "resume").release()


def test_of_four_resumes_at_once_exactly_one_proceeds(tmp_path):
    run_dir = killed_run(tmp_path, "mid-epoch")
    assert holder(run_dir) is None and RunReader(run_dir).info()["stale"]     # the killed writer's lock is free
    RunReader(run_dir).send_command("pause")          # the winner pauses at once: it holds the run while the others try
    procs = [subprocess.Popen([sys.executable, "-m", "osp_engine", "resume", str(run_dir)], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    wait_until(lambda: sum(p.poll() is not None for p in procs) == 3, WAIT_S)
    losers = [p for p in procs if p.poll() is not None]
    (winner,) = [p for p in procs if p.poll() is None]
    for p in losers:
        err = p.stderr.read()
        assert p.returncode == 2 and err.count("\n") == 1, err
        assert f"is being written by pid {winner.pid} on {socket.gethostname()} (resume) since" in err, err
    wait_until(lambda: (RunReader(run_dir).controls() or {}).get("paused"), WAIT_S)
    RunReader(run_dir).send_command("resume")
    out, err = winner.communicate(timeout=600)
    assert winner.returncode == 0, err
    kinds = [e["kind"] for e in RunReader(run_dir).events()]
    assert kinds.count("resume") == 1 and kinds.count("finished") == 1 and kinds[-1] == "finished"
    assert holder(run_dir) is None


def test_a_killed_writer_frees_its_lock_at_once(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "osp_engine", "run", "--runs-dir", str(runs), *SETTINGS,
                             "--set", "epochs=40"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: runs.is_dir() and any(runs.iterdir()) and holder(next(runs.iterdir())) is not None,
               WAIT_S)
    run_dir = next(runs.iterdir())
    assert holder(run_dir)["pid"] == proc.pid and holder(run_dir)["what"] == "run"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert holder(run_dir) is None
    WriterLock.take(run_dir, "resume").release()


def test_the_studio_refuses_a_run_another_process_writes(finished_run, tmp_path):
    cfg = apply_overrides(get_preset("demo"), ["epochs=6", "sl_start=1", "sl_end=3", "reg=0.02", "reg_delta=0.02",
                                               "threads=1"])
    run = Run(cfg, tmp_path)
    assert run.execute(log=lambda line: run.commands.cancel()) == "cancelled"    # after epoch 0: resumable
    mgr = RunManager(tmp_path)
    assert mgr.resumable(run.run_id) and holder(run.dir) is None
    other = WriterLock.take(run.dir, "resume")         # as a command-line resume would hold it
    try:
        assert not mgr.resumable(run.run_id)
        with pytest.raises(RunHeld, match="is being written by pid"):
            mgr.resume(run.run_id)
        with pytest.raises(RunHeld, match="cancel it before deleting it"):
            mgr.delete(run.run_id)
        assert run.dir.is_dir()
    finally:
        other.release()
    assert mgr.resumable(run.run_id)
    with pytest.raises(ConfigError, match="nothing to resume"):
        Run.resume(finished_run.dir)
    assert holder(finished_run.dir) is None            # a refused resume leaves the lock free
