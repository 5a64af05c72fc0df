"""The embedded digits: read from scikit-learn's own file without importing it, split per class."""
import numpy as np
from sklearn.datasets import load_digits

from osp_engine.running.data import digits_arrays, stratified_split


def test_digits_are_scikit_learns():
    images, labels = digits_arrays()
    ref = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert np.array_equal(images, ref.images.astype(np.float32) / 16.0)
    assert np.array_equal(labels, ref.target)


def test_stratified_split_is_disjoint_complete_and_per_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 7)
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert np.intersect1d(tr, va).size == 0 and sorted(np.concatenate([tr, va]).tolist()) == list(range(22))
    assert np.bincount(labels[va]).tolist() == [2, 1, 1]            # round(0.2 * 10, 5, 7)
    again, _ = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(tr, again)
    _, digits_val = stratified_split(digits_arrays()[1], 0.2, seed=0)
    assert len(digits_val) == 359
