"""Offline datasets as arrays, and their registry.

A dataset is loaded on the host once, checked, and put on the device once; each
member then gathers its own minibatches by index inside the compiled loop.
"""

import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo, cache_dir
from jaxdyn.data.mnist1d import load_mnist1d
from jaxdyn.errors import ConfigError

DATASETS: dict[str, DatasetInfo] = {
    "mnist1d": DatasetInfo(
        load_mnist1d, n_train=4000, n_test=1000, input_shape=(40,), n_classes=10,
        doc="MNIST-1D (Greydanus 2020), generated offline: 4000 train / 1000 test, length 40",
    ),
}


def load_dataset(name: str) -> Dataset:
    """Load, type-check and NaN-check a registered dataset."""
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
    return ds


__all__ = ["DATASETS", "Dataset", "DatasetInfo", "cache_dir", "load_dataset"]
