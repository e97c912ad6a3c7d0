"""The arrays every dataset is made of, what is known of it before training, and the cache folder."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Arrays of one dataset: ``x_*`` float32 ``[N, *input_shape]``; ``y_*`` ``[N, *target_shape]``,
    int32 class labels, or float32 values for a regression dataset."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class DatasetInfo:
    """What validation and the model builder need to know about one configured dataset.

    Attributes:
      n_classes: classes per label; 0 for a regression dataset (real-valued targets).
      target_shape: shape of one example's target: ``()`` for one label or value,
        ``(L,)`` for L of them (the copy task's L recalled symbols).
      modes: ``(centers, std)`` of a mixture whose modes are known (``ring``, ``grid``:
        centers a tuple of points), for GAN mode metrics and sample plots; else None.
      vocab: token ids per input position: inputs are integer ids in [0, vocab) stored
        as float32 (exact); 0 for real-valued inputs.
    """

    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int
    target_shape: tuple[int, ...] = ()
    modes: tuple | None = None
    vocab: int = 0

    @property
    def regression(self) -> bool:
        return self.n_classes == 0

    @property
    def n_out(self) -> int:
        """Model outputs: a logit per class per label, or one per target value."""
        return int(np.prod(self.target_shape, dtype=int)) * (self.n_classes or 1)


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes:
      load: ``DataConfig -> Dataset``, deterministic in the config (generated from
        ``data.seed`` or read from ``data.path``).
      info: ``DataConfig -> DatasetInfo`` without generating the data where that is
        possible (a user file must be read to know its shapes). It may raise
        ``ConfigError`` for a field out of range; validation calls it before anything
        compiles (``modular`` and ``parity`` check all their fields there).
      fields: the ``[data]`` fields beyond the common ones that this dataset reads.
      doc: one line for ``jaxdyn list``.
      minimum: lower bounds of its own fields where stricter than the common ones,
        ``(("seq_len", 2),)``.
      classifier: ``"package.module:function"`` returning ``(flax module, params)`` of a
        classifier of its examples (a GAN scores its samples by their classes), or ``""``.
      sample: ``DataConfig -> ((key, batch_size) -> (x, y))``: fresh training examples drawn
        on the device from the distribution of ``load``'s training set, for ``data.fresh``
        (a dataset with a sampler lists ``"fresh"`` in ``fields``); ``None``: a fixed set only.
    """

    load: Callable
    info: Callable
    fields: tuple[str, ...] = ()
    doc: str = ""
    minimum: tuple[tuple[str, int], ...] = ()
    classifier: str = ""
    sample: Callable | None = None


def fixed(load: Callable[[], Dataset], info: DatasetInfo, doc: str) -> DatasetSpec:
    """A dataset with no settings of its own (MNIST-1D, digits)."""
    return DatasetSpec(lambda cfg: load(), lambda cfg: info, (), doc)


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$JAXDYN_CACHE`` or ``~/.cache/jaxdyn``."""
    return Path(os.environ.get("JAXDYN_CACHE") or Path.home() / ".cache" / "jaxdyn")
