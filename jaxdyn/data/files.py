"""The user's own data: a ``.npz`` file, or MNIST-format IDX files (gzipped or plain).

Everything is checked on the host before anything compiles, and every failure is
one ``ConfigError`` that names the file, the rows and the fix: a missing key,
x and y of different lengths, NaN or Inf, labels out of range or not integers, a
wrong dtype, an empty split.

Without a test split in the file, ``data.test_fraction`` of the examples, chosen by
a permutation from ``data.seed``, is held out: the same split in every run.
"""

import gzip
import struct
from pathlib import Path

import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo
from jaxdyn.errors import ConfigError

SHOW_ROWS = 5  # row indices named in a message


def _rows(mask: np.ndarray) -> str:
    """``"rows 3, 17, 40 (3 in all)"`` for a boolean mask over examples."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(map(str, idx[:SHOW_ROWS])) + (", ..." if len(idx) > SHOW_ROWS else "")
    return f"row{'s' if len(idx) > 1 else ''} {shown} ({len(idx)} in all)"


def _source(cfg) -> Path:
    path = Path(cfg.path).expanduser()
    if not cfg.path:
        raise ConfigError(f"data.name = {cfg.name!r} reads your own file: set data.path, e.g. "
                          f"data.path = {'data/train.npz' if cfg.name == 'npz' else 'mnist/'!r}")
    if not path.exists():
        raise ConfigError(f"data.path = {cfg.path!r} does not exist; give the path of your "
                          f"{'.npz file' if cfg.name == 'npz' else 'IDX images file or MNIST folder'}")
    return path


# --------------------------------------------------------------------------------- npz

def read_npz(cfg) -> dict:
    """The arrays of ``data.path`` by key, loaded without pickles."""
    path = _source(cfg)
    if path.is_dir():
        raise ConfigError(f"data.path = {cfg.path!r} is a folder; data.name = 'npz' reads one .npz file "
                          "(data.name = 'idx' reads a folder of MNIST files)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays need pickles: the data is not plain numbers
        raise ConfigError(f"{path}: {e}; save plain numeric arrays with np.savez(path, x=..., y=...)") from None
    except (OSError, EOFError) as e:
        raise ConfigError(f"{path}: not a readable .npz file ({e}); write it with np.savez(path, x=..., y=...)") from None
    if not isinstance(arrays, dict):
        raise ConfigError(f"{path}: holds one array, not named arrays; write it with np.savez(path, x=..., y=...)")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ConfigError(f"{path}: missing key {' and '.join(map(repr, missing))} (it holds "
                          f"{', '.join(map(repr, arrays)) or 'nothing'}); save the inputs as x and the "
                          "targets as y: np.savez(path, x=..., y=..., [x_test=..., y_test=...])")
    if ("x_test" in arrays) != ("y_test" in arrays):
        have, lack = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise ConfigError(f"{path}: has {have} but no {lack}; give both for a test split, or neither to "
                          "hold out data.test_fraction of x and y")
    return arrays


def load_npz(cfg) -> Dataset:
    arrays = read_npz(cfg)
    path = str(_source(cfg))
    return assemble(cfg, path, arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"),
                    classes=cfg.targets == "classes", scale=False)


# --------------------------------------------------------------------------------- idx

IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MNIST_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (LeCun's MNIST format), gzipped or plain, as a native-endian array.

    The header is two zero bytes, a type code, the number of dimensions, and each
    dimension as a big-endian uint32; the data follows, big-endian.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ConfigError(f"{path}: a damaged gzip file ({e}); download or gzip it again") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_TYPES:
        raise ConfigError(f"{path}: not an IDX file (its first bytes are {raw[:4].hex(' ')}, expected "
                          "00 00, a type code such as 08 and the number of dimensions)")
    ndim, dtype = raw[3], IDX_TYPES[raw[2]]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ConfigError(f"{path}: the IDX header is cut short or declares no dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ConfigError(f"{path}: holds {len(raw) - header} bytes of data but its header promises "
                          f"{expected} ({' x '.join(map(str, dims))} of {dtype.name}); the file is cut "
                          "short or damaged: download it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_files(cfg) -> dict:
    """``{"train": (images, labels), "test": (images, labels) or None}`` from ``data.path``.

    A folder must hold MNIST's file names (``train-images-idx3-ubyte`` ..., each
    possibly ``.gz``); the ``t10k`` pair is optional. A single images file is paired
    with the labels file whose name has ``labels-idx1`` for ``images-idx3``.
    """
    path = _source(cfg)
    if path.is_dir():
        found = {split: tuple(_find(path, stem) for stem in names) for split, names in MNIST_NAMES.items()}
        if None in found["train"]:
            raise ConfigError(f"data.path = {cfg.path!r}: the folder lacks "
                              f"{' and '.join(n for n, f in zip(MNIST_NAMES['train'], found['train']) if f is None)}"
                              " (optionally .gz); give the folder holding MNIST-named IDX files, or the images file")
        return {"train": found["train"], "test": None if None in found["test"] else found["test"]}
    if "images" not in path.name:
        raise ConfigError(f"data.path = {cfg.path!r}: cannot tell its labels file; name the pair like MNIST "
                          "(train-images-idx3-ubyte and train-labels-idx1-ubyte) or give their folder")
    labels = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
    if not labels.is_file():
        raise ConfigError(f"data.path = {cfg.path!r}: its labels file {labels} does not exist; put it beside "
                          "the images file")
    return {"train": (path, labels), "test": None}


def load_idx(cfg) -> Dataset:
    files = idx_files(cfg)
    train = [read_idx(p) for p in files["train"]]
    test = [read_idx(p) for p in files["test"]] if files["test"] else [None, None]
    where = " + ".join(str(p) for p in files["train"])
    return assemble(cfg, where, *train, *test, classes=True, scale=True)


# ---------------------------------------------------------------------------- checking

def assemble(cfg, source: str, x, y, x_test, y_test, classes: bool, scale: bool) -> Dataset:
    """Check the arrays, split off a test set if there is none, and cast them.

    Args:
      source: names the arrays in messages (a file's path).
      classes: ``y`` holds class labels (integers 0..C-1), else regression values.
      scale: uint8 inputs are divided by 255 (images).
    """
    parts = {"x": x, "y": y} if x_test is None else {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    for key, arr in parts.items():
        _check_dtype(source, key, arr, integer_labels=classes and key.startswith("y"))
        if arr.ndim == 0 or len(arr) == 0:
            raise ConfigError(f"{source}: {key} is empty (shape {arr.shape}); it needs at least one example")
    for suffix in ("", "_test"):
        if f"x{suffix}" in parts and len(parts[f"x{suffix}"]) != len(parts[f"y{suffix}"]):
            raise ConfigError(f"{source}: x{suffix} has {len(parts[f'x{suffix}'])} rows but y{suffix} has "
                              f"{len(parts[f'y{suffix}'])}; give one target per example")
    if x.ndim < 2:
        raise ConfigError(f"{source}: x has shape {list(x.shape)}; give examples as rows [N, features...] "
                          "(reshape a single feature to [N, 1])")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise ConfigError(f"{source}: x_test examples have shape {list(x_test.shape[1:])} but x's have "
                          f"{list(x.shape[1:])}; both splits need the same example shape")
    for key, arr in parts.items():
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if bad.any():
                raise ConfigError(f"{source}: {key} has NaN or Inf values in {_rows(bad)}; drop or impute "
                                  "those rows")
    if classes:
        for key in [k for k in parts if k.startswith("y")]:
            parts[key] = _labels(source, key, parts[key])
        n_classes = int(parts["y"].max()) + 1
        if "y_test" in parts and parts["y_test"].max() >= n_classes:
            high = parts["y_test"] >= n_classes
            raise ConfigError(f"{source}: y_test has label {int(parts['y_test'].max())} in {_rows(high)}, but "
                              f"the training labels go 0..{n_classes - 1}; every test class must occur in y")
    elif y.ndim > 2:
        raise ConfigError(f"{source}: y has shape {list(y.shape)}; regression targets are [N] or [N, outputs]")
    if x_test is None:
        x, y, x_test, y_test = _split(cfg, source, x, parts["y"])
    else:
        y, y_test = parts["y"], parts["y_test"]
    to_float = (lambda a: a.astype(np.float32) / np.float32(255)) if scale and x.dtype == np.uint8 \
        else (lambda a: a.astype(np.float32))
    if x.ndim == 3 and cfg.name == "idx":  # IDX images [N, H, W] -> [N, H, W, 1]
        x, x_test = x[..., None], x_test[..., None]
    y_type = np.int32 if classes else np.float32
    return Dataset(to_float(x), y.astype(y_type), to_float(x_test), y_test.astype(y_type))


def _check_dtype(source: str, key: str, arr: np.ndarray, integer_labels: bool) -> None:
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{source}: {key} has dtype {arr.dtype}; give plain numbers (float32 inputs, "
                          f"{'integer labels' if integer_labels else 'float targets'})")


def _labels(source: str, key: str, y: np.ndarray) -> np.ndarray:
    """Class labels as int64 ``[N]``, or a message naming the offending rows."""
    if y.ndim != 1:
        raise ConfigError(f"{source}: {key} has shape {list(y.shape)}; class labels are one integer per "
                          "example, [N] (for real-valued targets set data.targets = \"values\")")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ConfigError(f"{source}: {key} holds labels that are not integers in {_rows(bad)} (e.g. "
                              f"{y[bad][0].item()!r}); class labels are 0..C-1 (for real-valued targets set "
                              "data.targets = \"values\")")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ConfigError(f"{source}: {key} has negative labels in {_rows(y < 0)}; class labels are 0..C-1")
    if y.max() >= 2**16:
        raise ConfigError(f"{source}: {key} has label {int(y.max())}; class labels are 0..C-1 with at most "
                          "65,536 classes: renumber them")
    return y


def _split(cfg, source: str, x, y):
    """Hold out ``round(test_fraction · N)`` examples chosen by a permutation from ``data.seed``."""
    n = len(x)
    n_test = round(cfg.test_fraction * n)
    if n_test == 0 or n_test == n:
        side = "test" if n_test == 0 else "training"
        raise ConfigError(f"{source}: data.test_fraction = {cfg.test_fraction} of {n} examples leaves the "
                          f"{side} split empty; choose a fraction that leaves both at least one example, "
                          "or give x_test and y_test")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return x[train], y[train], x[test], y[test]


def info_of(ds: Dataset) -> DatasetInfo:
    """What is known of checked arrays: sizes, example shape, classes (0: regression values)."""
    n_classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1 if ds.y_train.dtype == np.int32 else 0
    return DatasetInfo(len(ds.x_train), len(ds.x_test), tuple(ds.x_train.shape[1:]), n_classes,
                       tuple(ds.y_train.shape[1:]))


def file_info(load):
    """``info`` for a user file: read (and check) it once per config, file size and time."""
    cache = {}

    def info(cfg) -> DatasetInfo:
        return info_of(cached_load(cfg))

    def cached_load(cfg) -> Dataset:
        path = _source(cfg)
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in ([path] if path.is_file() else sorted(path.iterdir())))
        key = (cfg.source(), stamp)
        if key not in cache:
            cache.clear()  # one file at a time: a big dataset is not kept twice
            cache[key] = load(cfg)
        return cache[key]

    return info, cached_load
