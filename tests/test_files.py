"""The user's own data: .npz and IDX round trips, and a clear message for each kind of bad file."""

import gzip
import struct

import numpy as np
import pytest

import jaxdyn
from jaxdyn.config import load_config
from jaxdyn.data import dataset_info, load_dataset
from jaxdyn.data.files import read_idx
from jaxdyn.study import expand


def write_idx(path, arr: np.ndarray, zipped: bool = False) -> None:
    """An IDX file written from the format's definition (independent of the reader)."""
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if zipped else raw)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 6, 5), dtype=np.uint8), rng.integers(0, 3, 30).astype(np.uint8)


def expand_data(data: dict, **sections):
    return expand(load_config({"data": data, **sections}))


def test_npz_with_a_test_split_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 7)).astype(np.float32), rng.integers(0, 4, 40)
    xt, yt = rng.normal(size=(10, 7)).astype(np.float32), rng.integers(0, 4, 10)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    ds = load_dataset("npz", path=str(tmp_path / "d.npz"))
    for got, want in zip(ds, (x, y, xt, yt)):
        np.testing.assert_array_equal(got, want)
    assert ds.y_train.dtype == np.int32
    info = dataset_info("npz", path=str(tmp_path / "d.npz"))
    assert (info.n_train, info.n_test, info.input_shape, info.n_classes) == (40, 10, (7,), 4)


def test_npz_without_a_test_split_holds_out_a_fixed_fraction(tmp_path):
    x = np.arange(100, dtype=np.float64).reshape(50, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 5)
    ds = load_dataset("npz", path=str(tmp_path / "d.npz"), test_fraction=0.2)
    assert len(ds.x_train) == 40 and len(ds.x_test) == 10 and ds.x_train.dtype == np.float32
    # Every example lands in exactly one split, with its own label.
    rows = np.concatenate([ds.x_train[:, 0], ds.x_test[:, 0]]) / 2
    np.testing.assert_array_equal(np.sort(rows), np.arange(50))
    np.testing.assert_array_equal(ds.y_test, (ds.x_test[:, 0] / 2).astype(int) % 5)
    again = load_dataset("npz", path=str(tmp_path / "d.npz"), test_fraction=0.2)
    np.testing.assert_array_equal(again.x_test, ds.x_test)  # fixed by data.seed
    other = load_dataset("npz", path=str(tmp_path / "d.npz"), test_fraction=0.2, seed=3)
    assert not np.array_equal(other.x_test, ds.x_test)


def test_npz_regression_targets(tmp_path):
    x = np.random.default_rng(2).normal(size=(20, 3))
    np.savez(tmp_path / "r.npz", x=x, y=x.sum(1) + 0.25)
    ds = load_dataset("npz", path=str(tmp_path / "r.npz"), targets="values")
    assert ds.y_train.dtype == np.float32 and dataset_info("npz", path=str(tmp_path / "r.npz"), targets="values").regression
    np.testing.assert_allclose(ds.y_train, ds.x_train.sum(1) + 0.25, rtol=1e-5)


@pytest.mark.parametrize("zipped", [False, True])
def test_idx_folder_round_trips(tmp_path, images, zipped):
    x, y = images
    suffix = ".gz" if zipped else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x[:20], zipped)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y[:20], zipped)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x[20:], zipped)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y[20:], zipped)
    ds = load_dataset("idx", path=str(tmp_path))
    assert ds.x_train.shape == (20, 6, 5, 1) and ds.x_test.shape == (10, 6, 5, 1)
    np.testing.assert_allclose(ds.x_train[..., 0], x[:20] / 255.0, rtol=1e-6)  # bytes scaled to [0, 1]
    np.testing.assert_array_equal(ds.y_test, y[20:])
    # A 2D CNN takes the images as they are.
    expand_data({"name": "idx", "path": str(tmp_path)}, model={"kind": "cnn", "channels": [4], "kernels": [3], "strides": [1], "padding": "same"},
                train={"batch_size": 10})


def test_idx_single_pair_is_split_and_other_dtypes_read(tmp_path, images):
    x, y = images
    write_idx(tmp_path / "mine-images-idx3-ubyte", x)
    write_idx(tmp_path / "mine-labels-idx1-ubyte", y)
    ds = load_dataset("idx", path=str(tmp_path / "mine-images-idx3-ubyte"), test_fraction=0.1)
    assert len(ds.x_train) == 27 and len(ds.x_test) == 3
    floats = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    write_idx(tmp_path / "f.idx", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def npz(tmp_path, **arrays) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


GOOD_X = np.zeros((10, 4), np.float32)
GOOD_Y = np.arange(10) % 2


@pytest.mark.parametrize("arrays, extra, message", [
    ({"x": GOOD_X}, {}, "missing key 'y' (it holds 'x'); save the inputs as x and the targets as y"),
    ({"x": GOOD_X, "y": GOOD_Y[:9]}, {}, "x has 10 rows but y has 9; give one target per example"),
    ({"x": np.where(np.arange(40).reshape(10, 4) % 13 == 3, np.nan, 0.0), "y": GOOD_Y}, {},
     "x has NaN or Inf values in rows 0, 4, 7 (3 in all); drop or impute those rows"),
    ({"x": GOOD_X, "y": np.array([0, 1, 0.5, 1, 0, 1, 2.5, 0, 1, 0])}, {},
     "y holds labels that are not integers in rows 2, 6 (2 in all) (e.g. 0.5)"),
    ({"x": GOOD_X, "y": np.array([0, 1, -1, 1, 0, 1, 0, 0, 1, 0])}, {}, "y has negative labels in row 2 (1 in all)"),
    ({"x": GOOD_X, "y": GOOD_Y, "x_test": GOOD_X[:3], "y_test": np.array([0, 5, 1])}, {},
     "y_test has label 5 in row 1 (1 in all), but the training labels go 0..1"),
    ({"x": np.array([["a"] * 4] * 10), "y": GOOD_Y}, {}, "x has dtype <U1; give plain numbers"),
    ({"x": GOOD_X, "y": GOOD_Y}, {"test_fraction": 0.01},
     "data.test_fraction = 0.01 of 10 examples leaves the test split empty"),
    ({"x": GOOD_X[:0], "y": GOOD_Y[:0]}, {}, "x is empty (shape (0, 4))"),
    ({"x": GOOD_X, "y": GOOD_Y, "x_test": GOOD_X[:2]}, {}, "has x_test but no y_test"),
])
def test_bad_npz_files_fail_before_compiling_with_the_file_and_rows(tmp_path, arrays, extra, message):
    path = npz(tmp_path, **arrays)
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand_data({"name": "npz", "path": path, **extra}, train={"batch_size": 2})
    assert message in str(err.value) and path in str(err.value), str(err.value)


def test_a_model_that_cannot_take_the_input_shape_names_the_file(tmp_path):
    path = npz(tmp_path, x=GOOD_X, y=GOOD_Y)
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand_data({"name": "npz", "path": path}, model={"kind": "cnn", "conv_dims": 2}, train={"batch_size": 5})
    assert "model.conv_dims" in str(err.value) and path in str(err.value)


def test_bad_idx_files_and_paths(tmp_path, images):
    x, y = images
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x89PNG not idx")
    write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    with pytest.raises(jaxdyn.ConfigError, match="train-images-idx3-ubyte: not an IDX file"):
        load_dataset("idx", path=str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-7])
    with pytest.raises(jaxdyn.ConfigError, match="holds 893 bytes of data but its header promises 900"):
        load_dataset("idx", path=str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte", x[:29])
    with pytest.raises(jaxdyn.ConfigError, match="x has 29 rows but y has 30"):
        load_dataset("idx", path=str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(jaxdyn.ConfigError, match="the folder lacks train-labels-idx1-ubyte"):
        load_dataset("idx", path=str(tmp_path))
    with pytest.raises(jaxdyn.ConfigError, match="data.path = 'nowhere' does not exist"):
        load_dataset("idx", path="nowhere")
    with pytest.raises(jaxdyn.ConfigError, match="set data.path"):
        expand_data({"name": "npz"})
