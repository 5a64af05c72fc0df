"""The lesson's moments: exact on plain rows, and a real lesson run that pauses itself at each one."""
import threading
import time

import pytest

from osp_engine.interfaces.presets import get_preset
from osp_engine.method.config import ConfigError
from osp_engine.method.moments import moment_epochs, reached
from osp_engine.running.branch import INIT
from osp_engine.running.manager import RunManager


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
    manager._runs[run_id][1].join(timeout=60)
    info = reader.info()
    assert info["status"] == "finished", info["error"]
    assert paused_at == ["searched", "regularizer", "stability", "pruned"]
    stored = {e["data"]["moment"]: e["epoch"] for e in reader.events() if e["kind"] == "moment"}
    assert stored == moment_epochs(reader.epochs(), info["t_star"], info["threshold"])
    assert stored["pruned"] == info["t_star"]
    # the branch the lesson ends on: pruning at initialization, from the kept untrained network
    branch_id = manager.branch(run_id, INIT)
    manager._runs[branch_id][1].join(timeout=600)
    branch = manager.reader(branch_id).summary()
    assert (branch["status"], branch["t_star"], branch["prune_reason"]) == ("finished", INIT, "manual")
    assert [e["kind"] for e in manager.reader(branch_id).events()].count("moment") == 0    # no lesson pauses
    assert manager.reader(branch_id).last_event("moment") is None
    manager.shutdown()
