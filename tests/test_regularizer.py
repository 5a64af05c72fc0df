"""The shrink scales exactly the marked slices by (1 - reg * lr) and nothing else."""
import numpy as np
import pytest
import torch

from osp_engine.method.groups import build_groups, find_classifier
from osp_engine.method.graph import build_graph
from osp_engine.models import build_model
from osp_engine.method.regularizer import Shrinker


def test_shrink_touches_exactly_the_marked_slices():
    torch.manual_seed(0)
    model = build_model("digits-resnet14", 10, 8, 1)
    x = torch.zeros(1, 1, 8, 8)
    groups = build_groups(model, build_graph(model, x), find_classifier(model, 10))
    keep = [np.ones(g.size, dtype=bool) for g in groups]
    g = next(gr for gr in groups if gr.name == "stage_1.0.conv_a")      # an internal group
    keep[g.gid][[1, 5]] = False
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shrinker = Shrinker(groups)
    shrinker.set_marked(keep)
    shrinker.step(0.5 * 0.1)                                             # reg 0.5, lr 0.1
    after = dict(model.named_parameters())
    f = 1 - 0.05
    expected = {k: v.clone() for k, v in before.items()}
    expected["stage_1.0.conv_a.weight"][[1, 5]] *= f                    # producer filters
    expected["stage_1.0.bn_a.weight"][[1, 5]] *= f                      # BN gamma (beta untouched)
    expected["stage_1.0.conv_b.weight"][:, [1, 5]] *= f                 # consumer input slices
    for name in before:
        assert torch.allclose(after[name], expected[name], rtol=0, atol=1e-7), name
    assert shrinker.penalty() > 0


def test_shrink_on_residual_group_and_zero_decay_is_noop():
    model = build_model("resnet20", 10, 32)
    x = torch.zeros(1, 3, 32, 32)
    groups = build_groups(model, build_graph(model, x), find_classifier(model, 10))
    keep = [np.ones(g.size, dtype=bool) for g in groups]
    res = next(gr for gr in groups if "conv_1_3x3" in gr.layers)          # the stage-1 residual stream
    keep[res.gid][3] = False
    s = Shrinker(groups)
    s.set_marked(keep)
    w = model.stage_1[1].conv_a.weight
    ref = w.detach().clone()
    s.step(0.0)
    assert torch.equal(w, ref)
    s.step(0.2)
    assert torch.allclose(w[:, 3], ref[:, 3] * 0.8) and torch.equal(w[:, 2], ref[:, 2])
    gamma = model.bn_1.weight.detach()
    assert float(gamma[3]) == pytest.approx(0.8) and float(gamma[2]) == 1.0
