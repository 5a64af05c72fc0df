"""FLOPs and params from channel counts equal Torch-Pruning's counter on the physically pruned model."""
import numpy as np
import pytest
import torch
import torch_pruning as tp

from osp_engine.method.probe import build_cost_model
from osp_engine.method.groups import build_groups, find_classifier, prune_groups
from osp_engine.method.graph import build_graph
from osp_engine.models import build_model

CIFAR_COUNTS = {  # (M FLOPs, M params) on 1x3x32x32, from the issue
    "resnet20": (41.321098, 0.272474), "resnet32": (69.91937, 0.466906), "resnet56": (127.115914, 0.85577),
    "resnet110": (255.808138, 1.730714), "vgg16": (399.307786, 14.728266), "vgg19": (512.685066, 20.040522),
    "mobilenetv2": (68.285178, 2.25409),
}


@pytest.mark.parametrize("name", sorted(CIFAR_COUNTS))
def test_dense_counts_match_official_definitions(name):
    model = build_model(name, 10, 32)
    flops, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, 32, 32))
    assert (round(flops / 1e6, 6), round(params / 1e6, 6)) == CIFAR_COUNTS[name]


def _check_identity(name, classes, size, channels, seed, keep_p):
    model = build_model(name, classes, size, channels).eval()
    x = torch.zeros(1, channels, size, size)
    graph = build_graph(model, x)
    groups = build_groups(model, graph, find_classifier(model, classes))
    cost = build_cost_model(model, groups, x)
    f0, p0 = tp.utils.count_ops_and_params(model, x)
    assert (cost.dense_flops, cost.dense_params) == (int(f0), int(p0))
    rng = np.random.default_rng(seed)
    keep = []
    for g in groups:
        k = rng.random(g.size) < keep_p
        k[rng.integers(g.size)] = True                       # at least one channel survives
        keep.append(torch.from_numpy(k))
    prune_groups(graph, groups, keep)
    counts = np.array([int(k.sum()) for k in keep])
    f1, p1 = tp.utils.count_ops_and_params(model, x)
    assert cost.flops(counts) == int(f1)
    assert cost.params(counts) == int(p1)
    assert model(x).shape == (1, classes)


@pytest.mark.parametrize("name", sorted(CIFAR_COUNTS) + ["digits-resnet14"])
@pytest.mark.parametrize("seed", [0, 1])
def test_identity_on_random_assignments(name, seed):
    if name == "digits-resnet14":
        _check_identity(name, 10, 8, 1, seed, 0.5)
    else:
        _check_identity(name, 10, 32, 3, seed, 0.3 + 0.4 * seed)


@pytest.mark.parametrize("name", ["tv-resnet18", "tv-resnet50"])
def test_identity_on_torchvision_imagenet_models(name):
    _check_identity(name, 1000, 224, 3, 7, 0.55)


def test_batched_evaluation_and_cost_per_channel():
    model = build_model("resnet20", 10, 32)
    x = torch.zeros(1, 3, 32, 32)
    groups = build_groups(model, build_graph(model, x), find_classifier(model, 10))
    cost = build_cost_model(model, groups, x)
    batch = np.stack([cost.sizes, np.maximum(cost.sizes // 2, 1)])
    assert list(cost.flops(batch)) == [cost.flops(batch[0]), cost.flops(batch[1])]
    per = cost.cost_per_channel()
    g = 0
    counts = cost.sizes.copy()
    counts[g] -= 1
    # the cost table is linear in one group's count when only that group changes
    assert per[g] == pytest.approx(cost.dense_flops - cost.flops(counts))
