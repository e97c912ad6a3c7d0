"""The user's own arrays: handed to ``jaxdyn.run(data=...)``, or returned by a function that
``[data] name = "package.module:function"`` names.

Either way they pass the checks a ``.npz`` file passes, with the same messages (NaN
rows, label ranges, shapes), and ``data.targets`` says whether ``y`` holds class
labels (the default) or regression values. Without a test split, ``data.test_fraction``
is held out by a permutation from ``data.seed``.

Arrays handed over directly are named in ``config.toml`` by their SHA-256
(``data.name = "arrays:<digest>"``), and the run folder keeps a copy
(``arrays/<digest>.npz``), so a resume, ``extract_member`` or a report in another
process finds them there; different arrays are a changed config, refused with a diff.
"""

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxdyn import extension
from jaxdyn.atomic import save_npz
from jaxdyn.data.dataset import Dataset, DatasetInfo, DatasetSpec
from jaxdyn.data.files import assemble, info_of
from jaxdyn.errors import ConfigError

PREFIX = "arrays:"
FIELDS = ("test_fraction", "seed", "targets")
KEYS = ("x", "y", "x_test", "y_test", "client")  # client: a federated client id per training example


def is_user_data(name) -> bool:
    return isinstance(name, str) and (name.startswith(PREFIX) or extension.is_path(name))


def parts_of(data, where: str) -> dict[str, np.ndarray]:
    """``{"x", "y"[, "x_test", "y_test"]}`` from a tuple ``(x, y[, x_test, y_test])``, a dict
    with those keys, or a ``Dataset``, as numpy arrays."""
    if isinstance(data, Dataset):
        data = data._asdict()
        data = {"x": data["x_train"], "y": data["y_train"], "x_test": data["x_test"], "y_test": data["y_test"]}
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 4):
            raise ConfigError(f"{where}: a tuple of {len(data)} arrays; give (x, y) or (x, y, x_test, y_test)")
        data = dict(zip(KEYS, data))
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} is {type(data).__name__}; give (x, y, x_test, y_test), a dict with those keys, "
                          "or a jaxdyn.data.Dataset")
    unknown = [k for k in data if k not in KEYS]
    if unknown or "x" not in data or "y" not in data:
        raise ConfigError(f"{where}: keys {sorted(map(str, data))}; give x and y, and optionally x_test and y_test "
                          "(and client: a client id per row of x, for federated.partition = \"natural\")")
    if "client" in data and "x_test" not in data:
        raise ConfigError(f"{where}: client ids without x_test and y_test; give the test split too, so that the "
                          "ids stay with their training rows")
    if ("x_test" in data) != ("y_test" in data):
        raise ConfigError(f"{where}: give both x_test and y_test for a test split, or neither to hold out "
                          "data.test_fraction of x and y")
    return {k: np.asarray(v) for k, v in data.items() if v is not None}


def fingerprint(parts: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays' keys, dtypes, shapes and bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    for key in KEYS:
        if key in parts:
            a = np.ascontiguousarray(parts[key])
            h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def hand_over(data) -> str:
    """Remember arrays handed to ``jaxdyn.run(data=...)`` for this process; their ``data.name``."""
    if isinstance(data, str):
        return data
    if callable(data):
        return extension.remember(data)
    parts = parts_of(data, "data")
    return extension.remember(parts, PREFIX + fingerprint(parts))


def run_copies(run_dir) -> Path:
    """Where a run folder keeps the arrays handed over for it: ``RUN/arrays/<digest>.npz``."""
    return Path(run_dir) / "arrays"


def write_copy(name: str, path) -> None:
    """Write the arrays handed over under ``name`` to ``path`` as an .npz, atomically."""
    save_npz(path, **extension.given(name))


def adopt(run_dir) -> None:
    """Remember the arrays a run folder keeps under their names, so that this process resumes,
    extracts and reports without being handed them again. A copy whose arrays no longer have
    its digest is passed over (a resume then asks for the arrays)."""
    for path in sorted(run_copies(run_dir).glob("*.npz")):
        name = PREFIX + path.stem
        if extension.given(name) is None:
            with np.load(path, allow_pickle=False) as f:
                parts = {k: f[k] for k in f.files}
            if fingerprint(parts) == path.stem:
                extension.remember(parts, name)


_loaded: dict = {}  # (name, source config) -> Dataset: each function is called once per config


def _arrays(cfg) -> tuple[str, dict]:
    name = cfg.name
    if name.startswith(PREFIX):
        parts = extension.given(name)
        if parts is None:
            raise ConfigError(f"data.name = {name!r} names arrays handed to jaxdyn.run(data=...) in another "
                              "process, and no run folder here keeps a copy; pass the same arrays again: jaxdyn.run(..., resume=RUN, data=(x, y, "
                              "x_test, y_test)), or save them with np.savez and use data.name = \"npz\"")
        return "data", parts
    fn = extension.resolve(name, "data.name")
    if not callable(fn):
        raise ConfigError(f"data.name = {name!r} is {type(fn).__name__}, not a function returning arrays")
    return f"data.name = {name!r}", parts_of(fn(), f"data.name = {name!r} returned a value that")


def client_ids(cfg):
    """The client id of each training example handed over with the arrays (``client``; the first
    ``data.n_train`` when that is set), or None when none were given."""
    ids = _arrays(cfg)[1].get("client")
    if ids is None:
        return None
    ids = np.asarray(ids)
    return ids[: cfg.n_train] if cfg.n_train else ids


def load(cfg) -> Dataset:
    key = (cfg.name, cfg.source())
    if key not in _loaded:
        source, parts = _arrays(cfg)
        _loaded.clear()  # one user dataset at a time: a big one is not kept twice
        _loaded[key] = assemble(cfg, source, parts["x"], parts["y"], parts.get("x_test"), parts.get("y_test"),
                                classes=cfg.targets == "classes", scale=False)
    return _loaded[key]


def info(cfg) -> DatasetInfo:
    return info_of(load(cfg))


SPEC = DatasetSpec(load, info, FIELDS, "your own arrays: jaxdyn.run(data=(x, y, x_test, y_test)), or "
                                       "data.name = \"package.module:function\" returning them")
