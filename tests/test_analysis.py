"""The studio's numpy views of a stored run, on hand-made masks with values worked out by hand."""
import numpy as np

from osp_engine.method.analysis import early_bird_epoch, kept_fraction, pairwise_jaccard, phase_spans, settle_order

# 3 epochs x (group A: 2 channels, group B: 3 channels)
KEPT = np.array([[1, 1, 1, 0, 0],
                 [1, 0, 1, 1, 0],
                 [1, 0, 0, 1, 1]], dtype=bool)
SIZES = [2, 3]


def test_pairwise_jaccard_is_the_mean_over_groups():
    sim = pairwise_jaccard(KEPT, SIZES)
    # epochs 0 and 1: group A {0,1} vs {0} -> 1/2; group B {0} vs {0,1} -> 1/2
    # epochs 0 and 2: A 1/2; B {0} vs {1,2} -> 0;  epochs 1 and 2: A 1; B {0,1} vs {1,2} -> 1/3
    expected = np.array([[1, 0.5, 0.25], [0.5, 1, 2 / 3], [0.25, 2 / 3, 1]])
    assert np.allclose(sim, expected)


def test_pairwise_jaccard_of_two_empty_sets_is_one():
    assert pairwise_jaccard(np.zeros((2, 3), dtype=bool), [3]).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_kept_fraction_per_group_and_epoch():
    assert np.allclose(kept_fraction(KEPT, SIZES), [[1, 0.5, 0.5], [1 / 3, 2 / 3, 2 / 3]])


def test_settle_order_kept_first_then_by_settling_epoch():
    # channel: 0 never changes (kept), 1 pruned from epoch 1, 2 pruned from epoch 2, 3 kept from 1, 4 kept from 2
    assert settle_order(KEPT).tolist() == [0, 3, 4, 1, 2]


def test_settle_order_with_one_or_no_epoch():
    assert settle_order(KEPT[:1]).tolist() == [0, 1, 2, 3, 4]      # kept ones first, stable within a state
    assert settle_order(KEPT[:0]).tolist() == [0, 1, 2, 3, 4]
    assert settle_order(np.array([[0, 1, 0, 1]], dtype=bool)).tolist() == [1, 3, 0, 2]


def test_phase_spans_and_the_early_bird_epoch():
    assert phase_spans([0, 1, 2, 3, 4], ["dense", "dense", "sparsity", "pruned", "pruned"]) == [
        ("dense", 0, 1), ("sparsity", 2, 2), ("pruned", 3, 4)]
    assert early_bird_epoch([3, 4, 5, 6], [None, 0.4, 0.09, 0.05], 0.1) == 5
    assert early_bird_epoch([3, 4], [None, 0.4], 0.1) is None
