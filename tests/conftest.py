import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("PYTEST_XDIST_WORKER"):         # pytest -n 2: two workers share the cores, one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and so do the processes a test starts
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# No studio warm-up in tests (osp_studio/control.py): every AppTest would build a demo network in a background
# thread, taking the cores the tests train on, and one still running at exit aborts the process. The
# warm-up itself is tested directly (test_run.py); a test that wants it sets OSP_WARM_UP=1.
os.environ["OSP_WARM_UP"] = "0"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One real tiny demo run, shared by the read-only tests."""
    from osp_engine import get_preset
    from osp_engine.method.config import apply_overrides
    from osp_engine.running.run import Run

    cfg = apply_overrides(get_preset("demo"), ["epochs=16", "sl_start=2", "sl_end=10", "reg=0.02", "reg_delta=0.02",
                                               "candidate_every=1"])
    run = Run(cfg, tmp_path_factory.mktemp("runs"))
    assert run.execute() == "finished", run.error
    return run


def wait_until(condition, seconds: float) -> None:
    """Poll `condition` every 50 ms until it holds; fail after `seconds` (a slow machine waits, never a fixed sleep)."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture()
def filled_root(finished_run, tmp_path, monkeypatch):
    """A runs folder holding a copy of the shared tiny run, as OSP_RUNS_DIR, the project root as cwd."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(finished_run.dir, root / finished_run.run_id)
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    monkeypatch.chdir(ROOT)
    return root, finished_run.run_id
