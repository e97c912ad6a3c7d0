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
from jaxdyn.errors import ConfigError
from jaxdyn.results import MetricParts, final_values, sample_rows, tidy


class Interrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived: the chunk in flight was finished and checkpointed.

    ``exit_code`` is the shell convention for the signal (143 for SIGTERM, 130 for SIGINT).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopFlag:
    """Set by SIGTERM or a first Ctrl-C; checked at chunk boundaries.

    A context manager that installs the handlers (main thread only). A second
    Ctrl-C aborts at once, as usual.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signum = 0
        self.signal_name = ""
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, runs to the end
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        log(f"{self.signal_name}: finishing the chunk in flight, then saving a checkpoint")

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def log(message: str) -> None:
    print(f"[jaxdyn] {message}", flush=True)


def run_cohort(cohort, data, run_dir: Path, mesh, metadata: dict, progress, stop: StopFlag) -> pd.DataFrame:
    """Train one cohort to the end (or on from its last whole checkpoint); return its member table.

    A cohort whose members have all diverged stops at the end of that chunk: it
    is evaluated, checkpointed (the frozen state) and written like a finished one.

    Args:
      cohort: a ``study.Cohort``.
      data: the ``Dataset`` already on the devices.
      metadata: saved with each checkpoint and checked on resume (config hash, devices, ...).
      progress: a ``StudyProgress``, or None.
      stop: checked after every chunk; when set, checkpoint and raise ``Interrupted``.
    """
    t = cohort.config.train
    n_chunks, k = t.steps // t.chunk_steps, len(cohort.members)
    layout = pop.plan_layout(k, mesh.size, t.member_group, mesh.devices.flat[0].platform)
    metadata = {**metadata, "n_devices": mesh.size, "chunk_steps": t.chunk_steps,
                "member_group": layout.group_size, "n_padded": layout.n_padded}
    parts = MetricParts(run_dir)
    histograms, pair_parts = MetricParts(run_dir, "hist_"), MetricParts(run_dir, "pairs_")
    snapshots, timing = MetricParts(run_dir, "samples_"), MetricParts(run_dir, "time_")
    ckpt = CohortCheckpoints(run_dir / "checkpoints" / f"cohort_{cohort.index:03d}", log)
    try:
        task = cohort.task()
        seeds, hparams = cohort.member_arrays(partial(pop.pad_members, layout=layout))
        init = partial(pop.make_init(task, mesh), seeds, hparams)
        # The layout is checked from the saved host state before anything compiles.
        done, state = ckpt.restore_newest(lambda host: _check_resumable(host["metadata"], metadata, run_dir), init)
        if done:
            log(f"cohort {cohort.index}: resumed after chunk {done} of {n_chunks}")
        else:
            state = init()
        parts.drop_after(cohort.index, done)
        train_chunk = pop.make_train_chunk(task, t.chunk_steps, t.log_every, layout.group_size, mesh)
        evaluate = pop.make_evaluate(task, mesh)
        # A task that makes samples (a GAN) shows some at every evaluation: samples.png.
        snapshot = pop.make_snapshot(task, mesh) if hasattr(task, "snapshot") else None
        probes = cohort.probes(task, mesh)
        params0 = init().params if probes.needs_init else None  # the seeds give them again on a resume
        if done:
            probes.resume(parts.read(cohort.index))
        if progress is not None:
            progress.start_cohort(cohort, layout, done * t.chunk_steps)
        alive = _alive(state, k)
        pending = None  # chunk whose checkpoint is being written
        while done < n_chunks and alive.any():
            done += 1
            tic = time.perf_counter()
            state, metrics = train_chunk(state, data)  # dispatched: runs while the host goes on
            if pending is not None:  # record the last save's manifest while this chunk computes
                ckpt.commit()
                log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
                pending = None
            metrics = jax.device_get(metrics)
            alive = _alive(state, k)
            last = done == n_chunks or not alive.any()
            windows = (done - 1) * t.chunk_steps + t.log_every * np.arange(1, t.chunk_steps // t.log_every + 1)
            frame = _rows(cohort, metrics, windows, "train_")
            if done % t.eval_every == 0 or last:
                scores = jax.device_get(evaluate(state, data.x_test, data.y_test))
                test = _rows(cohort, scores, np.array([done * t.chunk_steps]), "test_")
                frame = pd.concat([frame, test], ignore_index=True)
                if snapshot is not None:
                    samples = np.asarray(jax.device_get(snapshot(state)))[:k]
                    snapshots.write(cohort.index, done, sample_rows(samples, cohort.members["member"].to_numpy(),
                                                                    cohort.index, done * t.chunk_steps))
            if probes:
                rows, hist, pairs = probes.measure(state, params0, data, done, last, done * t.chunk_steps,
                                                   cohort.index, cohort.members["member"].to_numpy())
                frame = pd.concat([frame, rows], ignore_index=True)
                if len(hist):
                    histograms.write(cohort.index, done, hist)
                if len(pairs):
                    pair_parts.write(cohort.index, done, pairs)
            parts.write(cohort.index, done, frame)
            seconds = time.perf_counter() - tic  # the chunk's steps, evaluation, probes and rows
            timing.write(cohort.index, done, pd.DataFrame({
                "cohort": [cohort.index], "chunk": [done], "step": [done * t.chunk_steps], "seconds": [seconds],
                "members": [k], "alive": [int(alive.sum())], "member_steps": [k * t.chunk_steps]}))
            if progress is not None:
                progress.advance(t.chunk_steps, k * t.chunk_steps / seconds, int(alive.sum()))
            if done % t.checkpoint_every == 0 or last or stop.requested:
                ckpt.save(done, state, {"chunks_done": done, "metadata": metadata})
                pending = done
            if stop.requested:
                ckpt.commit()
                log(f"cohort {cohort.index}: stopped by {stop.signal_name}; checkpoint committed after chunk {done}")
                raise Interrupted(f"stopped after chunk {done} of cohort {cohort.index}", stop.signum)
        ckpt.commit()
        if pending is not None:
            log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
        if done < n_chunks:
            log(f"cohort {cohort.index}: every member has diverged; stopped after chunk {done} of {n_chunks}")
            if progress is not None:
                progress.stop_cohort("every member diverged")
    except BaseException:
        ckpt.abandon()  # the first error is the one to report, not a second from closing
        raise
    ckpt.close()
    programs = [init.func, train_chunk, evaluate, *([snapshot] if snapshot is not None else []), *probes.programs()]
    # jit's count of compiled variants; a jax without it only loses this log line.
    log(f"cohort {cohort.index}: {sum(getattr(p, '_cache_size', lambda: 0)() for p in programs)} programs compiled")
    return _member_table(cohort, parts, np.asarray(jax.device_get(state.diverged_at)))


def _alive(state, k: int) -> np.ndarray:
    """Which of the ``k`` real members (padding cut off) are still training."""
    return np.asarray(jax.device_get(state.alive))[:k]


def _rows(cohort, values: dict, steps: np.ndarray, prefix: str) -> pd.DataFrame:
    """Tidy rows from ``{name: [K_padded, ...]}`` device results; padding members cut off."""
    k = len(cohort.members)
    real = jax.tree.map(lambda v: v[:k], values)
    return tidy(real, cohort.members["member"].to_numpy(), cohort.index, steps, prefix)


def _member_table(cohort, parts: MetricParts, diverged_at: np.ndarray) -> pd.DataFrame:
    """The cohort's members with their settings, final metrics and ``diverged_at``."""
    members = cohort.members["member"].to_numpy()
    finals = final_values(parts.read(cohort.index)).reindex(members)
    settings = {k: str(list(v)) if isinstance(v, tuple) else v for k, v in cohort.settings.items()}
    table = cohort.members.assign(**settings)  # results.member_table puts columns in order
    for col in finals.columns:
        table[col] = finals[col].to_numpy()
    table["diverged_at"] = diverged_at[: len(members)]
    return table


def _check_resumable(saved: dict, current: dict, run_dir: Path) -> None:
    diff = {k: (saved.get(k), v) for k, v in current.items()
            if k not in ("versions", "env", "device_kind") and saved.get(k) != v}
    if diff:
        lines = "\n".join(f"  {k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"cannot resume {run_dir} bitwise: the run's layout changed\n{lines}\n"
            "Resume on the same number of devices (JAXDYN_CPU_DEVICES on CPU) with the same config."
        )
