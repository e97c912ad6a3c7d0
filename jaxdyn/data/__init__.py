"""Offline datasets as arrays, and their registry.

A dataset is loaded on the host once, checked, and put on the device once; each
member then gathers its own minibatches by index inside the compiled loop.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from jaxdyn.errors import ConfigError


class Dataset(NamedTuple):
    """Arrays of one dataset: ``x_*`` float32 ``[N, ...]``, ``y_*`` int32 ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class DatasetInfo:
    """What validation needs to know about a dataset before loading it."""

    load: Callable[[], Dataset]
    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int
    doc: str = ""


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$JAXDYN_CACHE`` or ``~/.cache/jaxdyn``."""
    return Path(os.environ.get("JAXDYN_CACHE") or Path.home() / ".cache" / "jaxdyn")


from jaxdyn.data.mnist1d import load_mnist1d  # noqa: E402  (needs cache_dir above)

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
