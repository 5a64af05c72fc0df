"""The official variant keeps exactly the channels the official code keeps, on identical weights.

The fixtures in tests/fixtures/official/ were computed by running the official OCSPruner code on
seeded weights (how: tests/fixtures/official/README.md). Nothing here runs the official code.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from osp_engine.method import saliency as sal
from osp_engine.method.costs import cost_table
from osp_engine.method.probe import build_cost_model
from osp_engine.method.groups import build_groups, find_classifier
from osp_engine.method.graph import build_graph
from osp_engine.models import build_model
from osp_engine.method.selection import select

FIXTURES = Path(__file__).parent / "fixtures" / "official"
NETWORKS = ["resnet56", "vgg16", "digits-resnet14"]


def fill(model: nn.Module, seed: int) -> None:
    """The fixtures' weights: parameter i (in module order) drawn from its own generator (seed*1000 + i).

    Conv/linear weights N(0, 2/fan_out), BN gamma U(0.2, 1.5), BN beta N(0, 0.1^2), biases N(0, 0.01^2).
    """
    i = 0
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            g = torch.Generator().manual_seed(seed * 1000 + i)
            i += 1
            with torch.no_grad():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    v = (0.2 + 1.3 * torch.rand(p.shape, generator=g) if pname == "weight"
                         else 0.1 * torch.randn(p.shape, generator=g))
                elif p.dim() > 1:
                    v = torch.randn(p.shape, generator=g) * (2.0 / (p.shape[0] * p[0, 0].numel())) ** 0.5
                else:
                    v = 0.01 * torch.randn(p.shape, generator=g)
                p.copy_(v)


pytestmark = pytest.mark.xdist_group("official")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module", params=NETWORKS)
def network(request):
    ref = json.loads((FIXTURES / f"official-{request.param}.json").read_text())
    size, ch = ref["image_size"], ref["in_channels"]
    model = build_model(ref["model"], 10, size, ch)
    fill(model, ref["seed"])
    model.eval()
    x = torch.zeros(1, ch, size, size)
    graph = build_graph(model, x)
    groups = build_groups(model, graph, find_classifier(model, 10))
    cost = build_cost_model(model, groups, x)
    saliency = sal.all_saliency(groups)
    tables = {v: cost_table(model, groups, cost, x, v) for v in ("official", "corrected")}
    return ref, groups, cost, saliency, tables


def _jaccards(groups, keep, pruned_by_root) -> list[float]:
    out = []
    for g in groups:
        theirs = set(range(g.size)) - set(pruned_by_root.get(g.name, []))
        ours = set(np.flatnonzero(keep[g.gid]).tolist())
        out.append(len(ours & theirs) / len(ours | theirs))
    return out


def test_groups_order_and_dense_flops_match(network):
    ref, groups, cost, _, _ = network
    assert cost.dense_flops == ref["dense_flops"] and cost.dense_params == ref["dense_params"]
    by_rank = sorted(groups, key=lambda g: g.tp_rank)
    assert [g.name for g in by_rank] == ref["candidate_roots"]
    assert ref["all_group_roots"][0] == "classifier"          # what makes the official table shift
    assert [g.listed_root for g in by_rank] == ref["all_group_roots"][:len(by_rank)]


def test_cost_table_and_weights_are_bit_equal(network):
    ref, groups, _, _, tables = network
    costs, pi = tables["official"]
    for g in groups:
        assert costs[g.gid] == ref["cost_table"][g.name]["cost"]
        assert pi[g.gid] == ref["cost_table"][g.name]["pi"]
    first = min(groups, key=lambda g: g.tp_rank)                # gets the classifier's cost: 64 + 1 bias MACs
    assert costs[first.gid] == {"resnet56": 65.0, "vgg16": 513.0, "digits-resnet14": 129.0}[ref["model"]]
    own, _ = tables["corrected"]                               # each group its own cost
    by_rank = sorted(groups, key=lambda g: g.tp_rank)
    assert [costs[g.gid] for g in by_rank[1:]] == [own[g.gid] for g in by_rank[:-1]]    # shifted by one
    assert own[first.gid] != costs[first.gid]


@pytest.mark.parametrize("target", ["0.3", "0.5", "0.7"])
def test_official_variant_keeps_the_official_channels(network, target):
    ref, groups, cost, saliency, tables = network
    expected = ref["targets"][target]
    scores = sal.weighted_saliency(saliency, tables["official"][1])
    for g in groups:                                           # bit-equal S^ wherever the floor left it
        theirs = np.array(expected["protected_scores"][g.name])
        free = theirs != 100.0
        assert np.array_equal(scores[g.gid][free], theirs[free])
    sel = select(scores, cost, float(target), ref["l_max"], 1.0, "official")
    assert _jaccards(groups, sel.keep, expected["pruned"]) == [1.0] * len(groups)
    assert sel.flops == expected["flops"] and sel.params == expected["params"]
    assert sel.reduction == expected["reduction"]


def test_corrected_variant_departs_where_the_quirks_bite(network):
    """corrected uses each group's own cost and the nearest cut: on ResNet-56 and VGG-16 it keeps other
    channels than the official code, and its cut lands within 1 pp of every target (at random init one
    channel of a residual group is worth up to ~0.7 pp of ResNet-56's FLOPs)."""
    ref, groups, cost, saliency, tables = network
    for target in ("0.3", "0.5", "0.7"):
        expected = ref["targets"][target]
        sel = select(sal.weighted_saliency(saliency, tables["corrected"][1]), cost, float(target), ref["l_max"], 1.0,
                     "corrected")
        assert abs(sel.reduction - float(target)) <= 1e-2
        mean_j = float(np.mean(_jaccards(groups, sel.keep, expected["pruned"])))
        if ref["model"] in ("resnet56", "vgg16"):
            assert mean_j < 1.0
    if ref["model"] == "resnet56":                             # 50 %: the official search stops 0.7 pp off
        assert abs(ref["targets"]["0.5"]["reduction"] - 0.5) > 5e-3
