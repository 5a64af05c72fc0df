"""The six official behaviours, each on a hand-made case, in both variants; then the demo in both.

docs/method.md, 'Official behaviour, exactly', numbers them 1-6 as the tests below do.
"""
import math

import numpy as np
import pytest
import torch

from osp_engine import get_preset
from osp_engine.method.config import ConfigError, apply_overrides
from osp_engine.method.costs import cost_table
from osp_engine.method.probe import build_cost_model
from osp_engine.method.groups import build_groups, find_classifier
from osp_engine.method.graph import build_graph
from osp_engine.running.run import Run
from osp_engine.method.schedule import fixed_sl_start, learning_rate, reg_strength, schedule_epoch, shrink_lr
from osp_engine.method.selection import SEARCHES, protected_mask
from osp_engine.storage.reader import RunReader
from test_math import TwoConv

VARIANTS = ("official", "corrected")


def _cfg(variant, *pairs):
    return apply_overrides(get_preset("cifar10-resnet56"), [f"variant={variant}", *pairs])


# 1. the cost table shifted by one group ---------------------------------------------------------------
def test_1_cost_table_is_shifted_by_one_group_in_torch_pruning_order():
    m = TwoConv().eval()                        # c1 (2 ch) -> bn -> c2 (3 ch) -> mean -> fc (4 classes)
    x = torch.zeros(1, 1, 2, 2)
    graph = build_graph(m, x)
    groups = build_groups(m, graph, find_classifier(m, 4))
    cost = build_cost_model(m, groups, x)
    # per channel, at 2x2: c1 = conv 4 + BN 2*4 + c2's input slice 3*4 = 24; c2 = 2*4 + fc's input 4 = 12
    assert cost.cost_per_channel().tolist() == [24.0, 12.0]
    assert [g.tp_rank for g in groups] == [1, 0]          # Torch-Pruning lists fc, c2, c1 (from the output)
    official, pi = cost_table(m, groups, cost, x, "official")
    assert official.tolist() == [12.0, 4.0]               # c1 gets c2's cost; c2 the classifier's 3 + bias
    assert pi.tolist() == [math.exp(12e-6) / (math.exp(4e-6) + math.exp(12e-6)),
                           math.exp(4e-6) / (math.exp(4e-6) + math.exp(12e-6))]
    corrected, _ = cost_table(m, groups, cost, x, "corrected")
    assert corrected.tolist() == [24.0, 12.0]
    assert [g.listed_root for g in groups] == ["c2", "fc"]   # entry tp_rank of that list: whose cost each gets


# 2. the search's stop rule, and ties at the probe ------------------------------------------------------
def test_2_search_stops_at_first_probe_within_tolerance_else_keeps_the_last():
    scores = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    red = {n: n / 10 for n in range(8)}                   # pruning n of them removes n/10 of the FLOPs
    probes = []

    def reduction(n):
        probes.append(n)
        return red[n]

    # target 0.35: probe idx 3 -> n 4 (0.4 > t), idx 1 (score 2, tied with idx 2) -> n 3 (0.3 <= t),
    # idx 2 -> n 3 again: the space is empty, the LAST probe stays although 0.4 is as near
    assert SEARCHES["official"](scores, reduction, 0.35) == 3 and probes == [4, 3, 3]
    # the first probe within 5e-4 stops the search at once
    probes.clear()
    assert SEARCHES["official"](scores, reduction, 0.4004) == 4 and probes == [4]
    # a target beyond every probe keeps the last one, which prunes everything
    assert SEARCHES["official"](scores, reduction, 0.95) == 7
    # corrected: the prefix nearest the target; ties at the cut may split (n = 2 takes one of the 2s)
    assert SEARCHES["corrected"](scores, lambda n: red[n], 0.21) == 2
    # official for 0.21: probes n = 4, 3, 1 and keeps the last, 0.1, though 0.2 and 0.3 are nearer
    assert SEARCHES["official"](scores, lambda n: red[n], 0.21) == 1
    assert SEARCHES["official"](np.array([]), lambda n: 0.0, 0.5) == 0     # nothing to probe


# 3. floor ties ------------------------------------------------------------------------------------------
def test_3_floor_protects_every_channel_tied_with_the_kth_score():
    scores = np.array([0.5, 3.0, 1.0, 3.0, 0.2, 2.0, 0.1, 0.3])       # C = 8: n_protect = 8 - 5 = 3
    assert protected_mask(scores, 0.75, 1.0, "official").tolist() == [0, 1, 0, 1, 0, 1, 0, 0]
    tied = np.array([0.5, 3.0, 2.0, 3.0, 0.2, 2.0, 0.1, 0.3])         # the 3rd largest (2.0) is tied
    assert protected_mask(tied, 0.75, 1.0, "official").tolist() == [0, 1, 1, 1, 0, 1, 0, 0]   # 4 protected
    assert protected_mask(tied, 0.75, 1.0, "corrected").tolist() == [0, 1, 1, 1, 0, 0, 0, 0]  # lower id wins


# 4. the regulariser's growth -----------------------------------------------------------------------------
@pytest.mark.parametrize("interval,official,corrected", [
    (1, [0, 0, 2, 3, 4, 5, 6, 7], [0, 0, 1, 2, 3, 4, 5, 6]),
    (3, [0, 0, 1, 2, 2, 2, 3, 3], [0, 0, 1, 1, 1, 2, 2, 2]),
])
def test_4_regulariser_strength_per_epoch(interval, official, corrected):
    """sl_start 30 -> the shrink acts from epoch 32; reg = reg_delta = 1e-4, so reg / 1e-4 is printed."""
    for variant, expected in (("official", official), ("corrected", corrected)):
        cfg = _cfg(variant, f"reg_interval={interval}")
        t0 = fixed_sl_start(cfg)
        got = [round(reg_strength(cfg, e, t0) / 1e-4) for e in range(30, 38)]
        assert got == expected, variant


# 5. the shrink's learning rate ---------------------------------------------------------------------------
def test_5_shrink_uses_the_next_iterations_lr_in_official():
    n = 391                                                # milestone 0.3 * 300 = epoch 90
    for variant, before_milestone in (("official", 0.02), ("corrected", 0.1)):
        cfg = _cfg(variant)
        assert shrink_lr(cfg, 89, n - 1, n) == pytest.approx(before_milestone)   # the step at 89's end
        assert shrink_lr(cfg, 89, 10, n) == pytest.approx(0.1)
        assert shrink_lr(cfg, 90, 0, n) == pytest.approx(0.02)


# 6. the schedule after the prune -------------------------------------------------------------------------
def test_6_fine_tuning_trains_one_epoch_behind_in_official():
    for variant, lag in (("official", 1), ("corrected", 0)):
        cfg = _cfg(variant)
        assert schedule_epoch(cfg, 95, pruned=False) == 95
        assert schedule_epoch(cfg, 95, pruned=True) == 95 - lag
        # pruned at t* = 179: epoch 180 is past the 0.6 * 300 milestone; official still trains at 0.02
        assert learning_rate(cfg, schedule_epoch(cfg, 180, True), 0, 391) == pytest.approx(
            0.02 if variant == "official" else 0.004)


def test_variant_is_validated_and_defaults_to_official_everywhere():
    from osp_engine.interfaces.presets import PRESETS

    assert all(get_preset(name).variant == "official" for name in PRESETS)
    with pytest.raises(ConfigError, match="unknown variant 'fixed'"):
        _cfg("fixed").validate()


# the whole demo, in both variants --------------------------------------------------------------------------
pytestmark = pytest.mark.xdist_group("variants")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    runs = {}
    for variant in VARIANTS:
        run = Run(apply_overrides(get_preset("demo"), [f"variant={variant}"]), root)
        assert run.execute() == "finished", run.error
        runs[variant] = RunReader(run.dir)
    return runs


@pytest.mark.parametrize("variant", VARIANTS)
def test_demo_prunes_stable_near_its_target_in_both_variants(demo_runs, variant):
    s = demo_runs[variant].summary()
    assert s["variant"] == variant and s["prune_reason"] in ("stable", "sl_end") and s["search"] == "fill"
    assert abs(s["flops_reduction"] - 0.5) <= 0.005 and s["target_miss"] is None      # the fill search: on target
    assert s["final_acc"] > 90.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_demo_schedules_follow_the_variant(demo_runs, variant):
    r = demo_runs[variant]
    rows, t = r.epochs(), r.summary()["t_star"]
    cfg = apply_overrides(get_preset("demo"), [f"variant={variant}"])
    n = 23                                                 # digits: 1,438 / 64 batches
    lag = 1 if variant == "official" else 0
    assert [row["lr"] for row in rows] == pytest.approx(
        [learning_rate(cfg, e - (lag if e > t else 0), 0, n) for e in range(cfg.epochs)])
    t0 = fixed_sl_start(cfg)                               # demo: sl_start 4 -> 6, reg = reg_delta = 0.01
    steps = [round(row["reg"] / 0.01) for row in rows[t0 - 1:t + 1]]
    assert steps == [0] + [e - t0 + 1 + lag for e in range(t0, t + 1)]     # official: one step ahead
    assert all(row["reg"] == 0.0 for row in rows[t + 1:])
