"""scikit-learn's bundled 8×8 handwritten digits (no download): the image set for a 2D CNN."""

import numpy as np

from jaxdyn.data.dataset import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits() -> Dataset:
    """1,797 images as ``[8, 8, 1]`` float32 in [0, 1] (pixel counts 0..16 / 16), labels 0..9.

    The split is fixed and stratified: within each class, a permutation from a fixed
    seed puts the first ``round(0.2 · n_class)`` images in the test set, so every run,
    process and machine sees the same 1,438 / 359 examples.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    x = (raw.images / 16.0).astype(np.float32)[..., None]
    y = raw.target.astype(np.int32)
    rng = np.random.RandomState(SPLIT_SEED)
    test = np.zeros(len(y), bool)
    for label in range(10):
        idx = np.flatnonzero(y == label)
        test[rng.permutation(idx)[: round(TEST_FRACTION * len(idx))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test])
