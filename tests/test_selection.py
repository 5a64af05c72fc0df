"""The selection hits the target and agrees with a slow reference: threshold, physical prune, count."""
import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp

from osp_engine.method import saliency as sal
from osp_engine.method.costs import cost_table
from osp_engine.method.probe import build_cost_model
from osp_engine.method.groups import build_groups, find_classifier, prune_groups
from osp_engine.method.graph import build_graph
from osp_engine.models import build_model
from osp_engine.method.selection import protected_mask, select


def _setup(name, size, ch, seed, variant="corrected"):
    torch.manual_seed(seed)
    model = build_model(name, 10, size, ch).eval()
    x = torch.zeros(1, ch, size, size)
    graph = build_graph(model, x)
    groups = build_groups(model, graph, find_classifier(model, 10))
    cost = build_cost_model(model, groups, x)
    _, pi = cost_table(model, groups, cost, x, variant)
    scores = sal.weighted_saliency(sal.all_saliency(groups), pi)
    return model, x, cost, scores


def _reference_reduction(model, x, scores, tau, l_max, variant="corrected"):
    """The official approach: deep-copy, prune every unprotected channel with S^ <= tau, count."""
    m = copy.deepcopy(model)
    graph = build_graph(m, x)
    groups = build_groups(m, graph, find_classifier(m, 10))
    keep = [torch.from_numpy(protected_mask(s, l_max, 1.0, variant) | (s > tau)) for s in scores]
    dense, _ = tp.utils.count_ops_and_params(m, x)
    prune_groups(graph, groups, keep)
    flops, _ = tp.utils.count_ops_and_params(m, x)
    return 1 - flops / dense, [k.numpy() for k in keep]


# at random init the lowest-saliency channels can sit in residual groups, where one channel is worth
# more than 0.05 pp, so the tolerance here is the coarsest step; the reference must agree exactly
@pytest.mark.parametrize("name,size,ch,tol", [("digits-resnet14", 8, 1, 0.01), ("resnet20", 32, 3, 0.01)])
@pytest.mark.parametrize("target", [0.3, 0.5])
def test_selection_matches_reference(name, size, ch, tol, target):
    model, x, cost, scores = _setup(name, size, ch, seed=3)
    ours = select(scores, cost, target, 0.75, 1.0, "corrected")
    assert abs(ours.reduction - target) <= tol
    ref_red, ref_keep = _reference_reduction(model, x, scores, ours.tau, 0.75)
    assert ref_red == pytest.approx(ours.reduction, abs=1e-12)
    assert all((a == b).all() for a, b in zip(ref_keep, ours.keep))
    # the reference binary search over tau (value space) lands on the same threshold
    values = np.unique(np.concatenate([s[~protected_mask(s, 0.75, 1.0)] for s in scores]))
    lo, hi = 0, len(values) - 1
    while lo < hi:                                          # smallest tau reaching the target
        mid = (lo + hi) // 2
        if _reference_reduction(model, x, scores, values[mid], 0.75)[0] >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min((values[i] for i in (lo - 1, lo) if i >= 0),
               key=lambda t: abs(_reference_reduction(model, x, scores, t, 0.75)[0] - target))
    assert best == ours.tau


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_official_selection_is_a_threshold_cut_counted_exactly(target):
    """official: whatever probe the search keeps, it prunes every unprotected channel <= tau."""
    model, x, cost, scores = _setup("resnet20", 32, 3, seed=3, variant="official")
    ours = select(scores, cost, target, 0.75, 1.0, "official")
    ref_red, ref_keep = _reference_reduction(model, x, scores, ours.tau, 0.75, "official")
    assert ref_red == pytest.approx(ours.reduction, abs=1e-12)
    assert all((a == b).all() for a, b in zip(ref_keep, ours.keep))


@pytest.mark.parametrize("variant", ["official", "corrected"])
def test_floor_is_respected_and_unreachable_target_prunes_all_it_may(variant):
    model, x, cost, scores = _setup("resnet20", 32, 3, seed=0, variant=variant)
    sel = select(scores, cost, 0.95, 0.5, 1.0, variant)
    for s, keep in zip(scores, sel.keep):
        assert keep.sum() == max(len(s) - int(len(s) * 0.5 * (1 - np.exp(-len(s)))), 1)
    assert sel.reduction < 0.95
