"""MNIST-1D: generated offline, cached where JAXDYN_CACHE says, global RNGs untouched."""

import random

import numpy as np

from jaxdyn.data import dataset_info, load_dataset


def test_mnist1d_generated_cached_and_rng_neutral(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDYN_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(3), random.random())
    np.random.seed(123)
    random.seed(123)

    ds = load_dataset("mnist1d")

    assert (np.random.rand(3) == expected[0]).all() and random.random() == expected[1]
    cached = list(tmp_path.glob("mnist1d_*.npz"))
    assert len(cached) == 1
    info = dataset_info("mnist1d")
    assert ds.x_train.shape == (info.n_train, 40) and ds.x_test.shape == (info.n_test, 40)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10))
    # make_dataset standardises the whole set: mean 0, std 1 over train and test together.
    both = np.concatenate([ds.x_train, ds.x_test])
    np.testing.assert_allclose([both.mean(), both.std()], [0.0, 1.0], atol=1e-4)

    again = load_dataset("mnist1d")  # from the cache, identical
    for a, b in zip(ds, again):
        np.testing.assert_array_equal(a, b)


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    from jaxdyn.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("JAXDYN_CACHE", str(blocker))
    import pytest

    with pytest.raises(ConfigError, match="point JAXDYN_CACHE at a writable folder"):
        load_dataset("mnist1d")
