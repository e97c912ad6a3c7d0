"""Any folder name the OS allows, and a checkpoint set aside only for damage to its own files.

Orbax globs inside a checkpoint folder with the folder's own path in the pattern, so a
``[a]`` in it once made every save skip its OCDBT merge and every restore fail; the
resume then took that failure for damage and set both healthy checkpoints aside.
"""

import errno
import json
import signal

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_run
from test_runs import _start, _start_paused, _wait_for_commit

import jaxdyn
import jaxdyn.checkpoint as ck
from jaxdyn.cli import main
from jaxdyn.errors import RunError
from jaxdyn.extract import extract_member

# Brackets (a glob character class), a space, '#', '%', a non-ASCII letter, and '*', '?'.
ODD_NAME = "run [a] #1 %x é*?"

STUDY_TOML = """
[study]
name = "paths"
seeds = 2
[data]
name = "npz"
path = "{data}"
[model]
hidden = [8]
[train]
steps = 80
batch_size = 16
chunk_steps = 10
log_every = 5
eval_every = 2
checkpoint_every = 2
[grid]
"optim.learning_rate" = [1e-3, 1e-2]
"""


def _write_study(tmp_path):
    data = tmp_path / "data [v2] #1" / "d é.npz"
    data.parent.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype(np.float32)
    np.savez(data, x=x, y=(x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0))
    (tmp_path / "study.toml").write_text(STUDY_TOML.format(data=data))
    return "study.toml"


def test_odd_run_and_data_paths_run_resume_load_extract_report_export(tmp_path):
    study = _write_study(tmp_path)
    ref = _start([study, "--out", "ref"], tmp_path)
    out, _ = ref.communicate()
    assert ref.returncode == 0, out

    proc = _start_paused([study, "--out", ODD_NAME], tmp_path)
    _wait_for_commit(proc)  # paused right after its first committed checkpoint
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, out
    run = tmp_path / ODD_NAME
    for step in ck.committed_steps(ck.cohort_checkpoint_dir(run, 0)):  # the merged OCDBT root is there
        assert (ck.cohort_checkpoint_dir(run, 0) / str(step) / "state" / "manifest.ocdbt").is_file()

    resumed = _start(["--resume", ODD_NAME], tmp_path)
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert "resumed after chunk" in out and "damaged" not in out, out
    assert not (run / "checkpoints" / "damaged").exists()
    assert_same_run(run, tmp_path / "ref")  # jaxdyn.load and load_state, bit for bit

    got, want = extract_member(run, 3), extract_member(tmp_path / "ref", 3)
    chex.assert_trees_all_equal(got.variables, want.variables)
    assert got.step == want.step == 80

    report = jaxdyn.write_report(run)
    assert report.failed == {} and report.path == run / "report.html" and report.path.stat().st_size > 0

    board = tmp_path / "tb [x] #1"
    assert main(["export", "tensorboard", str(run), str(board)]) == 0
    exported = sorted(p.parent.name for p in board.glob("member_*/events.out.tfevents.*"))
    assert exported == [f"member_{m:05d}" for m in sorted(jaxdyn.load(run).members.member)]


# -- the checkpoint folder itself, without a run -------------------------------------------

def _saved(directory, steps=(2, 4)):
    ckpts = ck.CohortCheckpoints(directory, log=lambda line: None)
    for step in steps:
        ckpts.save(step, {"w": jnp.arange(6.0) + step}, {"chunks_done": step})
    ckpts.close()
    return directory


def _restore(directory, log=lambda line: None):
    ckpts = ck.CohortCheckpoints(directory, log)
    try:
        return ckpts.restore_newest(lambda host: None, lambda: {"w": jnp.zeros(6)})
    finally:
        ckpts.close()


@pytest.mark.parametrize("route", ["proc-fd", "symlink"])
def test_glob_characters_in_the_checkpoint_folder_round_trip(route, tmp_path, monkeypatch):
    if route == "symlink":  # as on a system without /proc
        monkeypatch.setattr(ck, "PROC_FD", str(tmp_path / "no-proc"))
    monkeypatch.setattr(ck.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "run a").mkdir()  # what "run [a]" matches as a glob: must stay untouched
    directory = _saved(tmp_path / ODD_NAME / "checkpoints" / "cohort_000")
    assert (directory / "4" / "state" / "manifest.ocdbt").is_file()
    step, state = _restore(directory)
    assert step == 4
    chex.assert_trees_all_equal(state, {"w": jnp.arange(6.0) + 4})
    chex.assert_trees_all_equal(ck.load_state(tmp_path / ODD_NAME), {"w": np.arange(6.0) + 4})
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "run a").iterdir()) == []


@pytest.mark.parametrize("error", [
    ValueError('NOT_FOUND: Error opening "zarr" driver: Metadata at "w/.zarray" in OCDBT database '
               'does not exist'),  # what the glob fault raised: the words of a missing file
    PermissionError(errno.EACCES, "Permission denied"),
    OSError(errno.EMFILE, "Too many open files"),
], ids=["library-not-found", "permission", "fds"])
def test_a_whole_checkpoint_that_fails_to_restore_is_left_in_place(error, tmp_path, monkeypatch):
    directory = _saved(tmp_path / "run" / "checkpoints" / "cohort_000")
    manifest = directory.with_name("cohort_000.manifest.json")
    before = manifest.read_text()

    def fail(self, step, args=None):
        raise error

    monkeypatch.setattr(ck.ocp.CheckpointManager, "restore", fail)
    with pytest.raises(RunError) as raised:
        _restore(directory)
    message = str(raised.value)
    assert f"cannot restore checkpoint {directory.absolute()}/4: {type(error).__name__}" in message
    assert "its files match the SHA-256 manifest" in message and "checkpoints were left in place" in message
    assert f"jaxdyn run --resume {(tmp_path / 'run').absolute()}" in message
    assert ck.committed_steps(directory) == [2, 4] and manifest.read_text() == before
    assert not (directory.parent / "damaged").exists()


def test_without_a_manifest_entry_only_content_errors_set_aside(tmp_path, monkeypatch):
    """A checkpoint committed by Orbax but not yet in the manifest (killed in between)."""
    directory = _saved(tmp_path / "run" / "checkpoints" / "cohort_000")
    directory.with_name("cohort_000.manifest.json").unlink()

    def fail(self, step, args=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(directory / str(step)))

    with monkeypatch.context() as patch:
        patch.setattr(ck.ocp.CheckpointManager, "restore", fail)
        with pytest.raises(RunError, match="the error is not about its content"):
            _restore(directory)
    assert ck.committed_steps(directory) == [2, 4]

    (directory / "4" / "host" / "metadata").write_text('{"chunks_done": 4, "meta')  # cut short
    logged = []
    step, state = _restore(directory, logged.append)
    assert step == 2 and "is damaged (" in logged[0]
    chex.assert_trees_all_equal(state, {"w": jnp.arange(6.0) + 2})
    assert sorted(p.name for p in (directory.parent / "damaged").iterdir()) == ["cohort_000_chunk4"]


def test_a_manifest_mismatch_is_still_set_aside(tmp_path):
    directory = _saved(tmp_path / "run [b]" / "checkpoints" / "cohort_000")
    entry = json.loads(directory.with_name("cohort_000.manifest.json").read_text())["4"]
    name = max(entry, key=lambda n: entry[n][0])
    with open(directory / "4" / name, "r+b") as f:
        f.truncate(entry[name][0] // 2)
    logged = []
    step, _ = _restore(directory, logged.append)
    assert step == 2 and f"{directory.absolute() / '4' / name} has" in logged[0]
    assert (directory.parent / "damaged" / "cohort_000_chunk4").is_dir()
