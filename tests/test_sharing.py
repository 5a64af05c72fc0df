"""Sharing one machine: each CPU run's share of the cores, and the studio's queue of one run per device."""

import threading

import torch

from conftest import wait_until
from osp_engine import get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.running.branch import INIT, checkpoint_path
from osp_engine.running.manager import RunManager
from osp_engine.running.run import Run
from osp_engine.storage.reader import list_runs
from osp_engine.running.threads import live_cpu_runs, thread_share

TINY = ["epochs=6", "sl_start=1", "sl_end=3", "reg=0.02", "reg_delta=0.02"]

WAIT_S = 180                                    # seconds a condition may take on a loaded machine


def test_thread_share_divides_the_cores_and_keeps_the_ceiling():
    assert thread_share(0, ceiling=16, live_runs=1, cores=16) == 16
    assert thread_share(0, ceiling=16, live_runs=3, cores=16) == 5
    assert thread_share(0, ceiling=4, live_runs=1, cores=16) == 4        # OMP_NUM_THREADS=4 stays the most
    assert thread_share(0, ceiling=2, live_runs=5, cores=2) == 1         # never below one
    assert thread_share(0, ceiling=2, live_runs=0, cores=2) == 2
    assert thread_share(3, ceiling=2, live_runs=5, cores=2) == 3         # threads=3: as asked


def test_the_queue_trains_one_run_per_device_in_order(tmp_path):
    """Three runs started at once: one trains, the second waits its turn and then finishes, the third is
    cancelled in the queue and never gets a folder; never two running at once."""
    torch.set_num_threads(2)
    mgr = RunManager(tmp_path, per_device=1)
    cfg = apply_overrides(get_preset("demo"), TINY)
    first = mgr.start(cfg)
    mgr.command(first, "pause")                                   # holds the slot however fast this machine is
    second = mgr.start(apply_overrides(cfg, ["seed=1"]))
    third = mgr.start(apply_overrides(cfg, ["seed=2"]))
    assert mgr.queued() == [(second, "cpu", 0), (third, "cpu", 1)]
    assert [r.run_id for r in list_runs(tmp_path)] == [first]      # a queued run has no folder yet
    assert live_cpu_runs(tmp_path) == 1                          # the paused run, written by this process
    mgr.cancel_queued(third)
    assert mgr.queued() == [(second, "cpu", 0)]
    running_at_once = []
    mgr.command(first, "resume")
    def both_done():
        running_at_once.append(sum(r.info()["status"] == "running" for r in list_runs(tmp_path)))
        return all(r.info()["status"] == "finished" for r in list_runs(tmp_path)) and len(list_runs(tmp_path)) == 2
    wait_until(both_done, WAIT_S)
    assert max(running_at_once) == 1 and mgr.queued() == []
    assert sorted(r.run_id for r in list_runs(tmp_path)) == sorted([first, second])
    assert live_cpu_runs(tmp_path) == 0
    mgr.shutdown()


def test_a_run_takes_its_share_of_the_cores(tmp_path, monkeypatch):
    """Alone on the machine a run keeps the threads it started with; threads=1 is recorded as an event.
    (PyTorch's thread count belongs to the calling thread under OpenMP: each studio run sets its own.)"""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    mgr = RunManager(tmp_path)
    run_id = mgr.start(apply_overrides(get_preset("demo"), TINY + ["threads=1"]))
    wait_until(lambda: mgr.reader(run_id).info()["status"] == "finished", WAIT_S)
    threads = [e for e in mgr.reader(run_id).events() if e["kind"] == "threads"]
    assert [e["message"] for e in threads] == ["1 CPU thread(s): the threads setting"] and threads[0]["epoch"] == 0
    alone = mgr.start(apply_overrides(get_preset("demo"), TINY + ["seed=3"]))
    wait_until(lambda: mgr.reader(alone).info()["status"] == "finished", WAIT_S)
    shares = [e["data"]["threads"] for e in mgr.reader(alone).events() if e["kind"] == "threads"]
    assert shares in ([], [2])                  # all of the 2 cores: kept, or taken back from the last run's 1


def test_warm_up_writes_nothing_and_a_bad_config_is_left_to_the_start(tmp_path):
    mgr = RunManager(tmp_path / "runs")
    mgr.warm_up(apply_overrides(get_preset("demo"), TINY)).join(120)
    assert list((tmp_path / "runs").iterdir()) == []
    mgr.warm_up(apply_overrides(get_preset("demo"), TINY + ["model=tv-resnet18"])).join(120)   # cannot fit 8x8
    assert list((tmp_path / "runs").iterdir()) == []


def _initial_weights(mgr: RunManager, run_id: str) -> dict:
    """The untrained network a studio run started from (its init.pt), once the run has ended."""
    assert mgr.wait(run_id, WAIT_S)
    return torch.load(checkpoint_path(mgr.root / run_id, INIT), weights_only=True)["model"]


def test_builds_take_turns_so_every_start_has_the_weights_its_seed_gives_alone(tmp_path):
    """The warm-up and two sessions' clicks at once: every network is built from PyTorch's one global
    generator, so builds at the same time interleave their draws (6 of 10 such builds differed before the
    manager built one at a time). The first start of the warm config takes the warm-up's network."""
    torch.set_num_threads(1)
    cfg = apply_overrides(get_preset("demo"), TINY)
    alone = Run(cfg, tmp_path / "alone")
    alone.prepare()
    expected = alone.net.model.state_dict()
    mgr = RunManager(tmp_path / "runs")
    warm = mgr.warm_up(cfg)
    started: list[str] = []
    clicks = [threading.Thread(target=lambda: started.append(mgr.start(cfg))) for _ in range(2)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join(WAIT_S)
    assert len(started) == 2
    for run_id in started:
        weights = _initial_weights(mgr, run_id)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in expected), run_id
    warm.join(WAIT_S)
    assert mgr._warm is None                    # the starts waited for the warm-up, and one took its network
    mgr.shutdown()
