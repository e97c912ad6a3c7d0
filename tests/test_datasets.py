"""Datasets beyond MNIST-1D: digits, the shuffled MNIST-1D, subsets, standardisation,
and full-batch gradient descent."""

import hashlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.data import dataset_info, load_dataset
from jaxdyn.models import MODELS
from jaxdyn.models.linear import Linear
from jaxdyn.optim import FAMILIES
from jaxdyn.tasks.supervised import SupervisedTask

from conftest import member_arrays


def digest(ds) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in ds)).hexdigest()


def test_digits_shapes_split_and_determinism():
    ds = load_dataset("digits")
    info = dataset_info("digits")
    assert ds.x_train.shape == (info.n_train, 8, 8, 1) and ds.x_test.shape == (info.n_test, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # Stratified: each class puts a fifth of its images in the test set.
    for label in range(10):
        n_test, n_all = (ds.y_test == label).sum(), (ds.y_train == label).sum() + (ds.y_test == label).sum()
        assert n_test == round(0.2 * n_all)
    assert digest(ds) == digest(load_dataset("digits"))  # fixed in this process...
    code = "import jaxdyn, hashlib, numpy as np; from jaxdyn.data import load_dataset; ds = load_dataset('digits'); " \
           "print(hashlib.sha256(b''.join(np.ascontiguousarray(a).tobytes() for a in ds)).hexdigest())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == digest(ds)  # ...and in another


def test_shuffled_mnist1d_is_one_fixed_permutation_of_the_same_examples():
    plain, shuffled = load_dataset("mnist1d"), load_dataset("mnist1d_shuffled")
    np.testing.assert_array_equal(plain.y_train, shuffled.y_train)
    np.testing.assert_array_equal(plain.y_test, shuffled.y_test)
    # Find the permutation from one example, then check it maps every example, train and test.
    perm = np.array([np.flatnonzero(plain.x_train[0] == v)[0] for v in shuffled.x_train[0]])
    assert sorted(perm) == list(range(40)) and not np.array_equal(perm, np.arange(40))
    np.testing.assert_array_equal(plain.x_train[:, perm], shuffled.x_train)
    np.testing.assert_array_equal(plain.x_test[:, perm], shuffled.x_test)


def test_mnist1d_generated_at_another_size(monkeypatch, tmp_path):
    """``data.n_examples``: the same generator with n + 1000 samples and the last 1000 the test
    set; 4000 is the default dataset itself (generated here in an empty cache, not read back)."""
    from mnist1d.data import get_dataset_args, make_dataset

    default = load_dataset("mnist1d")
    monkeypatch.setenv("JAXDYN_CACHE", str(tmp_path))
    np.testing.assert_array_equal(load_dataset("mnist1d", n_examples=4000).x_train, default.x_train)
    big = load_dataset("mnist1d", n_examples=6000)
    assert big.x_train.shape == (6000, 40) and big.x_test.shape == (1000, 40)
    args = get_dataset_args()
    args.num_samples, args.train_split, args.final_seq_length = 7000, 6 / 7, 40
    raw = make_dataset(args)
    np.testing.assert_array_equal(big.y_train, raw["y"])
    np.testing.assert_allclose(big.x_test, raw["x_test"], rtol=1e-6)
    assert np.bincount(big.y_train).min() > 500  # all ten classes, about equally


def test_subset_and_standardisation_use_training_statistics():
    full = load_dataset("mnist1d")
    ds = load_dataset("mnist1d", n_train=100, standardize=True)
    assert ds.x_train.shape == (100, 40) and ds.x_test.shape == full.x_test.shape
    np.testing.assert_array_equal(ds.y_train, full.y_train[:100])
    mean, std = full.x_train[:100].mean(0), full.x_train[:100].std(0)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, rtol=1e-4)
    np.testing.assert_allclose(ds.x_test, (full.x_test - mean) / std, rtol=1e-4, atol=1e-5)  # train stats


def test_full_batch_step_is_the_closed_form_gradient_step(mesh):
    ds = load_dataset("digits", n_train=50)
    data = pop.replicate(ds, mesh)
    task = SupervisedTask(Linear(10), FAMILIES["sgd"], 50, (8, 8, 1), full_batch=True)
    seeds, hp = member_arrays("sgd", [0, 1], [0, 1], learning_rate=0.5)
    before = jax.tree.map(np.asarray, pop.init_population(task, seeds, hp, mesh).params)
    after, _ = pop.make_train_chunk(task, 1, 1, 1, mesh)(pop.init_population(task, seeds, hp, mesh), data)
    x = ds.x_train.reshape(50, -1).astype(np.float64)
    onehot = np.eye(10)[ds.y_train]
    for i in range(2):
        w, b = before["head"]["kernel"][i].astype(np.float64), before["head"]["bias"][i].astype(np.float64)
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad_w, grad_b = x.T @ (p - onehot) / 50, (p - onehot).mean(0)  # softmax regression's gradient
        np.testing.assert_allclose(after.params["head"]["kernel"][i], w - 0.5 * grad_w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(after.params["head"]["bias"][i], b - 0.5 * grad_b, rtol=1e-4, atol=1e-6)


def test_a_2d_cnn_learns_digits(tmp_path):
    cfg = {"study": {"seeds": 2}, "data": {"name": "digits"},
           "model": {"kind": "cnn", "channels": [16, 32], "kernels": [3, 3], "strides": [1, 1],
                     "padding": "same", "pool": "max", "pool_size": 2},
           "optim": {"learning_rate": 3e-3},
           "train": {"steps": 600, "batch_size": 64, "chunk_steps": 300, "log_every": 100}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    # Measured over 8 seeds: 0.986 +- 0.003 (min 0.983); 0.95 <= mean - 5 std = 0.972; chance 0.1.
    assert (res.members.final_test_accuracy >= 0.95).all(), res.members.final_test_accuracy


@pytest.mark.parametrize("data, message", [
    ({"name": "digits", "n_train": 5000}, "data.n_train = 5000: the digits training set has 1438 examples"),
    ({"name": "digitz"}, "data.name = 'digitz' is not known; did you mean 'digits'?"),
])
def test_bad_data_fields(data, message):
    from jaxdyn.config import load_config
    from jaxdyn.study import expand

    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({"data": data}))
    assert message in str(err.value)


def test_a_1d_cnn_on_images_is_refused_before_compiling():
    from jaxdyn.config import load_config
    from jaxdyn.study import expand

    with pytest.raises(jaxdyn.ConfigError, match="model.conv_dims"):
        expand(load_config({"data": {"name": "digits"}, "model": {"kind": "cnn", "conv_dims": 1}}))
    assert MODELS["cnn"]  # the registry entry the check comes from


def test_label_noise_is_per_member_fixed_over_steps_and_at_its_rate():
    from jaxdyn.data import noisy_labels

    y = jnp.asarray(load_dataset("mnist1d").y_train)
    idx = jnp.arange(len(y))
    key_a, key_b = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    noisy = noisy_labels(y, idx, key_a, jnp.float32(0.3), 10)
    changed = float((noisy != y).mean())
    # 30% replaced, a tenth of those by their own class: 27% changed, within sampling error.
    assert abs(changed - 0.27) < 4 * np.sqrt(0.27 * 0.73 / len(y))
    np.testing.assert_array_equal(noisy_labels(y, idx, key_a, jnp.float32(0.0), 10), y)  # rate 0: none
    assert not np.array_equal(noisy, noisy_labels(y, idx, key_b, jnp.float32(0.3), 10))  # own per member
    # The same example gets the same noisy label whatever batch it is drawn in.
    some = jnp.array([5, 17, 5, 900])
    np.testing.assert_array_equal(noisy_labels(y[some], some, key_a, jnp.float32(0.3), 10), noisy[some])


def test_label_noise_is_a_member_axis(tmp_path):
    cfg = {"study": {"seeds": 1}, "model": {"hidden": [32]},
           "train": {"steps": 200, "batch_size": 64, "chunk_steps": 200, "log_every": 50},
           "grid": {"data.label_noise": [0.0, 0.8]}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    m = res.members.set_index("label_noise")
    assert len(res.members.cohort.unique()) == 1  # one compiled population
    assert m.loc[0.8, "final_train_loss"] > m.loc[0.0, "final_train_loss"]  # noisy labels are harder to fit
