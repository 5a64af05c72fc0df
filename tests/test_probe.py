"""The plan's fast paths give what the slow ones give: removing groups together equals removing them one
after another, the probe in batches equals the probe one group at a time, and Torch-Pruning's index
mapping is rebuilt exactly when a channel count changed."""
import copy
import gc
import weakref

import numpy as np
import torch
from torch import nn

from osp_engine.method.flops import count_subclasses
from osp_engine.method.graph import build_graph
from osp_engine.method.groups import build_groups, find_classifier, pruning_group, remove_channels, remove_together
from osp_engine.method.mapping import counts_unchanged
from osp_engine.method.probe import _changes
from osp_engine.method.probecopy import ProbeCopy, compatible_batches


def cbr(i, o, k=3):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class Dense(nn.Module):
    """DenseNet: every layer reads the concatenation of all features before it; then a transition."""
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.layers = nn.ModuleList([nn.Sequential(cbr(16 + 8 * i, 12, 1), cbr(12, 8)) for i in range(3)])
        self.mix = nn.ReLU()                      # counted, and fed by the concatenation of four groups
        self.head, self.pool, self.fc = cbr(40, 16, 1), nn.AvgPool2d(2), nn.Linear(16, 10)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.fc(self.pool(self.head(self.mix(torch.cat(features, 1)))).mean((2, 3)))


def _grouped(model, x):
    count_subclasses(model)
    graph = build_graph(model, x)
    return graph, build_groups(model, graph, find_classifier(model, 10))


def test_removing_groups_together_equals_removing_them_one_after_another():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    dense = Dense().eval()
    one, together = copy.deepcopy(dense), copy.deepcopy(dense)
    graph_one, groups = _grouped(one, x[:1])
    graph_together, _ = _grouped(together, x[:1])
    rng = np.random.default_rng(0)
    drops = {g.name: sorted(rng.choice(g.size, g.size // 2, replace=False).tolist()) for g in groups}
    for g in groups:                              # each removal renumbers the concatenations after it
        remove_channels(graph_one, one.get_submodule(g.name), drops[g.name])
    remove_together(graph_together, [(together.get_submodule(name), drop) for name, drop in drops.items()])
    a, b = one.state_dict(), together.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["head.0.weight"].shape == (8, 20, 1, 1)                 # 40 - 16/2 - 3 * 8/2 channels read
    assert sorted(map(str, graph_one.pruning_history())) == sorted(map(str, graph_together.pruning_history()))
    with torch.no_grad():
        assert torch.equal(one(x), together(x))


def test_the_index_mapping_is_rebuilt_when_and_only_when_a_channel_count_changed():
    model = Dense().eval()
    graph, groups = _grouped(model, torch.zeros(1, 3, 16, 16))
    assert counts_unchanged(graph)
    stem = model.get_submodule("stem.0")
    remove_channels(graph, stem, [0, 1])
    assert not counts_unchanged(graph)            # the concatenations' sizes moved: the next grouping rebuilds
    group = pruning_group(graph, stem, [0])
    assert counts_unchanged(graph)
    head_reads = [item.idxs for item in group.items if item.dep.target.module is model.get_submodule("head.0")]
    assert head_reads == [[0]]                    # stem's channel 0 is still the head's input channel 0


def test_the_probe_in_batches_sees_what_it_sees_one_group_at_a_time():
    import torchvision

    small_densenet = torchvision.models.DenseNet(growth_rate=8, block_config=(3, 3), num_init_features=16, bn_size=2,
                                                 num_classes=10)
    for model, x, batches in ((Dense().eval(), torch.zeros(1, 3, 16, 16), 2),
                              (small_densenet.eval(), torch.zeros(1, 3, 32, 32), 2),
                              (torchvision.models.resnet18(num_classes=10).eval(), torch.zeros(1, 3, 32, 32), None),
                              (torchvision.models.resnet50(num_classes=10).eval(), torch.zeros(1, 3, 32, 32), None)):
        # ResNet-50: one ReLU module called three times per block, fed by three different layers
        _, groups = _grouped(model, x)
        probed = [g for g in groups if g.n_units > 1]
        batched = _changes(ProbeCopy(model, x), probed, lambda done: None)
        alone = ProbeCopy(model, x)
        plans = [(g, alone.plan(g)) for g in probed]
        if batches:        # a DenseNet's layers overlap only where one group makes a layer's input channels
            assert len(compatible_batches(plans)) == batches   # and another its output channels
        assert len(compatible_batches(plans)) < len(probed)            # some batches hold several groups
        for g in probed:
            expected = alone.remove_unit(g)
            assert np.array_equal(batched[id(g)], expected), g.name
            assert expected.any()


def test_batches_share_a_layer_only_when_touched_the_same_way():
    model = Dense().eval()
    _, groups = _grouped(model, torch.zeros(1, 3, 16, 16))
    probe = ProbeCopy(model, torch.zeros(1, 3, 16, 16))
    plans = {g.name: (g, probe.plan(g)) for g in groups}
    grow, squeeze = plans["layers.0.1.0"], plans["layers.1.0.0"]    # layer 0's new channels; layer 1's 1x1 conv
    assert set(grow[1][1]) & set(squeeze[1][1]) == {"layers.1.0.0"}  # read by it, and made by it
    assert len(compatible_batches([grow, squeeze])) == 2
    assert len(compatible_batches([grow, plans["layers.1.1.0"]])) == 1   # both feed layer 2 and the head
    assert len(compatible_batches([grow, plans["layers.1.1.0"]], {id(grow[0]): {"mix"}})) == 1
    assert len(compatible_batches([grow, plans["layers.1.1.0"]],
                                  {id(grow[0]): {"head.0"}, id(plans["layers.1.1.0"][0]): {"head.0"}})) == 2


class Standardised(nn.Conv2d):
    """A weight-standardised conv (NFNet, BiT): every forward makes a new, standardised copy of its weight."""
    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
        self.last = weakref.ref(w)
        return self._conv_forward(x, w, self.bias)


def test_the_traced_graph_keeps_no_tensor_saved_for_backward():
    """Torch-Pruning keeps the traced autograd graph; the tensors it saved (a standardised weight is a copy
    of the model's) must not live on with it: the plan of a 928 M model must fit in memory."""
    model = nn.Sequential(Standardised(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 10))
    graph = build_graph(model.eval(), torch.randn(1, 3, 8, 8))
    gc.collect()
    assert graph.module2node[model[0]].grad_fn is not None         # the graph is kept, for its sizes and dims
    assert model[0].last() is None                                   # the standardised weight is not
