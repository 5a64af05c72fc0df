"""A real tiny run on the digits: events, one terminal status, the prune, commands, live readers."""
import json
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch_pruning as tp

from osp_engine import get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.storage.export import load_pruned
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader, list_runs

TINY = ["epochs=16", "sl_start=2", "sl_end=10", "reg=0.02", "reg_delta=0.02"]


def test_finished_run_events_and_store(finished_run):
    r = RunReader(finished_run.dir)
    kinds = [e["kind"] for e in r.events()]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert [k for k in kinds if k in ("finished", "failed", "cancelled")] == ["finished"]
    assert kinds.index("prune") < kinds.index("exported") < kinds.index("finished")
    assert "phase" in kinds
    s = r.summary()
    assert s["status"] == "finished" and s["epochs"] == 16
    assert s["prune_reason"] in ("stable", "sl_end") and s["t_star"] <= 11
    assert abs(s["flops_reduction"] - 0.5) <= 0.005
    rows = r.epochs()
    assert [row["epoch"] for row in rows] == list(range(16))
    assert rows[0]["psi_smoothed"] is None and rows[1]["psi_smoothed"] == 0.0
    assert all(row["phase"] == "pruned" for row in rows[s["t_star"] + 1:])
    assert all(row["model_flops"] < row["dense_flops"] for row in rows[s["t_star"] + 1:])
    # masks, saliency and groups for every searched epoch
    groups = r.groups()
    assert len(groups) == 6                   # digits-resnet8: 3 stages of one block: 3 inner + 3 residual
    epochs, kept = r.mask_matrix()
    assert epochs == list(range(1, s["t_star"] + 1))
    assert kept.shape == (len(epochs), sum(g["size"] for g in groups))
    for i in (0, len(epochs) // 2, len(epochs) - 1):                 # the bulk unpack equals the per-epoch read
        assert np.array_equal(kept[i], np.concatenate(r.masks(epochs[i])))
    assert 0 < kept.sum() < kept.size
    assert [len(v) for v in r.saliency(epochs[-1])] == [g["size"] for g in groups]


def test_lr_schedule_continues_across_the_prune(finished_run):
    from osp_engine.method.schedule import learning_rate

    r = RunReader(finished_run.dir)
    t = r.summary()["t_star"]
    rows = r.epochs()
    cfg = finished_run.cfg
    n = 23                                   # digits: 1,438 / 64 batches
    assert cfg.variant == "official"         # fine-tuning one epoch behind (tests/test_variants.py: both)
    assert [row["lr"] for row in rows] == pytest.approx([learning_rate(cfg, e - (e > t), 0, n) for e in range(16)])
    assert rows[t + 1]["lr"] == pytest.approx(learning_rate(cfg, t, 0, n))


def test_exported_model_is_smaller_and_runs(finished_run):
    model = load_pruned(finished_run.dir / "model.pt")
    dense = get_preset("demo")
    from osp_engine.models import build_model

    x = torch.zeros(2, 1, 8, 8)
    f_pruned, p_pruned = tp.utils.count_ops_and_params(model, x[:1])
    f_dense, p_dense = tp.utils.count_ops_and_params(build_model(dense.model, 10, 8, 1), x[:1])
    s = RunReader(finished_run.dir).summary()
    assert int(f_pruned) == s["final_flops"] and int(p_pruned) == s["final_params"]
    assert p_pruned < p_dense and f_pruned < 0.51 * f_dense
    assert model(x).shape == (2, 10)
    structure = json.loads((finished_run.dir / "structure.json").read_text())
    assert structure["layers"]["conv_1_3x3.weight"][0] < 32


def _start(cfg_pairs, tmp_path):
    run = Run(apply_overrides(get_preset("demo"), cfg_pairs), tmp_path)
    thread = threading.Thread(target=run.execute, daemon=True)
    thread.start()
    return run, thread


def _wait_epochs(run, n, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if (run.dir / "run.db").exists() and RunReader(run.dir).last_epoch() >= n - 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach {n} epochs")


def test_cancel(tmp_path):
    run, thread = _start(TINY + ["epochs=30"], tmp_path)
    _wait_epochs(run, 2)
    run.commands.cancel()
    thread.join(30)
    s = RunReader(run.dir).summary()
    assert s["status"] == "cancelled" and 2 <= s["epochs"] < 30
    assert RunReader(run.dir).events()[-1]["kind"] == "cancelled"


def test_pause_resume_and_prune_now(tmp_path):
    run, thread = _start(TINY + ["threshold=1.0", "sl_end=13"], tmp_path)
    run.commands.set_auto_prune(False)
    _wait_epochs(run, 2)
    run.commands.pause()
    time.sleep(1.0)
    frozen = RunReader(run.dir).last_epoch()
    time.sleep(1.5)
    assert RunReader(run.dir).last_epoch() == frozen          # nothing trains while paused
    run.commands.prune_now()
    run.commands.resume()
    thread.join(60)
    r = RunReader(run.dir)
    s = r.summary()
    assert s["status"] == "finished" and s["prune_reason"] == "manual"
    assert frozen <= s["t_star"] <= frozen + 1
    kinds = [e["kind"] for e in r.events()]
    assert "paused" in kinds and "resumed" in kinds
    assert {e["data"].get("command") for e in r.events() if e["kind"] == "command"} >= {"pause", "prune_now", "resume"}


def test_second_process_reads_while_running(tmp_path):
    run, thread = _start(TINY, tmp_path)
    _wait_epochs(run, 1)
    code = ("import sys, json; sys.path.insert(0, '.'); from osp_engine.storage.reader import RunReader;"
            f"r = RunReader({str(run.dir)!r}); print(json.dumps([r.info()['status'], r.last_epoch()]))")
    seen = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        seen.append(json.loads(out.stdout))
    thread.join(60)
    assert all(status in ("running", "finished") for status, _ in seen)
    assert seen[0][1] >= 0 and seen[-1][1] >= seen[0][1]


def test_readers_in_many_threads_while_two_runs_write(tmp_path):
    """Four reader threads poll both runs as the pages do, while the two runs write: no error, no lock."""
    runs = [_start(TINY + ["epochs=12", "sl_end=8", f"seed={s}"], tmp_path) for s in (1, 2)]
    for run, _ in runs:
        assert run.store_ready.wait(60)
    errors: list[str] = []
    seen: dict[tuple[int, str], list[int]] = {}

    def poll(i: int) -> None:
        while any(t.is_alive() for _, t in runs):
            for run, _ in runs:
                try:
                    r = RunReader(run.dir)
                    seen.setdefault((i, run.run_id), []).append(r.last_epoch())
                    r.summary()
                    epochs, kept = r.mask_matrix()
                    if epochs:
                        assert kept.shape[0] == len(epochs) and len(r.saliency(epochs[-1])) == len(r.groups())
                except Exception as e:  # noqa: BLE001 - every failure is collected and reported
                    errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)                                  # 50 polls a second each; the pages poll every 2 s

    readers = [threading.Thread(target=poll, args=(i,)) for i in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(120)
    assert errors == []
    assert all(run.status == "finished" for run, _ in runs)
    assert len(seen) == 8
    for history in seen.values():                             # each reader sees epochs arrive, never vanish
        assert history == sorted(history) and history[-1] >= 9 and len(set(history)) >= 3


def test_nan_loss_fails_and_keeps_epochs(tmp_path):
    run = Run(apply_overrides(get_preset("demo"), TINY + ["lr=1e30"]), tmp_path)
    assert run.execute() == "failed"
    r = RunReader(run.dir)
    info = r.info()
    assert info["status"] == "failed" and "NonFiniteLoss" in info["error"]
    assert r.events()[-1]["kind"] == "failed"
    assert [run_.run_id for run_ in list_runs(tmp_path)] == [run.run_id]


def test_stale_heartbeat_is_recognised(finished_run, tmp_path):
    import shutil
    import sqlite3

    copy = tmp_path / "copy"
    shutil.copytree(finished_run.dir, copy)
    con = sqlite3.connect(copy / "run.db")
    con.execute("UPDATE run SET status = 'running', heartbeat = 0")
    con.commit()
    con.close()
    info = RunReader(copy).info()
    assert info["stale"] and info["display_status"] == "stale"
    assert len(RunReader(copy).epochs()) == 16


def test_listing_skips_what_is_not_a_run(finished_run, tmp_path):
    shutil.copytree(finished_run.dir, tmp_path / "a-run")
    (tmp_path / ".probe-1234").write_text("")                  # a file
    (tmp_path / "notes").mkdir()                               # a folder without run.db
    (tmp_path / "half" / "run.db").mkdir(parents=True)        # run.db that is not a file
    assert [r.run_id for r in list_runs(tmp_path)] == ["a-run"]
    assert list_runs(tmp_path / "absent") == []


def test_the_studio_warm_up_takes_the_first_optimisers_import_off_the_first_epoch(tmp_path):
    """PyTorch's first optimiser imports torch._dynamo (seconds on 2 cores, before a run's first epoch):
    the studio's warm-up, started when its page first loads, makes one, writing nothing."""
    from conftest import ROOT

    code = ("import sys; from osp_engine import get_preset; from osp_engine.running.manager import RunManager; "
            f"m = RunManager({str(tmp_path)!r}); before = 'torch._dynamo' in sys.modules; "
            "m.warm_up(get_preset('demo')).join(); print(before, 'torch._dynamo' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert res.stdout.split() == ["False", "True"], res.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
