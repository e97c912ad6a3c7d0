"""Offline datasets as arrays, and their registry.

A dataset is loaded on the host once, checked, and put on the device once; each
member then gathers its own minibatches by index inside the compiled loop, and
augments them there (``augment.py``).

Adding a dataset is one module (its loader and its ``DatasetInfo``) plus one entry
in ``DATASETS``; the ``[data]`` fields it reads are named in the entry.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.data import algorithmic, arrays, files, synthetic
from jaxdyn.data.algorithmic import check_token_inputs
from jaxdyn.data.augment import Augment
from jaxdyn.data.config import COMMON_FIELDS, DataConfig
from jaxdyn.data.dataset import Dataset, DatasetInfo, DatasetSpec, cache_dir, fixed
from jaxdyn.data.digits import load_digits
from jaxdyn.data import mnist1d
from jaxdyn.data.mnist1d import load_mnist1d_shuffled
from jaxdyn.errors import ConfigError, closest
from jaxdyn.hparams import HParam
from jaxdyn import streams
from jaxdyn.streams import Stream

HPARAMS = {
    "data.label_noise": HParam(0.0, high=1.0, high_open=False,
                               doc="fraction of training labels replaced by a uniform random class, "
                                   "chosen per member from its data seed (test labels untouched)"),
    "data.noise_std": HParam(0.0, doc="std of Gaussian noise added to each training input, drawn per "
                                      "member and step (augmentation; never in evaluation)"),
}

_npz_info, _npz_load = files.file_info(files.load_npz)
_idx_info, _idx_load = files.file_info(files.load_idx)
_USER = ("path", "test_fraction", "seed")

DATASETS: dict[str, DatasetSpec] = {
    "mnist1d": DatasetSpec(mnist1d.load_mnist1d_config, mnist1d.mnist1d_info, ("n_examples",),
                           "MNIST-1D (Greydanus 2020), generated offline: 4000 train / 1000 test, length 40; "
                           "n_examples = N generates N training examples instead"),
    "mnist1d_shuffled": fixed(load_mnist1d_shuffled, DatasetInfo(4000, 1000, (40,), 10),
                              "MNIST-1D with one fixed permutation of the 40 positions (the paper's shuffle test)"),
    "digits": dataclasses.replace(
        fixed(load_digits, DatasetInfo(1438, 359, (8, 8, 1), 10),
              "scikit-learn's 8x8 digits as [8, 8, 1] images in [0, 1]; fixed stratified 1438 / 359 split"),
        classifier="jaxdyn.gan.classifier:digits_classifier"),
    "adding": DatasetSpec(synthetic.load_adding, synthetic.adding_info, ("seq_len", "seed"),
                          "the adding problem, regression: [seq_len, 2] -> sum of the two marked values; "
                          "10000 / 1000", minimum=(("seq_len", 2),)),  # two marked positions
    "copy": DatasetSpec(synthetic.load_copy, synthetic.copy_info, ("seq_len", "seed"),
                        "the copy task: recall 10 symbols (8 classes) after a delay of seq_len; 5000 / 1000"),
    "teacher": DatasetSpec(synthetic.load_teacher, synthetic.teacher_info,
                           ("seed", "input_dim", "teacher_width", "teacher_depth", "teacher_noise"),
                           "regression on a random tanh teacher MLP's outputs for Gaussian inputs; 4000 / 1000"),
    "ring": DatasetSpec(synthetic.load_mixture("ring"), synthetic.mixture_info("ring"), ("seed",),
                        "8 Gaussians on the unit circle, std 0.01 (PacGAN's 2D-ring); label = mode; 100000 / 2500"),
    "grid": DatasetSpec(synthetic.load_mixture("grid"), synthetic.mixture_info("grid"), ("seed",),
                        "25 Gaussians on a 5x5 grid, spacing 2, std 0.05 (PacGAN's 2D-grid); label = mode; "
                        "100000 / 2500"),
    "modular": DatasetSpec(algorithmic.load_modular, algorithmic.modular_info,
                           ("p", "op", "train_fraction", "encoding", "seed"),
                           "modular arithmetic (Power et al. 2022, grokking): all pairs a, b in 0..p-1 -> "
                           "(a op b) mod p, p classes; op add, sub, mul or div (b in 1..p-1, p prime); any p >= 2, "
                           "the literature uses a prime such as 97; a train_fraction of the pairs trains, the rest "
                           "tests, split by seed; encoding tokens ([a, b, =] as ids, vocab p + 1; the default) or "
                           "onehot ([2p])"),  # its range checks (and parity's) are in its info: algorithmic.py
    "parity": DatasetSpec(algorithmic.load_parity, algorithmic.parity_info,
                          ("n", "k", "n_examples", "fresh", "encoding", "labels", "seed"),
                          "sparse parity (Barak et al. 2022): n uniform random bits -> the parity of the "
                          "first k (a fixed set, WLOG); n_examples train (or fresh = true: new examples each step) / "
                          "1000 test; encoding signs (-1/+1; "
                          "the default) or tokens (ids 0/1, vocab 2); labels classes (0/1) or signs (-1/+1, "
                          "regression)", sample=algorithmic.parity_sampler),
    "npz": DatasetSpec(_npz_load, _npz_info, (*_USER, "targets"),
                       "your .npz at data.path: x, y [, x_test, y_test]; else data.test_fraction held out"),
    "idx": DatasetSpec(_idx_load, _idx_info, _USER,
                       "your MNIST-format IDX files (gzipped or plain): an images file or their folder"),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``data.name``: a registered dataset, or the user's own arrays
    (``"arrays:<digest>"`` handed to ``jaxdyn.run``, or a ``"package.module:function"``)."""
    if arrays.is_user_data(name):
        return arrays.SPEC
    if name not in DATASETS:
        raise ConfigError(f"data.name = {name!r} is not known{closest(name, DATASETS)}; your own data is "
                          "data.name = \"package.module:function\" or jaxdyn.run(data=...)")
    return DATASETS[name]


def data_config(data: "DataConfig | str" = "mnist1d", **fields) -> DataConfig:
    """A ``DataConfig`` from a config, or from a dataset name and field values."""
    if isinstance(data, str):
        return DataConfig(name=data, **fields)
    return DataConfig(**{**data.__dict__, **fields}) if fields else data


def dataset_info(data: "DataConfig | str", **fields) -> DatasetInfo:
    """Shapes and sizes of the configured dataset (``n_train`` is the whole training set)."""
    cfg = data_config(data, **fields)
    return dataset_spec(cfg.name).info(cfg)


def load_dataset(data: "DataConfig | str" = "mnist1d", **fields) -> Dataset:
    """Load, type-check and NaN-check the configured dataset.

    Args:
      data: a ``DataConfig``, or a dataset name with its fields as keywords, e.g.
        ``load_dataset("adding", seq_len=100)``. ``n_train`` keeps the first N
        training examples (0 = all), e.g. for full-batch gradient descent on a
        subset; ``standardize`` z-scores each input feature with the (kept)
        training set's mean and std, and applies the same statistics to the test set.
    """
    cfg = data_config(data, **fields)
    info = dataset_info(cfg)
    check_token_inputs(cfg, info)
    ds = dataset_spec(cfg.name).load(cfg)
    for field, arr in ds._asdict().items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.sum(~np.isfinite(arr)))
            raise ConfigError(
                f"dataset {cfg.name!r}: {field} holds {bad} non-finite values; delete the cache "
                f"folder {cache_dir()} to regenerate it, or fix the loader."
            )
    want = (info.n_train, *info.input_shape)
    if ds.x_train.shape != want or ds.y_train.shape != (info.n_train, *info.target_shape):
        raise ConfigError(
            f"dataset {cfg.name!r}: x_train has shape {ds.x_train.shape}, expected "
            f"({', '.join(map(str, want))}); delete {cache_dir()} to regenerate it."
        )
    if cfg.n_train:
        ds = ds._replace(x_train=ds.x_train[:cfg.n_train], y_train=ds.y_train[:cfg.n_train])
    if cfg.standardize:
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
    keys = jax.vmap(lambda i: streams.key(data_key, Stream.LABEL_NOISE, i))(idx)
    flip = jax.vmap(lambda k: jax.random.uniform(k))(keys) < rate
    new = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (), 0, n_classes))(keys)
    return jnp.where(flip, new, labels).astype(labels.dtype)


__all__ = ["COMMON_FIELDS", "DATASETS", "HPARAMS", "Augment", "DataConfig", "Dataset", "DatasetInfo",
           "DatasetSpec", "cache_dir", "check_token_inputs", "data_config", "dataset_spec", "dataset_info", "fixed",
           "load_dataset", "noisy_labels"]
