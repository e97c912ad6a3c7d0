"""Orbax checkpoints of one cohort: population state + host state (+ metadata in it).

Saves are asynchronous: ``save`` returns once the arrays are copied off the
device and the write goes on while the next chunk trains. At most one save is in
flight: the next save, ``commit`` and ``close`` wait for it and re-raise its error.

Each committed checkpoint gets a manifest entry (every file's size and SHA-256,
in ``checkpoints/cohort_NNN.manifest.json``), so that a resume can tell a damaged
checkpoint from a whole one before Orbax reads it. A resume restores the newest
checkpoint that reads back whole; a damaged one is moved to
``checkpoints/damaged/`` and named in the log, never deleted.
"""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import jax
import orbax.checkpoint as ocp

from jaxdyn.atomic import write_atomic
from jaxdyn.errors import RunError


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
        self._manager = ocp.CheckpointManager(self.dir, options=options)

    def save(self, chunks_done: int, state, host: dict) -> None:
        self.commit()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host))
        self._manager.save(chunks_done, args=args, force=True)
        self._in_flight = chunks_done

    def commit(self) -> None:
        """Block until the save in flight is on disk and in the manifest; raise its error if it failed."""
        self._manager.wait_until_finished()
        if self._in_flight is not None:
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
          RunError: checkpoints exist but none reads back whole (all are moved aside).
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
            try:
                self._verify(step, manifest.get(str(step)))
                host = self._manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host
            except Exception as e:  # noqa: BLE001 -- a failure to read back means damaged...
                _reraise_if_not_damage(e)  # ...unless it is about this machine, not the files
                failures.append(self._set_aside(step, e))
                continue
            check_host(host)
            if target is None:
                target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state())
            try:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
                return step, self._manager.restore(step, args=args).state
            except Exception as e:  # noqa: BLE001
                _reraise_if_not_damage(e)
                failures.append(self._set_aside(step, e))
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
            self._manager.close()

    def abandon(self) -> None:
        """Close after a failure, without waiting on or re-raising the save in flight."""
        try:
            self._manager.close()
        except Exception:  # noqa: BLE001 -- the first error is the one reported
            pass

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
        """Raise ``ValueError`` naming the first file that differs from the manifest.

        A checkpoint without an entry (a process killed between Orbax's commit and
        the manifest write) is left to Orbax's own read-back.
        """
        if expected is None:
            return
        root = self.dir / str(step)
        for name, (size, digest) in expected.items():
            path = root / name
            if not path.is_file():
                raise ValueError(f"{path} is missing")
            actual = path.stat().st_size
            if actual != size:
                raise ValueError(f"{path} has {actual:,} bytes, {size:,} were written")
            if _sha256(path) != digest:
                raise ValueError(f"{path} does not match its SHA-256 from when it was written")

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
        shutil.move(source, target)
        self._manager.reload()
        manifest = self._read_manifest()
        if manifest.pop(str(step), None) is not None:  # a rerun may commit this step number again
            self._write_manifest(manifest)
        summary = f"checkpoint {source} is damaged ({reason}); moved to {target}"
        self._log(f"{summary}; trying an older one")
        return summary


_NOT_DAMAGE = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "out of memory", "Permission denied")


def _reraise_if_not_damage(error: Exception) -> None:
    """Memory, permission and full-disk failures say nothing about the checkpoint: raise them."""
    chain, e = [], error
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, (MemoryError, PermissionError)) or any(t in str(e)[:2000] for t in _NOT_DAMAGE):
            raise error


def _reason(error: BaseException) -> str:
    """One line on why a read failed: the innermost cause, without TensorStore's spec dump."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = (str(error).splitlines() or [type(error).__name__])[0]
    return text.split(" See full TensorStore details")[0][:300]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_state(run_dir, cohort: int = 0):
    """The newest saved population state of a cohort as a pytree of arrays ``[K_padded, ...]``.

    Read without a target, so containers come back as dicts and lists; for analysis
    and tests, not for resuming.
    """
    mgr = ocp.CheckpointManager(cohort_checkpoint_dir(run_dir, cohort).absolute(),
                                options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = mgr.latest_step()
        if step is None:
            raise FileNotFoundError(f"{run_dir}: cohort {cohort} has no checkpoint")
        return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    finally:
        mgr.close()
