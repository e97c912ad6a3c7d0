"""The arrays every dataset is made of, what is known of it before loading, and the cache folder."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np


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
