"""Orbax checkpoints of one cohort: population state + host state (+ metadata in it).

Saves are asynchronous: ``save`` returns once the arrays are copied off the
device and the write goes on while the next chunk trains. At most one save is in
flight: the next save, ``commit`` and ``close`` wait for it and re-raise its error.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CohortCheckpoints:
    """``CheckpointManager`` keyed by completed chunks, keeping the last two."""

    def __init__(self, directory: Path):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2, cleanup_tmp_directories=True, enable_async_checkpointing=True
        )
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest(self) -> int | None:
        """Completed chunks in the newest committed checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, chunks_done: int, state, host: dict) -> None:
        self.commit()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host))
        self._manager.save(chunks_done, args=args, force=True)

    def commit(self) -> None:
        """Block until the save in flight is on disk; raise its error if it failed."""
        self._manager.wait_until_finished()

    def restore_host(self, chunks_done: int) -> dict:
        """The host state (and metadata) saved after ``chunks_done`` chunks."""
        args = ocp.args.Composite(host=ocp.args.JsonRestore())
        return self._manager.restore(chunks_done, args=args).host

    def restore(self, chunks_done: int, like_state):
        """The population state saved after ``chunks_done`` chunks, placed like ``like_state``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        return self._manager.restore(chunks_done, args=args).state

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._manager.close()


def load_state(run_dir, cohort: int = 0):
    """The newest saved population state of a cohort as a pytree of arrays ``[K_padded, ...]``.

    Read without a target, so containers come back as dicts and lists; for analysis
    and tests, not for resuming.
    """
    mgr = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints" / f"cohort_{cohort:03d}",
                                options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = mgr.latest_step()
        if step is None:
            raise FileNotFoundError(f"{run_dir}: cohort {cohort} has no checkpoint")
        return mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    finally:
        mgr.close()
