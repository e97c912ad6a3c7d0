"""MNIST-1D, generated offline with the ``mnist1d`` package (never downloaded)."""

import random

import numpy as np

from jaxdyn.atomic import save_npz
from jaxdyn.data.dataset import Dataset, DatasetInfo, cache_dir
from jaxdyn.errors import ConfigError


DEFAULT_TRAIN = 4000
TEST = 1000


def mnist1d_info(cfg):
    """``data.n_examples`` training signals (0: the paper's 4,000), 1,000 test, length 40, 10 classes."""
    if cfg.n_examples < 0:
        raise ConfigError(f"data.n_examples = {cfg.n_examples}: training examples to generate, >= 1 (or 0 for "
                          f"MNIST-1D's {DEFAULT_TRAIN})")
    return DatasetInfo(cfg.n_examples or DEFAULT_TRAIN, TEST, (40,), 10)


def load_mnist1d_config(cfg):
    return load_mnist1d(cfg.n_examples or DEFAULT_TRAIN)


def load_mnist1d(n_train: int = DEFAULT_TRAIN):
    """``n_train`` train / 1000 test signals of length 40, cached as ``.npz``.

    Generated as the paper's (``make_dataset`` with its default arguments and seed) with
    ``num_samples = n_train + 1000`` and the last 1000 the test set, so the default 4000 is
    the paper's 5000-sample dataset; another size is another draw, its test set included.
    ``make_dataset`` reseeds numpy's and Python's global generators; their states are saved
    and restored around it so callers do not see that.
    """
    path = cache_dir() / f"mnist1d_{n_train}_{TEST}_len40.npz"
    if path.exists():
        with np.load(path) as f:
            return Dataset(*(f[k] for k in Dataset._fields))

    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        args = get_dataset_args()
        args.num_samples, args.train_split, args.final_seq_length = n_train + TEST, n_train / (n_train + TEST), 40
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    ds = Dataset(
        x_train=raw["x"].astype(np.float32),
        y_train=raw["y"].astype(np.int32),
        x_test=raw["x_test"].astype(np.float32),
        y_test=raw["y_test"].astype(np.int32),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, **ds._asdict())  # two test workers filling an empty cache: each whole, last wins
    except OSError as e:
        raise ConfigError(
            f"cannot cache MNIST-1D in {path.parent} ({e.strerror or e}); point JAXDYN_CACHE at a "
            "writable folder"
        ) from None
    return ds


# The paper's shuffle test: one fixed permutation of the 40 positions, the same for
# every example, train and test, so the examples are MNIST-1D's own.
SHUFFLE_SEED = 0


def load_mnist1d_shuffled():
    """MNIST-1D with its 40 positions permuted by one fixed permutation (Greydanus 2020)."""
    ds = load_mnist1d()
    perm = np.random.RandomState(SHUFFLE_SEED).permutation(ds.x_train.shape[1])
    return Dataset(ds.x_train[:, perm], ds.y_train, ds.x_test[:, perm], ds.y_test)
