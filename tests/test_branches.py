"""The prune epoch with its consequences in view: the candidate's own accuracy, branches, sweeps.

Real tiny demo runs throughout: one parent that keeps its checkpoints, its branches, a run that pressed
"Prune now" at the same epoch, and a target sweep.
"""
import dataclasses
import json
import sqlite3

import pytest
import torch
from streamlit.testing.v1 import AppTest

from osp_engine import ConfigError, get_preset
from osp_engine.running.branch import branch_epochs, branches_of, checkpoint_path, sweep_epochs
from osp_engine.interfaces.cli import main as cli
from osp_engine.method.config import apply_overrides
from osp_engine.method.costcheck import pruned_copy
from osp_engine.running.data import load_dataset
from osp_engine.running.manager import RunManager
from osp_engine.models import build_model
from osp_engine.method.network import prepare_network
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader
from osp_engine.storage.sweep import indicator_picks, sweep_rows, target_sweep, training_cost
from osp_engine.running.train import evaluate

TIMINGS = ("epoch_seconds", "cand_seconds")


pytestmark = pytest.mark.xdist_group("branches")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """(runs folder, the demo parent, its branches at three epochs made by the CLI's sweep)."""
    root = tmp_path_factory.mktemp("family")
    parent = Run(dataclasses.replace(get_preset("demo"), candidate_every=1), root)
    assert parent.execute() == "finished", parent.error
    return root, parent


def _spread(parent, n: int) -> list[int]:
    """n searched epochs spread over those the parent kept before its t*, wherever its training put t*."""
    kept = [e for e in branch_epochs(parent.dir) if e >= 0]
    assert len(kept) >= n, kept
    return sorted({kept[(len(kept) - 1) * i // (n - 1)] for i in range(n)}) if n > 1 else [kept[len(kept) // 2]]


def _rows(reader, drop=TIMINGS):
    return [{k: v for k, v in r.items() if k not in drop} for r in reader.epochs()]


def _table(run_dir, table):
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY epoch, gid").fetchall()
    finally:
        con.close()


def test_candidate_accuracy_is_the_physically_pruned_models(family):
    """At epoch k, from the kept checkpoint: the model pruned physically with M_k, evaluated with no
    further training, scores exactly the stored candidate accuracy; at t* it is the prune's own figure."""
    root, parent = family
    reader = RunReader(parent.dir)
    rows = {r["epoch"]: r for r in reader.epochs()}
    cfg = parent.cfg
    _, val, info = load_dataset(cfg)
    for k in _spread(parent, 2):
        ckpt = torch.load(checkpoint_path(parent.dir, k), map_location="cpu", weights_only=True)
        model = build_model(cfg.model, info.num_classes, info.image_size, info.in_channels)
        model.load_state_dict(ckpt["model"])
        net = prepare_network(model, info.num_classes, torch.zeros(1, *info.input_shape), cfg.variant, 0)
        twin = pruned_copy(net.model, net.groups, reader.masks(k), net.example)
        assert sum(p.numel() for p in twin.parameters()) < sum(p.numel() for p in model.parameters())
        acc = evaluate(twin, val, torch.device("cpu"), False, False).acc
        assert acc == pytest.approx(rows[k]["cand_acc"], abs=1e-9)
        assert rows[k]["cand_acc"] != pytest.approx(rows[k]["val_acc"])        # not the dense model's figure
    t_star = reader.info()["t_star"]
    prune = next(e for e in reader.events() if e["kind"] == "prune")
    assert rows[t_star]["cand_acc"] == pytest.approx(prune["data"]["acc_after"], abs=1e-9)
    assert rows[0]["cand_acc"] is None and rows[t_star + 1]["cand_acc"] is None   # unsearched, then pruned
    assert all(rows[e]["cand_seconds"] > 0 for e in range(1, t_star + 1))


def test_candidate_evaluation_changes_nothing_else(family, tmp_path):
    """The default evaluates every candidate; switched off, the run is the same to the last value."""
    root, parent = family
    off = Run(dataclasses.replace(parent.cfg, candidate_every=0, keep_checkpoints=0), tmp_path)
    assert off.execute() == "finished"
    assert _rows(RunReader(off.dir), TIMINGS + ("cand_acc",)) == _rows(RunReader(parent.dir), TIMINGS + ("cand_acc",))
    assert all(r["cand_acc"] is None for r in RunReader(off.dir).epochs())
    assert _table(off.dir, "masks") == _table(parent.dir, "masks")
    short = ["epochs=12", "sl_start=2", "sl_end=8", "speed_budget_s=0", "keep_checkpoints=0"]
    assert get_preset("demo").candidate_every == 2            # the demo thins it: every other searched epoch
    thinned = Run(apply_overrides(get_preset("demo"), short), tmp_path)
    assert thinned.execute() == "finished"
    measured = [r["epoch"] for r in RunReader(thinned.dir).epochs() if r["cand_acc"] is not None]
    assert measured == list(range(1, RunReader(thinned.dir).info()["t_star"] + 1, 2))
    thinned = Run(apply_overrides(get_preset("demo"), short + ["candidate_every=3"]), tmp_path)
    assert thinned.execute() == "finished"
    measured = [r["epoch"] for r in RunReader(thinned.dir).epochs() if r["cand_acc"] is not None]
    t_star = RunReader(thinned.dir).info()["t_star"]
    assert measured == list(range(1, t_star + 1, 3))           # every 3rd searched epoch from monitor_start


def test_a_branch_is_the_run_that_pressed_prune_now_at_that_epoch(family, tmp_path):
    root, parent = family
    (k,) = _spread(parent, 1)
    branch = Run.branch(parent.dir, k, tmp_path)
    assert branch.execute() == "finished", branch.error
    pressed = Run(dataclasses.replace(parent.cfg, keep_checkpoints=0), tmp_path)
    pressed.execute(log=lambda line: line.startswith(f"epoch {k - 1:>3} ") and pressed.commands.prune_now())
    a, b = RunReader(branch.dir), RunReader(pressed.dir)
    assert (a.info()["t_star"], a.info()["prune_reason"]) == (b.info()["t_star"], b.info()["prune_reason"]) == (k, "manual")
    assert _rows(a) == _rows(b) and len(_rows(a)) == parent.cfg.epochs
    for table in ("masks", "saliency"):
        assert _table(branch.dir, table) == _table(pressed.dir, table)
    ma = torch.load(branch.dir / "model.pt", weights_only=True)["state_dict"]
    mb = torch.load(pressed.dir / "model.pt", weights_only=True)["state_dict"]
    assert ma.keys() == mb.keys() and all(torch.equal(ma[n], mb[n]) for n in ma)
    cfg = a.info()["config"]
    assert (cfg["parent"], cfg["branch_epoch"]) == (parent.run_id, k)
    started = [e for e in a.events() if e["kind"] == "started"]
    assert len(started) == 1 and started[0]["data"]["parent"] == parent.run_id and a.info()["display_status"] == "finished"


def test_a_sweep_of_three_branches_records_parents_children_and_a_summary(family, capsys):
    root, parent = family
    three = _spread(parent, 3)
    before = [b for b in branches_of(root, parent.run_id) if b.info()["config"]["branch_epoch"] not in three]
    assert cli(["sweep", parent.run_id, "--runs-dir", str(root), "--epochs", ",".join(map(str, three))]) == 0
    out = capsys.readouterr().out
    children = [b for b in branches_of(root, parent.run_id) if b.info()["config"]["branch_epoch"] in three]
    assert [b.info()["config"]["branch_epoch"] for b in children] == three
    assert all(b.info()["t_star"] == b.info()["config"]["branch_epoch"] for b in children)
    rows = sweep_rows(RunReader(parent.dir), children)
    parent_rows = {r["epoch"]: r for r in RunReader(parent.dir).epochs()}
    for r, b in zip(rows, children):
        assert r["status"] == "finished" and r["final_acc"] == b.summary()["final_acc"]
        searched = sum(parent_rows[e]["psi_raw"] is not None for e in range(r["epoch"] + 1))
        psi = parent_rows[r["epoch"]]["psi_smoothed"] if searched >= 3 else None    # M_t against M_t-2
        assert r["psi"] == psi and r["cand_acc"] == parent_rows[r["epoch"]]["cand_acc"]
        epochs = b.epochs()
        assert r["seconds"] == pytest.approx(sum(e["epoch_seconds"] for e in epochs))
        assert r["dense_epochs"] == pytest.approx(sum(e["model_flops"] / e["dense_flops"] for e in epochs))
    assert rows[0]["dense_epochs"] < rows[1]["dense_epochs"] < rows[2]["dense_epochs"] < parent.cfg.epochs
    picks = indicator_picks(RunReader(parent.dir).epochs(), 0.999, 0.1)
    assert f"PSI epoch {picks['psi']}, Early-Bird epoch {picks['early_bird']}" in out
    assert all(f"{e:>5} " in out for e in three)
    # a second sweep reuses the finished branches
    assert cli(["sweep", parent.run_id, "--runs-dir", str(root), "--epochs", ",".join(map(str, three[:2]))]) == 0
    assert "(2 already branched)" in capsys.readouterr().out
    assert len(branches_of(root, parent.run_id)) == len(children) + len(before)


def test_branches_refuse_what_they_cannot_do(family, capsys):
    root, parent = family
    kept = branch_epochs(parent.dir)
    t_star = RunReader(parent.dir).info()["t_star"]
    assert kept == [-1] + list(range(1, t_star))                # the untrained network, searched epochs before t*
    with pytest.raises(ConfigError, match=rf"no checkpoint of epoch 20 .*kept: init, 1-{t_star - 1}\)"):
        Run.branch(parent.dir, 20)
    assert cli(["branch", parent.run_id, "--runs-dir", str(root), "--epoch", "0"]) == 2
    assert "no checkpoint of epoch 0" in capsys.readouterr().err
    child = branches_of(root, parent.run_id)[0]
    with pytest.raises(ConfigError, match="is itself a branch"):
        Run.branch(child.dir, 3)
    assert sweep_epochs([2, 3, 4, 5, 6, 7], every=2, first=3, last=6) == [3, 5]
    with pytest.raises(ConfigError, match=r"no checkpoint of epoch\(s\) \[30\]"):
        sweep_epochs([1, 2], epochs=[2, 30])


def test_pruning_at_initialization_is_a_branch_point(family, capsys):
    """`branch --epoch init`: the untrained network (kept before epoch 0) pruned with the sub-network
    searched on its own weights, then the whole schedule trained pruned."""
    from osp_engine.method import saliency as sal
    from osp_engine.method.selection import select

    root, parent = family
    cfg = parent.cfg
    _, _, info = load_dataset(cfg)
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg.model, info.num_classes, info.image_size, info.in_channels)
    kept = torch.load(checkpoint_path(parent.dir, -1), map_location="cpu", weights_only=True)
    assert kept["epoch"] == -1 and all(torch.equal(kept["model"][n], t) for n, t in untrained.state_dict().items())
    assert cli(["branch", parent.run_id, "--epoch", "init", "--runs-dir", str(root)]) == 0
    assert "t* = init (manual)" in capsys.readouterr().out
    (branch,) = [b for b in branches_of(root, parent.run_id) if b.info()["config"]["branch_epoch"] == -1]
    rows, s = branch.epochs(), branch.summary()
    assert (s["t_star"], s["prune_reason"], s["status"]) == (-1, "manual", "finished")
    assert [r["epoch"] for r in rows] == list(range(cfg.epochs)) and {r["phase"] for r in rows} == {"pruned"}
    net = prepare_network(untrained, info.num_classes, torch.zeros(1, *info.input_shape), cfg.variant, 0)
    chosen = select(sal.weighted_saliency(sal.all_saliency(net.groups), net.pi), net.cost, cfg.target, cfg.l_max,
                    cfg.l_k, cfg.variant, cfg.round_to, cfg.search)
    assert rows[0]["model_flops"] == s["final_flops"] == chosen.flops and s["final_params"] == chosen.params
    assert [e["message"] for e in branch.events() if e["kind"] == "prune"][0].startswith("pruned at initialization")
    assert sweep_rows(RunReader(parent.dir), [branch])[0]["epoch"] == -1


def test_a_sweep_queues_its_branches_behind_one_another(family):
    """The studio's Sweep: every branch waits for the device behind the one training (the queue itself,
    never two at once, is test_sharing.py's); queued branches cancelled there never get a folder."""
    root, parent = family
    manager = RunManager(root, per_device=1)
    first, *queued = manager.sweep(parent.run_id, _spread(parent, 3))
    assert [q[0] for q in manager.queued()] == queued and manager.owned(first) is not None
    for run_id in queued:
        manager.cancel_queued(run_id)
    assert manager.wait(first, timeout=300)
    assert manager.reader(first).info()["status"] == "finished" and manager.queued() == []
    assert not any((root / run_id).exists() for run_id in queued)
    manager.shutdown()


def test_target_sweep_and_its_trade_off_curve(tmp_path, capsys, monkeypatch):
    settings = ["--set", "epochs=12", "--set", "sl_start=2", "--set", "sl_end=8", "--set", "keep_checkpoints=0"]
    assert cli(["sweep-targets", "--preset", "demo", "--targets", "0.3,0.6", "--runs-dir", str(tmp_path), *settings]) == 0
    out = capsys.readouterr().out
    (label,) = {RunReader(p).info()["config"]["sweep"] for p in tmp_path.iterdir()}
    sweep = target_sweep(tmp_path, label)
    assert [p[0] for p in sweep["points"]] == [0.3, 0.6] and sweep["baseline"] is not None
    assert sweep["points"][0][1] == pytest.approx(0.3, abs=0.03) and sweep["points"][1][1] == pytest.approx(0.6, abs=0.03)
    assert "dense baseline (same schedule)" in out and len(list(tmp_path.iterdir())) == 3
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path))
    at = AppTest.from_string("from osp_studio.tradeoff import render\nrender()\n", default_timeout=60).run()
    assert not at.exception and at.multiselect(key="tradeoff_sweeps").value == [label]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    curve = next(t for t in fig["data"] if t.get("name") == f"target sweep {label}")
    assert curve["y"] == [p[2] for p in sweep["points"]]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [sweep["baseline"]]
    assert cli(["sweep-targets", "--preset", "demo", "--targets", "0.3,x"]) == 2


def test_training_cost_counts_seconds_and_dense_epochs():
    rows = [dict(epoch_seconds=1.0, model_flops=100, dense_flops=100), dict(epoch_seconds=0.5, model_flops=40,
                                                                              dense_flops=100)]
    assert training_cost(rows) == dict(seconds=1.5, dense_epochs=1.4)
    assert indicator_picks([dict(epoch=1, psi_smoothed=None, eb_distance=0.3), dict(epoch=2, psi_smoothed=0.9991,
                                                                                     eb_distance=0.05)], 0.999, 0.1) \
        == dict(psi=2, early_bird=2)


def test_the_branches_page_draws_the_sweep(family, monkeypatch):
    root, parent = family
    if len(branches_of(root, parent.run_id)) < 3:
        assert cli(["sweep", parent.run_id, "--runs-dir", str(root), "--epochs", ",".join(map(str, _spread(parent, 3)))]) == 0
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    at = AppTest.from_string("from osp_studio.branches import render\nrender()\n", default_timeout=60)
    at.session_state["run_id"] = branches_of(root, parent.run_id)[0].run_id    # a branch picked: its parent's page
    at.run()
    assert not at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    final = fig["data"][0]
    rows = sweep_rows(RunReader(parent.dir), branches_of(root, parent.run_id))
    assert final["x"] == [r["epoch"] for r in rows] and final["y"] == [r["final_acc"] for r in rows]
    names = [t.get("name") for t in fig["data"]]
    picks = indicator_picks(RunReader(parent.dir).epochs(), 0.999, 0.1)
    assert f"PSI picks epoch {picks['psi']}" in names and "Early-Bird distance" in names
    assert fig["layout"]["xaxis3"]["title"]["text"] == "prune epoch (counted from 0)"
    table = at.dataframe[0].value
    assert table["prune epoch"].tolist() == [r["epoch"] for r in rows]


def test_the_runs_page_shows_each_branch_after_its_parent(family, monkeypatch):
    root, parent = family
    if not branches_of(root, parent.run_id):
        assert cli(["sweep", parent.run_id, "--runs-dir", str(root), "--epochs", ",".join(map(str, _spread(parent, 2)))]) == 0
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60)
    at.session_state["runs_compact"] = False
    at.run()
    titles = [m.value for m in at.markdown if m.value.startswith("**digits\\-resnet8")]   # markdown-escaped
    order = [t.split("  \n")[1] for t in titles]
    children = [b.run_id for b in branches_of(root, parent.run_id)]
    at_parent = order.index(parent.run_id)
    assert order[at_parent + 1:at_parent + 1 + len(children)] == children      # right under it, by prune epoch
    shown = parent.run_id.replace("-", "\\-")                     # as plain() escapes it for markdown
    assert all(f"branch of {shown}, pruned at epoch" in t for t in titles if t.split("  \n")[1] in children)
