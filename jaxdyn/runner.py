"""The host loop of one cohort: chunks, progress, evaluation, checkpoints, stop, resume.

The device is seen once per chunk: run ``chunk_steps`` steps of every member,
read back their metrics, write them, and every few chunks save a checkpoint
while the next chunk trains.
"""

import signal
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxdyn import population as pop
from jaxdyn.checkpoint import CohortCheckpoints
from jaxdyn.results import MetricParts, final_values, tidy


class Interrupted(RuntimeError):
    """SIGTERM arrived: the chunk in flight was finished and checkpointed."""


class StopFlag:
    """Set by SIGTERM; checked at chunk boundaries. A context manager that installs the handler."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, runs to the end
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def log(message: str) -> None:
    print(f"[jaxdyn] {message}", flush=True)


def run_cohort(cohort, data, run_dir: Path, mesh, metadata: dict, progress, stop: StopFlag) -> pd.DataFrame:
    """Train one cohort to the end (or from its last checkpoint); return its member table.

    Args:
      cohort: a ``study.Cohort``.
      data: the ``Dataset`` already on the devices.
      metadata: saved with each checkpoint and checked on resume (config hash, versions, ...).
      progress: a ``Progress`` (or None).
    """
    t = cohort.config.train
    n_chunks = t.steps // t.chunk_steps
    layout = pop.plan_layout(len(cohort.members), mesh.size, t.member_group, mesh.devices.flat[0].platform)
    metadata = {**metadata, "n_devices": mesh.size, "chunk_steps": t.chunk_steps,
                "member_group": layout.group_size, "n_padded": layout.n_padded}
    task = cohort.task()
    seeds, hparams = cohort.member_arrays(partial(pop.pad_members, layout=layout))
    state = pop.init_population(task, seeds, hparams, mesh)
    train_chunk = pop.make_train_chunk(task, t.chunk_steps, t.log_every, layout.group_size, mesh)
    evaluate = pop.make_evaluate(task, mesh)
    members = cohort.members["member"].to_numpy()
    parts = MetricParts(run_dir)
    ckpt = CohortCheckpoints(run_dir / "checkpoints" / f"cohort_{cohort.index:03d}")
    try:
        start = ckpt.latest() or 0
        if start:
            state, host = ckpt.restore(start, state)
            _check_resumable(host["metadata"], metadata, run_dir)
            log(f"cohort {cohort.index}: resumed after chunk {start} of {n_chunks}")
        parts.drop_after(cohort.index, start)
        if progress is not None:
            progress.start_cohort(cohort, layout, start * t.chunk_steps)
        pending = None
        for done in range(start + 1, n_chunks + 1):
            tic = time.perf_counter()
            state, metrics = train_chunk(state, data)
            metrics = jax.device_get(metrics)
            if pending is not None:  # the save started one chunk ago is on disk by now
                ckpt.commit()
                log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
                pending = None
            first = (done - 1) * t.chunk_steps
            steps = first + t.log_every * np.arange(1, t.chunk_steps // t.log_every + 1)
            real = {k: v[: len(members)] for k, v in metrics.items()}
            frames = [tidy(real, members, cohort.index, steps, "train_")]
            if done % t.eval_every == 0 or done == n_chunks:
                ev = jax.device_get(evaluate(state, data.x_test, data.y_test))
                ev = {k: v[: len(members), None] for k, v in ev.items()}
                frames.append(tidy(ev, members, cohort.index, np.array([done * t.chunk_steps]), "test_"))
            parts.write(cohort.index, done, pd.concat(frames, ignore_index=True))
            alive = int(np.asarray(state.alive)[: len(members)].sum())
            if progress is not None:
                progress.advance(t.chunk_steps, len(members) * t.chunk_steps / (time.perf_counter() - tic), alive)
            if done % t.checkpoint_every == 0 or done == n_chunks or stop.requested:
                ckpt.save(done, state, {"chunks_done": done, "metadata": metadata})
                pending = done
            if stop.requested:
                ckpt.commit()
                log(f"cohort {cohort.index}: stopped by SIGTERM; checkpoint committed after chunk {done}")
                raise Interrupted(f"stopped after chunk {done} of cohort {cohort.index}")
        ckpt.commit()
        if pending is not None:
            log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
    finally:
        ckpt.close()
    diverged_at = np.asarray(jax.device_get(state.diverged_at))[: len(members)]
    finals = final_values(parts.read(cohort.index)).reindex(members)
    table = cohort.members.copy()
    for key, value in cohort.settings.items():
        table.insert(2, key, str(list(value)) if isinstance(value, tuple) else value)
    for col in finals.columns:
        table[col] = finals[col].to_numpy()
    table["diverged_at"] = diverged_at
    return table


def _check_resumable(saved: dict, current: dict, run_dir: Path) -> None:
    diff = {k: (saved.get(k), v) for k, v in current.items() if k != "versions" and saved.get(k) != v}
    if diff:
        lines = "\n".join(f"  {k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
        raise RuntimeError(
            f"cannot resume {run_dir} bitwise: the run's layout changed\n{lines}\n"
            "Resume on the same number of devices (JAXDYN_CPU_DEVICES on CPU) with the same config."
        )
