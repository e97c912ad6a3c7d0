"""Orbax checkpoints of one cohort: population state + host state (+ metadata in it).

Saves are asynchronous: ``save`` returns once the arrays are copied off the
device and the write goes on while the next chunk trains. At most one save is in
flight: the next save, ``commit`` and ``close`` wait for it and re-raise its error.

Each committed checkpoint gets a manifest entry (every file's size and SHA-256,
in ``checkpoints/cohort_NNN.manifest.json``), so that a resume can tell a damaged
checkpoint from a whole one before Orbax reads it. A resume restores the newest
checkpoint that reads back whole. Only a checkpoint whose own files are damaged
(they differ from the manifest, or, without an entry, the error is about their
content) is moved to ``checkpoints/damaged/`` and named in the log, never deleted;
any other failure (the folder, permissions, memory, the library) stops the resume
and leaves every checkpoint where it was.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import jax
import orbax.checkpoint as ocp

from jaxdyn import distributed
from jaxdyn.atomic import write_atomic
from jaxdyn.errors import RunError, causes, debug_enabled


def cohort_checkpoint_dir(run_dir, cohort_index: int) -> Path:
    """The folder of one cohort's checkpoints: ``run_dir/checkpoints/cohort_NNN``."""
    return Path(run_dir) / "checkpoints" / f"cohort_{cohort_index:03d}"


def committed_steps(directory: Path) -> list[int]:
    """Chunk counts of the committed checkpoints in a cohort folder, oldest first.

    Orbax writes a checkpoint under a temporary name and renames it to the bare
    step number when it is complete, so a bare number is a committed checkpoint.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


PROC_FD = "/proc/self/fd"  # a module constant, so that a test can take the symlink route


class _GlobSafeName:
    """A name of a folder under which Orbax's globs match only what is really there.

    Orbax finds parts of a checkpoint by glob: ``ocdbt_utils.merge_ocdbt_per_process_files``
    lists ``directory.glob("ocdbt.process_*")``, and etils' ``_GPath.glob`` joins the folder
    into the pattern it gives ``glob.glob``. In ``run [a]`` the ``[a]`` is then a character
    class (it matches ``run a``): the merge finds nothing, logs a warning and is skipped,
    and the checkpoint commits without its root OCDBT manifest, so its arrays never read
    back. ``*`` and ``?`` can even match another run's folder. Escaping cannot help, as the
    same name also opens files. So a folder whose path holds a glob character is handed to
    Orbax under an alias without one: ``/proc/self/fd/N`` of a descriptor held open on it
    (Linux: no file to clean up, and it survives /tmp cleaners on long runs), else a symlink
    in a private temporary folder. Other paths are used as they are.
    """

    def __init__(self, directory: Path, create: bool):
        self.path, self._fd, self._tmp = directory, None, None
        if not _has_glob_chars(directory):
            return
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)  # not inherited (PEP 446)
        self.path = Path(f"{PROC_FD}/{self._fd}")
        if not self.path.is_dir():  # no /proc: fall back to a symlink
            self.close()
            self._tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-ckpt-", dir=_glob_free_tmp()))
            self.path = self._tmp / "checkpoints"
            self.path.symlink_to(directory, target_is_directory=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)  # removes the link, never its target
            self._tmp = None


def _glob_free_tmp() -> str:
    tmp = tempfile.gettempdir()
    return tmp if not _has_glob_chars(tmp) else "/tmp"


def _has_glob_chars(path) -> bool:
    return any(c in str(path) for c in "*?[")  # what glob.glob treats as a pattern


class CohortCheckpoints:
    """``CheckpointManager`` keyed by completed chunks, keeping the last two."""

    def __init__(self, directory: Path, log: Callable[[str], None] = print):
        self.dir = Path(directory).absolute()
        self._log = log
        self._manifest_path = self.dir.with_name(self.dir.name + ".manifest.json")
        self._in_flight = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2, cleanup_tmp_directories=True, enable_async_checkpointing=True
        )
        self._name = _GlobSafeName(self.dir, create=True)
        try:
            self._manager = ocp.CheckpointManager(self._name.path, options=options)
        except BaseException:
            self._name.close()
            raise

    def save(self, chunks_done: int, state, host: dict) -> None:
        self.commit()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host))
        self._manager.save(chunks_done, args=args, force=True)
        self._in_flight = chunks_done

    def commit(self) -> None:
        """Block until the save in flight is on disk and in the manifest; raise its error if it failed."""
        self._manager.wait_until_finished()
        if self._in_flight is not None:
            if distributed.is_writer():  # with several processes, process 0 keeps the manifest
                self._record(self._in_flight)
            self._in_flight = None

    def restore_newest(self, check_host: Callable[[dict], None], like_state: Callable[[], object]):
        """Restore the newest checkpoint that reads back whole.

        Args:
          check_host: called with the saved host state before any array is read;
            it raises to refuse the checkpoint (a changed layout), which stops the search.
          like_state: returns a state whose shapes and shardings the restored one takes
            (called once, only if a checkpoint's host state passed).

        Returns:
          ``(chunks_done, state)``, or ``(0, None)`` when the cohort has no checkpoint.

        Raises:
          RunError: checkpoints exist but none reads back whole (all are moved aside), or
            one failed to read back for a reason other than damage to its files (all are
            left in place).
        """
        manifest = self._read_manifest()
        steps = committed_steps(self.dir)
        set_aside = sorted((self.dir.parent / "damaged").glob(f"{self.dir.name}_chunk*"))
        if not steps and set_aside:  # an earlier resume found none whole: never restart silently
            raise RunError(
                f"every checkpoint of {self.dir} was set aside as damaged ({', '.join(p.name for p in set_aside)} "
                f"in {set_aside[0].parent}); start the study over with a new --out folder"
            )
        target, failures = None, []
        for step in reversed(steps):
            expected = manifest.get(str(step))
            try:
                self._verify(step, expected)
                host = self._manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host
            except Exception as e:  # noqa: BLE001 -- sorted: damage is set aside, anything else raised
                failures.append(self._set_aside_if_damaged(step, e, verified=expected is not None))
                continue
            check_host(host)
            if target is None:
                target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state())
            try:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
                return step, self._manager.restore(step, args=args).state
            except Exception as e:  # noqa: BLE001
                failures.append(self._set_aside_if_damaged(step, e, verified=expected is not None))
        if failures:
            raise RunError(
                f"no checkpoint in {self.dir} reads back whole:\n" + "\n".join(f"  {f}" for f in failures)
                + "\nThe damaged checkpoints were moved to "
                f"{self.dir.parent / 'damaged'}. Start the study over with a new --out folder."
            )
        return 0, None

    def close(self) -> None:
        try:
            self.commit()
        finally:
            try:
                self._manager.close()
            finally:
                self._name.close()

    def abandon(self) -> None:
        """Close after a failure, without waiting on or re-raising the save in flight."""
        try:
            self._manager.close()
        except Exception:  # noqa: BLE001 -- the first error is the one reported
            pass
        finally:
            self._name.close()

    # -- integrity -------------------------------------------------------------------------

    def _files(self, step: int) -> dict[str, list]:
        root = self.dir / str(step)
        return {str(p.relative_to(root)): [p.stat().st_size, _sha256(p)]
                for p in sorted(root.rglob("*")) if p.is_file()}

    def _record(self, step: int) -> None:
        manifest = self._read_manifest()
        manifest[str(step)] = self._files(step)
        kept = {str(s) for s in committed_steps(self.dir)}
        self._write_manifest({k: v for k, v in manifest.items() if k in kept})

    def _write_manifest(self, manifest: dict) -> None:
        write_atomic(self._manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest)))

    def _read_manifest(self) -> dict:
        try:
            return json.loads(self._manifest_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._log(f"checkpoint manifest {self._manifest_path} is unreadable ({e}); "
                      "checkpoints are checked by reading them back only")
            return {}

    def _verify(self, step: int, expected: dict | None) -> None:
        """Raise ``_Damaged`` naming the first file that differs from the manifest.

        A checkpoint without an entry (a process killed between Orbax's commit and
        the manifest write) is left to Orbax's own read-back. Errors that are not about
        the files' content (the folder gone, no permission) propagate as they are.
        """
        root = self.dir / str(step)
        if not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the checkpoint folder is gone", str(root))
        for name, (size, digest) in (expected or {}).items():
            path = root / name
            if not path.is_file():
                raise _Damaged(f"{path} is missing")
            try:
                actual = path.stat().st_size
                if actual != size:
                    raise _Damaged(f"{path} has {actual:,} bytes, {size:,} were written")
                if _sha256(path) != digest:
                    raise _Damaged(f"{path} does not match its SHA-256 from when it was written")
            except OSError as e:
                if e.errno in _UNREADABLE:  # the disk cannot give the bytes back
                    raise _Damaged(f"{path} cannot be read ({e.strerror})") from e
                raise

    def _set_aside_if_damaged(self, step: int, error: Exception, verified: bool) -> str:
        """Set the checkpoint aside if ``error`` shows its files are damaged; else raise RunError.

        Once its files match the manifest written with them, the bytes are whole, so a
        failure to restore them is about something else (the path, memory, the library)
        and must not cost the user a checkpoint.
        """
        folder = self.dir / str(step)
        present = _is_dir(folder)
        if present and (isinstance(error, _Damaged) or (not verified and _about_content(error))):
            return self._set_aside(step, error)
        why = ("its folder cannot be opened" if not present
               else "its files match the SHA-256 manifest written with them" if verified
               else "the error is not about its content")
        raise RunError(
            f"cannot restore checkpoint {folder}: {type(_innermost(error)).__name__}: {_reason(error)}\n"
            f"It is not counted as damaged ({why}), so your checkpoints were left in place. Fix the "
            f"cause, then continue with: jaxdyn run --resume {self.dir.parent.parent}"
        ) from error

    def _set_aside(self, step: int, error: Exception) -> str:
        """Move a damaged checkpoint to ``checkpoints/damaged/`` and say so; return a summary."""
        source = self.dir / str(step)
        damaged = self.dir.parent / "damaged"
        damaged.mkdir(exist_ok=True)
        target = damaged / f"{self.dir.name}_chunk{step}"
        for i in range(1, 1000):
            if not target.exists():
                break
            target = damaged / f"{self.dir.name}_chunk{step}-{i}"
        reason = _reason(error)
        if distributed.is_writer():  # every process found the same damage; process 0 moves it
            shutil.move(source, target)
            manifest = self._read_manifest()
            if manifest.pop(str(step), None) is not None:  # a rerun may commit this step number again
                self._write_manifest(manifest)
        distributed.barrier(f"jaxdyn-set-aside-{self.dir.name}-{step}")
        self._manager.reload()
        summary = f"checkpoint {source} is damaged ({reason}); moved to {target}"
        self._log(f"{summary}; trying an older one")
        return summary


class _Damaged(ValueError):
    """A checkpoint's own files differ from what was written: it is set aside."""


# errno of a read the disk could not serve: bad sectors, a corrupt file system.
_UNREADABLE = {getattr(errno, name) for name in ("EIO", "EBADMSG", "EUCLEAN") if hasattr(errno, name)}
# Errors raised while reading a checkpoint that has no manifest entry which say its bytes are
# bad: TensorStore's status codes and the decoders' errors. Not among them: memory, permissions,
# a full disk, or anything else about this machine (checked first, in _about_content).
_CONTENT_TEXT = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "Invalid JSON", "Truncated", "corrupt", "checksum")
_NOT_CONTENT_TEXT = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAVAILABLE", "out of memory",
                     "Permission denied", "No space left", "Too many open files")


def _about_content(error: Exception) -> bool:
    """True if a read failure of a checkpoint without a manifest entry is about its bytes.

    The checkpoint folder itself was just found (``_verify``), so a file missing under it is
    the checkpoint's own loss.
    """
    chain = causes(error)
    for e in chain:
        if isinstance(e, (MemoryError, PermissionError)) or any(t in str(e)[:2000] for t in _NOT_CONTENT_TEXT):
            return False
    for e in chain:
        if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
            return True
        if isinstance(e, OSError) and e.errno in _UNREADABLE:
            return True
        if any(t in str(e)[:2000] for t in _CONTENT_TEXT):
            return True
    return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _innermost(error: BaseException) -> BaseException:
    return causes(error)[-1]


def _reason(error: BaseException) -> str:
    """One line on why a read failed: the innermost cause, without TensorStore's spec dump."""
    error = _innermost(error)
    text = (str(error).splitlines() or [type(error).__name__])[0]
    return text.split(" See full TensorStore details")[0][:300]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _quiet_reader():
    """Orbax warns (through absl) on every read-only manager that it is read only: true, and
    nothing a user can act on, so ``extract_member``, ``ensemble`` and the report stay as quiet
    through the Python API as the CLI is. ``JAXDYN_DEBUG=1`` keeps the libraries' logs."""
    if debug_enabled():
        yield
        return
    loggers = [logging.getLogger(name) for name in ("absl", "orbax")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def load_state(run_dir, cohort: int = 0, chunks_done: int | None = None):
    """A saved population state of a cohort as a pytree of arrays ``[K_padded, ...]``: the
    newest, or the one saved after ``chunks_done`` chunks.

    Read without the live state's structure, so containers come back as dicts and lists (a
    NamedTuple as a dict of its fields); for analysis, tests and forks, not for resuming. Every
    array is read whole onto this process's first device, whatever devices and processes saved
    it (Orbax would otherwise ask for the saving run's device topology).

    Raises:
      FileNotFoundError: the cohort has no committed checkpoint (after ``chunks_done``).
    """
    directory = cohort_checkpoint_dir(run_dir, cohort).absolute()
    steps = committed_steps(directory)
    if not steps or (chunks_done is not None and chunks_done not in steps):
        kept = f" (it keeps chunks {', '.join(map(str, steps))})" if steps else ""
        after = f" after chunk {chunks_done}" if chunks_done is not None else ""
        raise FileNotFoundError(f"{run_dir}: cohort {cohort} has no checkpoint{after}{kept}")
    with _GlobSafeName(directory, create=False) as path, _quiet_reader():
        mgr = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
        try:
            step = chunks_done if chunks_done is not None else steps[-1]
            saved = ocp.StandardCheckpointer().metadata(path / str(step) / "state")
            tree = getattr(saved, "item_metadata", saved)
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one),
                                  getattr(tree, "tree", tree))
            return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        finally:
            mgr.close()
