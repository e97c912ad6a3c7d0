"""One atomic-write helper for every file jaxdyn writes: concurrent writers never tear a file."""

import threading

import numpy as np
import pytest

from jaxdyn.atomic import SUFFIX, save_npz, write_atomic


def test_concurrent_writers_of_one_file_each_land_whole(tmp_path):
    path = tmp_path / "cache.npz"
    payloads = [np.full(200_000, i, np.float32) for i in range(2)]
    seen = []

    def writer(i):
        for _ in range(20):
            save_npz(path, x=payloads[i])
            with np.load(path) as f:  # a reader at any moment sees one writer's file, whole
                seen.append(float(f["x"].min()) == float(f["x"].max()))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen) and len(seen) == 40
    with np.load(path) as f:
        assert any(np.array_equal(f["x"], p) for p in payloads)
    assert not list(tmp_path.glob(f"*{SUFFIX}")) and [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_temporary_names_differ_between_writers_and_a_failure_leaves_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")
    used = []
    write_atomic(path, lambda tmp: (used.append(tmp), tmp.write_text("a")))
    write_atomic(path, lambda tmp: (used.append(tmp), tmp.write_text("b")))
    assert used[0] != used[1] and all(p.parent == tmp_path for p in used)

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(path, fails)
    assert path.read_text() == "b" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
