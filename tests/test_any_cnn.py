"""Any CNN: hand-made structures and every torchvision classification CNN, checked against Torch-Pruning.

For each model: the groups build; FLOPs and params from counts equal the counter on randomly pruned
copies; the shrink scales exactly the weight slices Torch-Pruning removes and saliency reads exactly
them; a 0.5 selection lands within 0.5 pp by the counter; the pruned model runs. Models that take
more than a few seconds here are marked slow (`python -m pytest -m slow` runs them).
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anycnn import check_counts, check_selection, check_slices, prepared
from osp_engine.method.groups import UnsupportedModel
from osp_engine.models import build_model, torchvision_names
from osp_engine.method.network import prepare_network


class Concat(nn.Module):
    """Two branches concatenated, read by a conv and a pooled Linear (DenseNet/Inception style)."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(64, 48, 1), nn.BatchNorm2d(48), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 80, 3, padding=1), nn.BatchNorm2d(80), nn.ReLU())
        self.mix = nn.Sequential(nn.BatchNorm2d(192), nn.Conv2d(192, 96, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.mix(torch.cat([x, self.a(x), self.b(x)], 1))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class FlattenLinear(nn.Module):
    """A 4x4 map flattened into a Linear, then a hidden Linear (VGG style)."""
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Linear(96 * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Grouped(nn.Module):
    """A ResNeXt block: 1x1, grouped 3x3 (4 groups), GroupNorm (4 groups), 1x1, with a residual add."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(128, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.group = nn.Sequential(nn.Conv2d(64, 96, 3, padding=1, groups=4), nn.GroupNorm(4, 96), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(96, 128, 1), nn.BatchNorm2d(128))
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.expand(self.group(self.reduce(x))))
        return self.fc(x.mean((2, 3)))


class ChannelsLast(nn.Module):
    """A ConvNeXt block: depthwise conv, permute to (N, H, W, C), LayerNorm, Linear-GELU-Linear, layer scale."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 2, stride=2)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.norm = nn.LayerNorm(64)
        self.up, self.act, self.down = nn.Linear(64, 192), nn.GELU(), nn.Linear(192, 64)
        self.scale = nn.Parameter(torch.full((64,), 0.5))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = (self.down(self.act(self.up(y))) * self.scale).permute(0, 3, 1, 2)
        return self.fc((x + y).mean((2, 3)))


class Normed(nn.Module):
    """GroupNorm blocks: 16 norm groups of 4 channels on a residual stream, 12 of 8 inside the block, one
    norm group (no constraint) after it, and a GroupNorm over a concatenation of 24 and 40 channels."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.GroupNorm(16, 64), nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(64, 96, 3, padding=1), nn.GroupNorm(12, 96), nn.ReLU())
        self.outer = nn.Sequential(nn.Conv2d(96, 64, 1), nn.GroupNorm(16, 64))
        self.wide = nn.Sequential(nn.Conv2d(64, 32, 1), nn.GroupNorm(1, 32), nn.ReLU())
        self.a, self.b = nn.Conv2d(32, 24, 1), nn.Conv2d(32, 40, 3, padding=1)
        self.mix = nn.Sequential(nn.GroupNorm(16, 64), nn.ReLU(), nn.Conv2d(64, 48, 1))
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.wide(F.relu(x + self.outer(self.inner(x))))
        return self.fc(self.mix(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


HAND_MADE = {"concat": Concat, "flatten-linear": FlattenLinear, "grouped": Grouped, "channels-last": ChannelsLast,
             "group-norm": Normed}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_structures(name):
    torch.manual_seed(0)
    model, x = HAND_MADE[name]().eval(), torch.randn(1, 3, 16, 16)
    graph, groups, cost = prepared(model, x, 10)
    assert cost.dense_flops == int(__import__("torch_pruning").utils.count_ops_and_params(model, x)[0])
    for seed in range(3):
        check_counts(model, groups, cost, x, seed)
    check_slices(model, groups, x, 0)
    check_selection(model, graph, groups, cost, x)


def test_grouped_conv_channels_go_in_units_of_its_groups():
    torch.manual_seed(0)
    model, x = Grouped().eval(), torch.randn(1, 3, 16, 16)
    _, groups, cost = prepared(model, x, 10)
    by_name = {g.name: g for g in groups}
    assert by_name["reduce.0"].unit == 4 and by_name["group.0"].unit == 4 and by_name["expand.0"].unit == 1
    assert by_name["group.0"].unit_of()[22:26].tolist() == [22, 23, 0, 1]       # 24 units of 4 channels
    assert cost.scale > 1                               # C_out / groups: fractional coefficients, kept exact


def test_group_norm_channels_go_in_whole_norm_groups():
    torch.manual_seed(0)
    model, x = Normed().eval(), torch.randn(1, 3, 16, 16)
    _, groups, cost = prepared(model, x, 10)
    layout = {g.name: (g.unit, g.blocked) for g in groups}
    assert layout == {"inner.0": (8, True), "outer.0": (4, True), "wide.0": (1, False), "a": (4, True),
                      "b": (4, True), "mix.2": (1, False)}
    assert groups[0].unit_of()[[0, 7, 8, 95]].tolist() == [0, 0, 1, 11]               # 12 units of 8 channels
    assert cost.blocked.tolist() == [True, True, False, True, True, False]


def test_a_pruned_norm_group_leaves_the_others_as_they_were():
    """Removing norm group 2 of inner's GroupNorm lowers its num_groups to 11, and the pruned model computes
    exactly what the dense one computes with those 8 channels' columns of the next conv zeroed."""
    import copy

    from osp_engine.method.groups import prune_groups

    torch.manual_seed(0)
    model, x = Normed().eval(), torch.randn(2, 3, 16, 16)
    graph, groups, _ = prepared(model, x[:1], 10)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked.outer[0].weight[:, 16:24] = 0
        expected = masked(x)
    keep = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    keep[0] = groups[0].unit_of() != 2
    prune_groups(graph, groups, keep)
    assert (model.inner[1].num_groups, model.inner[1].num_channels, model.outer[0].in_channels) == (11, 88, 88)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-5)


def test_whole_norm_groups_of_a_removal():
    from osp_engine.method.groups import _whole_norm_groups

    norm = nn.GroupNorm(4, 16)
    assert _whole_norm_groups(norm, {4, 5, 6, 7}) == 1
    assert _whole_norm_groups(norm, {4, 5, 6, 7, 12, 13, 14, 15}) == 2
    assert _whole_norm_groups(norm, {0, 4, 8, 12}) == 0                 # one channel of each: num_groups stays
    assert _whole_norm_groups(norm, {4, 5}) == 0
    assert _whole_norm_groups(norm, set(range(16))) == 0
    assert _whole_norm_groups(nn.GroupNorm(1, 16), {4, 5, 6, 7}) == 0


def test_channel_shuffle_and_attention_are_refused_in_one_line():
    import torchvision

    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(UnsupportedModel, match=r"operation View .*channel shuffle.* ZeroDivisionError"):
        prepare_network(torchvision.models.shufflenet_v2_x0_5(num_classes=10), 10, x, "official")
    with pytest.raises(UnsupportedModel, match=r"attention layer MultiheadAttention .* vision transformers"):
        prepare_network(torchvision.models.vit_b_32(num_classes=10), 10, torch.zeros(1, 3, 224, 224), "official")
    with pytest.raises(UnsupportedModel, match=r"cannot take 3x8x8 inputs"):
        prepare_network(torchvision.models.alexnet(num_classes=10), 10, torch.zeros(1, 3, 8, 8), "official")


def test_a_wrong_cost_model_is_refused_naming_the_layer_type(monkeypatch):
    """If the counter charged a layer differently from the cost model, the start check names that layer."""
    import torch_pruning as tp

    counter = tp.utils.op_counter
    model, x = ChannelsLast().eval(), torch.zeros(1, 3, 16, 16)
    monkeypatch.setitem(counter.MODULES_MAPPING, nn.GELU, counter.pool_flops_counter_hook)   # numel(input) * 1
    monkeypatch.setitem(counter.MODULES_MAPPING, nn.LayerNorm, counter.relu_flops_counter_hook)
    prepare_network(model, 10, x, "official")                                  # mirrored: still exact
    def doubled(module, inp, out):
        module.__flops__ += 2 * inp[0].numel()
    monkeypatch.setitem(counter.MODULES_MAPPING, nn.LayerNorm, doubled)        # a charge the model cannot know
    with pytest.raises(UnsupportedModel, match=r"cannot cost LayerNorm layers \(norm\)"):
        prepare_network(model, 10, x, "official")


def _cnn_names():
    names = []
    for arch in torchvision_names():
        if arch.startswith(("vit_", "swin", "maxvit")) or arch.startswith("shufflenet"):
            continue                                          # refused (tested above): attention, shuffle
        names.append(arch)
    return names


# in every CI run: one model per structure (plain, SE + depthwise, concat, grouped, channels-last, flatten);
# the other torchvision CNNs run with -m slow (docs/models.md has every result)
_FAST = {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5", "squeezenet1_1", "googlenet",
         "resnext50_32x4d", "regnet_x_400mf", "convnext_tiny", "vgg11", "alexnet"}


@pytest.mark.parametrize("arch", [a if a in _FAST else pytest.param(a, marks=pytest.mark.slow) for a in _cnn_names()])
def test_every_torchvision_cnn(arch):
    size = 75 if arch == "inception_v3" else (64 if arch == "alexnet" else 32)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(f"tv-{arch}", 10, size, 3).eval()
    x = torch.randn(1, 3, size, size)
    net = prepare_network(model, 10, x, "corrected", checks=1)             # the run-start check, 1 copy
    check_counts(model, net.groups, net.cost, x, 1)
    if sum(p.numel() for p in model.parameters()) < 15e6:
        check_slices(model, net.groups, x, 2)
    check_selection(model, net.graph, net.groups, net.cost, x)
