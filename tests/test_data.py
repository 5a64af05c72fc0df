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


def test_digits_noisy_is_the_digits_with_one_fixed_noise_and_says_so():
    import dataclasses

    from osp_engine.interfaces.presets import get_preset
    from osp_engine.running.data import NOISE_SIGMA, load_dataset as load_data

    cfg = dataclasses.replace(get_preset("demo"), dataset="digits-noisy")
    train, val, info = load_data(cfg)
    clean_train, clean_val, _ = load_data(get_preset("demo"))
    assert "fixed Gaussian noise (sigma 0.5), a transformed set" in info.label
    assert np.array_equal(val.labels.numpy(), clean_val.labels.numpy())            # the same split
    noise = (val.images - clean_val.images).numpy()
    assert abs(noise.std() - NOISE_SIGMA) < 0.02 and abs(noise.mean()) < 0.02
    assert np.array_equal(load_data(cfg)[1].images.numpy(), val.images.numpy())    # fixed: every run the same
