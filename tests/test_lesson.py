"""The lesson's moments: exact on plain rows, and a real lesson run that pauses itself at each one."""
import dataclasses
import threading
import time

import pytest

from osp_engine.interfaces.presets import get_preset
from osp_engine.method.config import ConfigError
from osp_engine.method.moments import moment_epochs, reached
from osp_engine.running.branch import INIT
from osp_engine.running.manager import RunManager
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader


def row(epoch, cand=None, reg=0.0, psi=None):
    return dict(epoch=epoch, cand_flops=cand, reg=reg, psi_smoothed=psi)


def test_moments_are_the_first_epoch_of_each_change():
    rows = [row(0), row(1, 50), row(2, 50, psi=0.2), row(3, 50, 0.01, 0.5), row(4, 50, 0.02, 0.9),
            row(5, 50, 0.02, 0.95), row(6, 50, 0.02, 0.999), row(7)]
    assert moment_epochs(rows, t_star=6, threshold=0.999) == dict(searched=1, regularizer=3, stability=4, pruned=6)
    assert reached(None, row(0, 50, 0.01, 0.95), True, 0.999) == ["searched", "regularizer", "stability", "pruned"]
    assert reached(row(4, 50, 0.02, 0.9), row(5, 50, 0.02, 0.95), False, 0.999) == []


def test_an_unknown_moment_is_refused_naming_the_known_ones():
    import dataclasses

    with pytest.raises(ConfigError, match=r"pause_at: unknown moment 'prune'.*searched, regularizer, stability, pruned"):
        dataclasses.replace(get_preset("demo"), pause_at="searched,prune").validate()


def test_a_lesson_run_pauses_itself_at_each_moment_and_continues(tmp_path):
    manager = RunManager(tmp_path, per_device=1)
    run_id = manager.start(get_preset("lesson"))
    reader = manager.reader(run_id)
    paused_at = []
    deadline = time.monotonic() + 600
    while reader.info()["status"] == "running" or not reader.info()["ended"]:
        assert time.monotonic() < deadline, "the lesson run did not finish"
        controls = manager.controls(run_id)
        moments = [e["data"]["moment"] for e in reader.events() if e["kind"] == "moment"]
        if controls is not None and controls["paused"] and len(moments) > len(paused_at):
            paused_at.append(moments[-1])
            assert reader.last_event("moment")["data"]["moment"] == moments[-1]     # what the panel reads
            last = reader.last_epoch()
            threading.Event().wait(0.3)                     # paused: no epoch is added meanwhile
            assert reader.last_epoch() == last
            manager.command(run_id, "resume")
        threading.Event().wait(0.05)
    assert manager.wait(run_id, timeout=60)
    info = reader.info()
    assert info["status"] == "finished", info["error"]
    assert paused_at == ["searched", "regularizer", "stability", "pruned"]
    stored = {e["data"]["moment"]: e["epoch"] for e in reader.events() if e["kind"] == "moment"}
    assert stored == moment_epochs(reader.epochs(), info["t_star"], info["threshold"])
    assert stored["pruned"] == info["t_star"]
    # the branch the lesson ends on: pruning at initialization, from the kept untrained network
    branch_id = manager.branch(run_id, INIT)
    assert manager.wait(branch_id, timeout=600)
    branch = manager.reader(branch_id).summary()
    assert (branch["status"], branch["t_star"], branch["prune_reason"]) == ("finished", INIT, "manual")
    assert [e["kind"] for e in manager.reader(branch_id).events()].count("moment") == 0    # no lesson pauses
    assert manager.reader(branch_id).last_event("moment") is None
    manager.shutdown()


def test_moments_reached_at_one_epoch_pause_one_at_a_time(tmp_path):
    """At threshold 0.1 the first search's smoothed PSI (0.0) is already 'near' it, and Prune now pressed
    before epoch 1 ends prunes there: searched, stability and pruned all fall on epoch 1, whatever the
    training. The run pauses three times, each pause naming the next moment in order."""
    cfg = dataclasses.replace(get_preset("lesson"), epochs=6, sl_start=1, sl_end=3, threshold=0.1,
                              pause_at="searched,stability,pruned", keep_checkpoints=0, speed_budget_s=0)
    run = Run(cfg, tmp_path)
    pressed = lambda line: line.startswith("epoch   0 ") and run.commands.prune_now()    # noqa: E731 - during epoch 1
    thread = threading.Thread(target=run.execute, kwargs=dict(log=pressed), daemon=True)
    thread.start()
    assert run.store_ready.wait(120)
    seen = []
    deadline = time.monotonic() + 300
    while thread.is_alive():
        assert time.monotonic() < deadline, "the run did not finish"
        moments = [e for e in RunReader(run.dir).events() if e["kind"] == "moment"]
        if run.commands.paused and len(moments) > len(seen):
            assert len(moments) == len(seen) + 1                      # one new moment per pause
            seen.append((moments[-1]["epoch"], moments[-1]["data"]["moment"]))
            run.commands.resume()
        threading.Event().wait(0.02)
    assert run.status == "finished", run.error
    assert seen == [(1, "searched"), (1, "stability"), (1, "pruned")]
    info = RunReader(run.dir).info()
    assert info["t_star"] == seen[-1][0] and info["prune_reason"] == "manual"     # pruned where Prune now was pressed
