"""Shared checks of tests/test_any_cnn.py: one model through groups, cost model, slices, selection, prune.

Every figure is compared with Torch-Pruning's own behaviour on physically pruned copies, never with
the engine's own bookkeeping.
"""
import copy

import numpy as np
import torch
import torch_pruning as tp

from osp_engine.method import saliency as sal
from osp_engine.method.costcheck import pruned_copy, random_keep
from osp_engine.method.probe import build_cost_model
from osp_engine.method.groups import build_groups, find_classifier, prune_groups
from osp_engine.method.graph import build_graph
from osp_engine.method.regularizer import Shrinker
from osp_engine.method.selection import select


def prepared(model, example, classes):
    model = model.eval()
    graph = build_graph(model, example)
    groups = build_groups(model, graph, find_classifier(model, classes))
    return graph, groups, build_cost_model(model, groups, example)


def check_counts(model, groups, cost, example, seed):
    """FLOPs and params from counts == the counter on a randomly pruned copy, which runs forward."""
    keep = random_keep(groups, np.random.default_rng(seed))
    twin = pruned_copy(model, groups, keep, example)
    flops, params = tp.utils.count_ops_and_params(twin, example)
    counts = np.array([int(k.sum()) for k in keep])
    assert (cost.flops(counts), cost.params(counts)) == (int(flops), int(params))
    with torch.no_grad():
        twin(example)


def _encode(model):
    """Fill every parameter with 1 + i0 * S + i1 (float64): its element's (dim 0, dim 1) position."""
    for p in model.parameters():
        with torch.no_grad():
            i0 = torch.arange(p.shape[0], dtype=torch.float64).view(-1, *[1] * (p.dim() - 1))
            i1 = torch.arange(p.shape[1], dtype=torch.float64).view(1, -1, *[1] * (p.dim() - 2)) if p.dim() > 1 else 0
            p.copy_((1 + i0 * 100_000 + i1).expand_as(p))


def _positions(p) -> set:
    return set(p.detach().flatten().tolist())


def removed_by_torch_pruning(model, groups, keep, example) -> dict:
    """{parameter name: set of encoded (dim 0, dim 1) positions} Torch-Pruning removes, biases left out."""
    enc = copy.deepcopy(model).double()
    _encode(enc)
    twin = pruned_copy(enc, groups, keep, example.double())
    after = dict(twin.named_parameters())
    return {n: _positions(p) - _positions(after[n]) for n, p in enc.named_parameters() if not n.endswith("bias")}


def shrunk_by_engine(model, keep, example) -> dict:
    """{parameter name: positions} the engine's shrink scales (decay 1 sends them to exactly 0)."""
    enc = copy.deepcopy(model).double()
    _encode(enc)
    graph = build_graph(enc, example.double())
    groups = build_groups(enc, graph, find_classifier(enc, _classes(enc, example.double())))
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    shrinker = Shrinker(groups)
    shrinker.set_marked(keep)
    shrinker.step(1.0)
    return {n: _positions(before[n][(p == 0) & (before[n] != 0)]) for n, p in enc.named_parameters()
            if not n.endswith("bias")}


def _classes(model, example) -> int:
    with torch.no_grad():
        return model.eval()(example).shape[1]


def check_slices(model, groups, example, seed):
    """The shrink scales exactly the weight slices Torch-Pruning would remove for a random mark, and a
    unit whose removed slices are zeroed has saliency exactly 0 while every other channel keeps its own."""
    keep = random_keep(groups, np.random.default_rng(seed))
    removed = removed_by_torch_pruning(model, groups, keep, example)
    assert shrunk_by_engine(model, keep, example) == removed
    g = max(range(len(groups)), key=lambda i: groups[i].n_units)
    one = [np.ones(x.size, dtype=bool) for x in groups]
    one[g] = groups[g].unit_of().numpy() != 0                     # drop unit 0 of the widest group only
    gone = removed_by_torch_pruning(model, groups, one, example)
    twin = copy.deepcopy(model).double()
    _encode(twin)
    enc_groups = build_groups(twin, build_graph(twin, example.double()), find_classifier(twin, _classes(model, example)))
    s_before = sal.group_saliency(enc_groups[g]).double()
    with torch.no_grad():
        for n, p in twin.named_parameters():
            if n in gone and gone[n]:
                mask = torch.tensor([v in gone[n] for v in p.flatten().tolist()]).view_as(p)
                p[mask] = 0.0
    s_after = sal.group_saliency(enc_groups[g]).double()
    unit0 = groups[g].unit_of() == 0
    assert torch.all(s_after[unit0] == 0)
    assert torch.equal(s_after[~unit0], s_before[~unit0])


def check_selection(model, graph, groups, cost, example, target=0.5):
    """Selection at `target` lands within 0.5 pp by the counter, and the pruned model runs."""
    from osp_engine.method.costs import cost_table

    _, pi = cost_table(model, groups, cost, example, "corrected")
    chosen = select(sal.weighted_saliency(sal.all_saliency(groups), pi), cost, target, 0.75, 1.0, "corrected")
    dense, _ = tp.utils.count_ops_and_params(model, example)
    prune_groups(graph, groups, [torch.from_numpy(k) for k in chosen.keep])
    pruned, _ = tp.utils.count_ops_and_params(model, example)
    assert int(pruned) == chosen.flops
    assert abs((1 - pruned / dense) - target) <= 0.005, 1 - pruned / dense
    with torch.no_grad():
        model(example)


def prepared_or_refused(model, example, classes, target=0.5, refusals=None):
    """prepare_network, then the target check: the Prunable, or None when refused in one line (the
    only way it may fail: an UnsupportedModel whose message is a single non-empty line, appended to
    `refusals` when given)."""
    from osp_engine.method.groups import UnsupportedModel
    from osp_engine.method.network import check_target, prepare_network

    try:
        net = prepare_network(model, classes, example, "corrected", checks=1)
        check_target(net, target, 0.75, 1.0)
        return net
    except UnsupportedModel as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        if refusals is not None:
            refusals.append(str(e))
        return None


def check_end_to_end(build, example, classes, tmp_path, arch=None, refusals=None):
    """A model built by `build()`: prepared or refused in one line; if prepared, FLOPs and params from
    counts equal the counter on a randomly pruned copy, a 0.5 selection lands within 0.5 pp by the
    counter, and the pruned model runs and reloads (load_pruned, by name when `arch` names a registry
    model, else from a fresh instance) with equal outputs. Returns the Prunable, or None when refused
    (the message appended to `refusals` when given)."""
    from osp_engine.storage.export import export_model, load_pruned

    torch.manual_seed(0)
    model = build().eval()
    net = prepared_or_refused(model, example, classes, refusals=refusals)
    if net is None:
        return None
    check_counts(model, net.groups, net.cost, example, 1)
    check_selection(model, net.graph, net.groups, net.cost, example)
    shape = list(example.shape[1:])
    path = export_model(model, net.graph.pruning_history(), dict(model=arch or "custom", num_classes=classes,
                        image_size=shape[-1], in_channels=shape[0], input_shape=shape, custom=arch is None), tmp_path)
    reloaded = load_pruned(path, model=None if arch else build())
    batch = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.allclose(model(batch), reloaded(batch), atol=1e-5, rtol=1e-5)
    return net
