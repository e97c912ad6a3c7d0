"""One way to write a file so that no reader, and no crash, ever sees half of it.

``write(tmp)`` fills a temporary file with a name no other writer uses (``mkstemp`` in
the target's own folder, so the rename stays on one file system), then ``os.replace``
puts it in place in one step. Two processes filling the same cache file at once each
write their own temporary and the last rename wins whole; a kill or a full disk
leaves the old file (or none), never a torn one.
"""

import errno
import os
import tempfile
from pathlib import Path

import numpy as np

from jaxdyn.errors import ConfigError

SUFFIX = ".tmp"  # leftovers of a killed writer end so: a folder's owner may sweep them


def check_writable(folder, what: str, fix: str) -> None:
    """Raise ``ConfigError`` unless files can be made in ``folder``: a scratch folder is made and
    removed at once in it, or, when it does not exist yet, in the nearest folder above it that
    does (nothing is left behind). ``what`` names the folder in the message (``output folder
    runs/a``, ``--out cmp``), ``fix`` says what to do."""
    folder = Path(folder)
    base = next((p for p in (folder, *folder.absolute().parents) if p.exists()), Path("."))
    if not base.is_dir():
        raise ConfigError(f"{what} is not writable ({base} is a file); {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".jaxdyn-check-", dir=base))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free space on that disk, or {fix}"
        raise ConfigError(f"{what} is not writable ({e.strerror or e}); {fix}") from None


def write_atomic(path, write) -> None:
    """``write(tmp_path)``, then rename it over ``path``. ``tmp_path`` ends in ``.tmp``: a writer
    that appends its own suffix (``np.savez`` adds ``.npz`` to a path) must write to an open
    file instead (``with open(tmp, "wb") as f: np.savez(f, ...)``)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def save_npz(path, **arrays) -> None:
    """``np.savez`` of ``arrays`` to ``path`` atomically (plain arrays, no pickles)."""
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a path
            np.savez(f, **arrays)

    write_atomic(path, write)
