"""Offline datasets as arrays, and their registry.

A dataset is loaded on the host once, checked, and put on the device once; each
member then gathers its own minibatches by index inside the compiled loop.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo, cache_dir
from jaxdyn.data.digits import load_digits
from jaxdyn.data.mnist1d import load_mnist1d, load_mnist1d_shuffled
from jaxdyn.errors import ConfigError
from jaxdyn.hparams import HParam

HPARAMS = {
    "data.label_noise": HParam(0.0, high=1.0, high_open=False,
                               doc="fraction of training labels replaced by a uniform random class, "
                                   "chosen per member from its data seed (test labels untouched)"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist1d": DatasetInfo(
        load_mnist1d, n_train=4000, n_test=1000, input_shape=(40,), n_classes=10,
        doc="MNIST-1D (Greydanus 2020), generated offline: 4000 train / 1000 test, length 40",
    ),
    "mnist1d_shuffled": DatasetInfo(
        load_mnist1d_shuffled, n_train=4000, n_test=1000, input_shape=(40,), n_classes=10,
        doc="MNIST-1D with one fixed permutation of the 40 positions (the paper's shuffle test)",
    ),
    "digits": DatasetInfo(
        load_digits, n_train=1438, n_test=359, input_shape=(8, 8, 1), n_classes=10,
        doc="scikit-learn's 8x8 digits as [8, 8, 1] images in [0, 1]; fixed stratified 1438 / 359 split",
    ),
}


def load_dataset(name: str, n_train: int = 0, standardize: bool = False) -> Dataset:
    """Load, type-check and NaN-check a registered dataset.

    Args:
      n_train: keep the first ``n_train`` training examples (0 = all), e.g. for
        full-batch gradient descent on a subset.
      standardize: z-score each input feature with the (kept) training set's mean and
        std, and apply the same statistics to the test set.
    """
    info = DATASETS[name]
    ds = info.load()
    for field, arr in ds._asdict().items():
        if field.startswith("x") and not np.all(np.isfinite(arr)):
            bad = int(np.sum(~np.isfinite(arr)))
            raise ConfigError(
                f"dataset {name!r}: {field} holds {bad} non-finite values; delete the cache "
                f"folder {cache_dir()} to regenerate it, or fix the loader."
            )
    if ds.x_train.shape[1:] != info.input_shape or len(ds.x_train) != info.n_train:
        raise ConfigError(
            f"dataset {name!r}: x_train has shape {ds.x_train.shape}, expected "
            f"({info.n_train}, {', '.join(map(str, info.input_shape))}); delete {cache_dir()} "
            "to regenerate it."
        )
    if n_train:
        ds = ds._replace(x_train=ds.x_train[:n_train], y_train=ds.y_train[:n_train])
    if standardize:
        mean, std = ds.x_train.mean(axis=0), ds.x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant feature stays 0, not NaN
        ds = ds._replace(x_train=((ds.x_train - mean) / std).astype(np.float32),
                         x_test=((ds.x_test - mean) / std).astype(np.float32))
    return ds


def noisy_labels(labels: jax.Array, idx: jax.Array, data_key: jax.Array, rate: jax.Array,
                 n_classes: int) -> jax.Array:
    """Labels of training examples ``idx`` after this member's label noise (ONE member).

    Whether example i is corrupted, and its new class, depend only on the member's
    data key and i, never on the step: a member sees the same noisy training set
    throughout, and each member (data seed) its own. A replaced label is uniform over
    the classes, so it equals the true one a tenth of the time on 10 classes.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(data_key, 0x1ABE1), i))(idx)
    flip = jax.vmap(lambda k: jax.random.uniform(k))(keys) < rate
    new = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (), 0, n_classes))(keys)
    return jnp.where(flip, new, labels).astype(labels.dtype)


__all__ = ["DATASETS", "HPARAMS", "noisy_labels", "Dataset", "DatasetInfo", "cache_dir", "load_dataset"]
