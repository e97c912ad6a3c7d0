"""Offline datasets as arrays, and their registry.

A dataset is loaded on the host once, checked, and put on the device once; each
member then gathers its own minibatches by index inside the compiled loop.
"""

import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo, cache_dir
from jaxdyn.data.digits import load_digits
from jaxdyn.data.mnist1d import load_mnist1d, load_mnist1d_shuffled
from jaxdyn.errors import ConfigError

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


__all__ = ["DATASETS", "Dataset", "DatasetInfo", "cache_dir", "load_dataset"]
