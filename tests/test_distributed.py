"""torchrun on CPU (gloo): two processes train one run; rank 0 writes it; prune now and resume reach both."""
import os
import signal
import subprocess
import sys
import time


from conftest import ROOT
from osp_engine.storage.export import load_pruned
from osp_engine.storage.reader import RunReader

SHORT = ["--set", "epochs=12", "--set", "sl_start=2", "--set", "sl_end=8", "--set", "reg=0.02",
         "--set", "reg_delta=0.02", "--set", "keep_checkpoints=0", "--set", "speed_budget_s=0.1"]
LATE = ["--set", "epochs=20", "--set", "sl_start=14", "--set", "sl_end=16", "--set", "keep_checkpoints=0",
        "--set", "speed_budget_s=0.1"]          # no shrink before epoch 16: the indicator stays low, a prune is pressed


def _torchrun(*args, background=False):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port", str(_port()),
           "-m", "osp_engine", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}                 # one PyTorch thread per process
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _only_run(root):
    folders = [p for p in root.iterdir()] if root.exists() else []
    return folders[0] if len(folders) == 1 and (folders[0] / "run.db").exists() else None


def _kill_everything_of(root) -> None:
    """SIGKILL every process whose command line names `root`: torchrun and its workers (which torchrun
    starts in sessions of their own, out of reach of a process-group kill)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ranks_event(reader):
    (event,) = [e for e in reader.events() if e["kind"] == "ranks"]
    return event


def test_two_processes_train_one_run_written_by_rank_0(tmp_path, monkeypatch):
    res = _torchrun("run", "--runs-dir", str(tmp_path), *SHORT, "--set", "log_to=tensorboard")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("finished: t* =") == 1                # rank 0 reports, rank 1 stays quiet
    (run_dir,) = list(tmp_path.iterdir())                         # one run folder for both processes
    reader = RunReader(run_dir)
    info, events = reader.info(), reader.events()
    assert info["status"] == "finished" and info["t_star"] is not None
    assert [e["kind"] for e in events].count("started") == 1 and reader.world_size() == 2
    ranks = _ranks_event(reader)["data"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["epoch"] == ranks[1]["epoch"] == info["t_star"]
    assert ranks[0]["kept"] == ranks[1]["kept"] and ranks[0]["params"] == ranks[1]["params"]
    model = load_pruned(run_dir / "model.pt")
    assert sum(p.numel() for p in model.parameters()) == ranks[0]["params"]
    assert not list(run_dir.glob("*.tmp")) and len(reader.epochs()) == 12
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1      # rank 0 logs, alone
    logged = EventAccumulator(str(run_dir / "tensorboard"))
    logged.Reload()
    assert [e.step for e in logged.Scalars("osp/accuracy")] == list(range(12))
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path))
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    card = next(m.value for m in at.markdown if run_dir.name in m.value)
    assert "trained by 2 processes (torchrun, world size 2)" in card      # the studio shows it like any run


def test_prune_now_sent_to_a_distributed_run_takes_effect_on_both_ranks(tmp_path):
    proc = _torchrun("run", "--runs-dir", str(tmp_path), *LATE, background=True)
    try:
        run_dir = _wait_for(lambda: _only_run(tmp_path), "the run folder")
        reader = RunReader(run_dir)
        _wait_for(lambda: reader.last_epoch() >= 3 and reader.controls(), "epoch 3 and live controls")
        reader.send_command("prune_now")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            _kill_everything_of(tmp_path)
    info = reader.info()
    assert info["prune_reason"] == "manual" and info["t_star"] < 14
    ranks = _ranks_event(reader)["data"]["ranks"]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == info["t_star"] and ranks[0]["kept"] == ranks[1]["kept"]


def test_a_killed_distributed_run_resumes_and_finishes(tmp_path):
    proc = _torchrun("run", "--runs-dir", str(tmp_path), *SHORT, background=True)
    run_dir = _wait_for(lambda: _only_run(tmp_path), "the run folder")
    reader = RunReader(run_dir)
    _wait_for(lambda: reader.last_epoch() >= 4, "epoch 4")
    _kill_everything_of(tmp_path)                                # torchrun and both ranks, at once
    proc.wait(60)
    _wait_for(lambda: reader.info()["display_status"] == "stale", "the run to show as stale", timeout=60)
    res = _torchrun("resume", str(run_dir))
    assert res.returncode == 0, res.stdout + res.stderr
    info = reader.info()
    assert info["status"] == "finished" and len(reader.epochs()) == 12
    resumed = [e for e in reader.events() if e["kind"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["data"]["world_size"] == 2
    ranks = _ranks_event(reader)["data"]["ranks"]
    assert ranks[0]["kept"] == ranks[1]["kept"]
    load_pruned(run_dir / "model.pt")
