"""Exact values for the pure functions: saliency, floors, weights, PSI, Early-Bird, schedules."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from osp_engine import get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.method.groups import build_groups, find_classifier
from osp_engine.method.graph import build_graph
from osp_engine.method.costs import flops_weights
from osp_engine.method.saliency import group_saliency, weighted_saliency
from osp_engine.method.schedule import auto_sl_start, fixed_sl_start, learning_rate, reg_strength
from osp_engine.method.selection import prunable_limit, protected_mask
from osp_engine.method.stability import early_bird_distance, early_bird_drawn, hamming, jaccard, psi_raw, smoothed


class TwoConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.c2 = nn.Conv2d(2, 3, 1, bias=False)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(self.c2(self.bn(self.c1(x))).mean((2, 3)))


def test_saliency_by_hand():
    m = TwoConv()
    with torch.no_grad():
        m.c1.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))       # producer fan-in n = 1
        m.bn.weight.copy_(torch.tensor([3.0, 0.5]))
        m.c2.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 1.0], [2.0, 2.0]]).view(3, 2, 1, 1))  # m = 3
    x = torch.zeros(1, 1, 2, 2)
    groups = build_groups(m, build_graph(m, x), find_classifier(m, 4))
    g = next(g for g in groups if g.name == "c1")
    s = group_saliency(g).numpy()
    # channel 0: producer 1^2/1, BN 3^2, consumer (1+4+4)/sqrt(3); mean over the 3 members
    assert s[0] == pytest.approx((1 + 9 + 9 / math.sqrt(3)) / 3, rel=1e-6)
    assert s[1] == pytest.approx((4 + 0.25 + 5 / math.sqrt(3)) / 3, rel=1e-6)


def test_floor_and_protection():
    assert prunable_limit(16, 0.75, 1.0) == pytest.approx(0.75 * (1 - math.exp(-16)))
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.5, 0.1, 6.0])
    for variant in ("official", "corrected"):             # no ties: the variants agree
        mask = protected_mask(scores, 0.75, 1.0, variant)  # C=8: int(8*0.74966)=5 may go, top 3 kept
        assert mask.tolist() == [True, False, False, False, True, False, False, True]
        assert protected_mask(np.array([1.0]), 0.75, 1.0, variant).tolist() == [True]


def test_flops_weights_and_weighting():
    pi = flops_weights(np.array([1e6, 2e6, 0.0]), np.array([2, 0, 1]))
    e = np.exp([1.0, 2.0, 0.0])
    assert pi == pytest.approx(e / e.sum())
    # summed in Torch-Pruning's order (ranks 2, 0, 1 -> e[1] + e[2] + e[0]), as the official code does
    assert pi[0] == math.exp(1.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(1.0))
    assert flops_weights(np.array([8e8, 0.0]), np.array([0, 1])) == pytest.approx([1.0, 0.0])   # no overflow
    w = weighted_saliency([np.array([2.0, 4.0])], np.array([0.25]))
    assert w[0].tolist() == [1.5, 3.0]
    # the product is rounded to float32, like the official float32 tensor times a Python float
    w = weighted_saliency([np.array([0.1])], np.array([1 / 3]))
    assert w[0][0] == float(np.float32(0.1) * np.float32(2 / 3)) != 0.1 * (2 / 3)


def _m(*groups):
    return [np.array(g, dtype=bool) for g in groups]


def test_psi_on_hand_made_masks():
    a = _m([1, 1, 0, 0], [1, 0])
    b = _m([1, 0, 1, 0], [1, 0])
    assert jaccard(a, b) == pytest.approx((1 / 3 + 1.0) / 2)
    history = [a, b]
    assert psi_raw(history) == 0.0                         # fewer than three sub-networks
    history.append(_m([1, 1, 1, 0], [1, 1]))
    assert psi_raw(history) == pytest.approx((2 / 3 + 1 / 2) / 2)   # newest vs two back (a)
    assert smoothed([0.0, 0.0, 0.9]) == pytest.approx(0.3)
    assert smoothed([0.5, 0.8, 0.9, 1.0]) == pytest.approx(0.9)


def test_early_bird_on_hand_made_masks():
    base = _m([1, 1, 1, 1, 1], [1, 1, 1, 1, 1])
    flip1 = _m([0, 1, 1, 1, 1], [1, 1, 1, 1, 1])
    assert hamming(base, flip1) == pytest.approx(0.1)
    history = [base, base, flip1, base]
    assert early_bird_distance(history) is None            # needs the newest plus 4 previous
    history.append(base)
    assert early_bird_distance(history) == pytest.approx(0.1)
    assert early_bird_drawn(0.1, 0.1) and not early_bird_drawn(0.11, 0.1) and not early_bird_drawn(None, 0.1)


def test_lr_schedule_multistep_per_iteration_and_cosine():
    cfg = get_preset("cifar10-resnet56")                   # T=300, milestones at 90/180/240/270
    assert learning_rate(cfg, 0, 0, 391) == pytest.approx(0.1)
    assert learning_rate(cfg, 89, 390, 391) == pytest.approx(0.1)
    assert learning_rate(cfg, 90, 0, 391) == pytest.approx(0.02)
    assert learning_rate(cfg, 270, 5, 391) == pytest.approx(0.1 * 0.2 ** 4)
    img = get_preset("imagenet-resnet18")
    assert learning_rate(img, 65, 0, 100) == pytest.approx(0.05)
    assert learning_rate(img, 32, 50, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi * 32.5 / 130)))


def test_regulariser_schedule():
    cfg = apply_overrides(get_preset("cifar10-resnet56"), ["variant=corrected"])   # sl_start 30, interval 3
    t0 = fixed_sl_start(cfg)
    assert t0 == 32                                         # active while epoch > sl_start + 1
    assert reg_strength(cfg, 31, t0) == 0.0
    assert reg_strength(cfg, 32, t0) == pytest.approx(1e-4)
    assert reg_strength(cfg, 34, t0) == pytest.approx(1e-4)
    assert reg_strength(cfg, 35, t0) == pytest.approx(2e-4)
    assert reg_strength(cfg, 62, None) == 0.0
    d = {2: 0.0, 3: 0.1, 4: 0.5, 5: 0.80, 6: 0.80005, 7: 0.9}
    assert not auto_sl_start(3, d) and not auto_sl_start(5, d)
    assert auto_sl_start(6, {**d, 4: 0.8}) and not auto_sl_start(7, d)


def test_overrides_parse_types():
    cfg = apply_overrides(get_preset("demo"), ["epochs=7", "target=0.3", "nesterov=false", "milestones=0.5,0.9"])
    assert (cfg.epochs, cfg.target, cfg.nesterov, cfg.milestones) == (7, 0.3, False, (0.5, 0.9))
