"""The host loop of one cohort: chunks, progress, evaluation, checkpoints, stop, resume.

The device is seen once per chunk: run ``chunk_steps`` steps of every member,
read back their metrics, write them, and every few chunks save a checkpoint
while the next chunk trains. A cohort that starts afresh is first measured at
step 0 (evaluation and every probe), so each curve starts where training does.
"""

import os
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import pandas as pd

from jaxdyn import distributed, fork
from jaxdyn import population as pop
from jaxdyn.checkpoint import CohortCheckpoints, cohort_checkpoint_dir
from jaxdyn.errors import ConfigError
from jaxdyn.logs import log
from jaxdyn.pbt.rounds import between_chunks
from jaxdyn.probes.run import ProbeSet
from jaxdyn.stopping import Interrupted, StopFlag  # noqa: F401 (Interrupted: re-exported)
from jaxdyn.tables import MetricParts, RunParts, cohort_member_table, sample_rows, tidy
from jaxdyn.tasks import makes_snapshots


def run_cohort(cohort, data, run_dir: Path, mesh, metadata: dict, progress, stop: StopFlag,
               programs: "CohortPrograms | None" = None, tables: Path | None = None) -> pd.DataFrame:
    """Train one cohort to the end (or on from its last whole checkpoint); return its member table.

    A cohort with no checkpoint yet writes step 0 first: the test evaluation (and samples) and
    every enabled probe of the state it starts from (``CohortPrograms.start``: its initial state,
    or a fork's parent state). A resume from a checkpoint has those rows already and does not
    measure step 0 again.

    A cohort whose members have all diverged stops at the end of that chunk: it
    is evaluated, checkpointed (the frozen state) and written like a finished one.
    A checkpoint's save is committed one chunk later, while the next chunk computes.

    Args:
      cohort: a ``study.Cohort``.
      data: the ``Dataset`` already on the devices.
      metadata: saved with each checkpoint and checked on resume (config hash, devices, ...).
      progress: a ``StudyProgress``, or None.
      stop: checked after every chunk; when set, checkpoint and raise ``Interrupted``.
      programs: the cohort's ``CohortPrograms`` built for this layout and mesh (already compiled
        by the memory check), or None to build them here.
      tables: where this process writes the table parts (default ``run_dir``; with several
        processes, a scratch folder in all but process 0: ``processes.open_run``).
    """
    t = cohort.config.train
    n_chunks, k = t.steps // t.chunk_steps, len(cohort.members)
    layout = pop.plan_layout(k, mesh.size, t.member_group, mesh.devices.flat[0].platform)
    metadata = {**metadata, "n_devices": mesh.size, "chunk_steps": t.chunk_steps,
                "member_group": layout.group_size, "n_padded": layout.n_padded}
    parts = RunParts.of(tables if tables is not None else run_dir)
    ckpt = CohortCheckpoints(cohort_checkpoint_dir(run_dir, cohort.index), log)
    try:
        programs = programs if programs is not None else CohortPrograms.build(cohort, layout, mesh)
        pbt = between_chunks(cohort, layout.n_padded)  # PBT rounds, or a replayed schedule
        done, state, params0 = _start(cohort, programs, ckpt, parts, metadata, run_dir, data, pbt)
        if progress is not None:
            progress.start_cohort(cohort, layout, done * t.chunk_steps)
        if not done:  # step 0: the state training starts from, measured before it changes
            _write_chunk(cohort, programs, parts, data, params0, state, None, 0, False)
        alive = _alive(state, k)
        pending = None  # chunk whose checkpoint is being written
        if done:
            stop.committed(cohort.index, done, run_dir)
        stop.chunks_start()
        while done < n_chunks and alive.any():
            done += 1
            tic = time.perf_counter()
            state, metrics = programs.train_chunk(state, data)  # dispatched: runs while the host goes on
            if pending is not None:  # record the last save's manifest while this chunk computes
                ckpt.commit()
                log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
                stop.committed(cohort.index, pending, run_dir)
                pending = None
                _pause_for_tests()
            metrics = distributed.host(metrics)
            alive = _alive(state, k)
            last = done == n_chunks or not alive.any()
            train_rows = _train_rows(cohort, metrics, done)
            rows = _write_chunk(cohort, programs, parts, data, params0, state, train_rows, done, last)
            if pbt is not None and pbt.due(done, last):  # members learn from each other, before the checkpoint
                state, lineage = pbt.run(state, rows, done, done * t.chunk_steps)
                parts.lineage.write(cohort.index, done, lineage)
            seconds = time.perf_counter() - tic  # the chunk's steps, evaluation, probes and rows
            _write_timing(parts.timing, cohort, done, seconds, alive)
            if progress is not None:
                progress.advance(t.chunk_steps, k * t.chunk_steps / seconds, int(alive.sum()))
            stop.agree(distributed.any_process)  # a signal that reached only some processes stops them all
            if done % t.checkpoint_every == 0 or last or stop.requested:
                # "last": a longer run continued from here reopens this chunk (``_reopen``).
                ckpt.save(done, state, {"chunks_done": done, "metadata": metadata, "last": last})
                pending = done
            stop.chunk_done()
            if stop.requested:
                ckpt.commit()
                log(f"cohort {cohort.index}: stopped by {stop.signal_name}; checkpoint committed after chunk {done}")
                stop.committed(cohort.index, done, run_dir)
                raise Interrupted(f"stopped after chunk {done} of cohort {cohort.index}", stop.signum)
        ckpt.commit()
        if pending is not None:
            log(f"cohort {cohort.index}: checkpoint committed after chunk {pending}")
            stop.committed(cohort.index, pending, run_dir)
        if done < n_chunks:
            log(f"cohort {cohort.index}: every member has diverged; stopped after chunk {done} of {n_chunks}")
            if progress is not None:
                progress.stop_cohort("every member diverged")
    except BaseException:
        ckpt.abandon()  # the first error is the one to report, not a second from closing
        raise
    ckpt.close()
    log(f"cohort {cohort.index}: {programs.compiled()} programs compiled")
    return cohort_member_table(cohort, parts.metrics, np.asarray(distributed.host(state.diverged_at)))


@dataclass(frozen=True)
class CohortPrograms:
    """One cohort's programs, jitted for its task and layout; each compiles on its first call.

    Population states are pytrees with leaves ``[K_padded, ...]``.

    Attributes:
      init: ``() -> state``, the members from their seeds and hyperparameters.
      start: ``() -> state``, where training starts: ``init``'s state, or a fork's (``[init]``:
        the parent member's parameters copied in).
      train_chunk: ``(state, data) -> (state, metrics)``, metrics ``[K_padded, chunk_steps // log_every]``.
      evaluate: ``(state, x, y) -> scores``, each ``[K_padded]``.
      snapshot: ``state -> samples [K_padded, n, D]`` for a task that makes samples (a GAN), else None.
      probes: the cohort's ``ProbeSet``.
      evaluated_in_chunk: ``train_chunk`` returns the ``test_*`` rows itself (a federated cohort's
        global model after every round), so the runner evaluates only at step 0 (``evaluate``: the
        global model, which every client holds at the start).
    """

    init: partial
    start: Callable
    train_chunk: Callable
    evaluate: Callable
    snapshot: Callable | None
    probes: ProbeSet
    evaluated_in_chunk: bool = False  # the chunk writes test_* itself (a federated cohort: after every round)

    @classmethod
    def build(cls, cohort, layout: pop.Layout, mesh) -> "CohortPrograms":
        task = cohort.task()
        seeds, hparams = cohort.member_arrays(partial(pop.pad_members, layout=layout))
        init = partial(pop.make_init(task, mesh), seeds, hparams)
        return cls(init=init, start=init if cohort.parent is None else partial(fork.start, init, cohort.parent),
                   train_chunk=cohort.train_chunk(task, layout, mesh),
                   evaluate=cohort.evaluate(task, layout, mesh),
                   snapshot=pop.make_snapshot(task, mesh) if makes_snapshots(task) else None,
                   probes=cohort.probes(task, mesh), evaluated_in_chunk=cohort.config.federated is not None)

    def compiled(self) -> int:
        """How many variants were compiled: one each, unless something recompiled."""
        snapshot = [self.snapshot] if self.snapshot is not None else []
        programs = [self.init.func, self.train_chunk, self.evaluate, *snapshot, *self.probes.programs()]
        # jit's count of compiled variants; a jax without it only loses this number.
        return sum(getattr(p, "_cache_size", lambda: 0)() for p in programs)


def _start(cohort, programs: CohortPrograms, ckpt: CohortCheckpoints, parts: RunParts, metadata: dict,
           run_dir: Path, data, pbt) -> tuple[int, object, object]:
    """Where the cohort starts: its newest whole checkpoint, or its members' initial state.

    Parts past the checkpoint are dropped (they will be rerun) and the probes' host
    state is rebuilt from the rows kept. A checkpoint saved as the cohort's last chunk in
    a run now continued for more steps (``train.steps`` raised) is reopened (``_reopen``).

    Returns:
      ``(chunks_done, state, params0)``: ``params0`` is the initial parameters, leaves
      ``[K_padded, ...]``, when a probe needs them (the seeds give them again on a resume), else None.
    """
    n_chunks = cohort.config.train.steps // cohort.config.train.chunk_steps
    saved = {}

    def check(host: dict) -> None:  # the layout is checked from the saved host state before anything compiles
        _check_resumable(host["metadata"], metadata, run_dir)
        saved.update(host)

    done, state = ckpt.restore_newest(check, programs.init)
    if done:
        log(f"cohort {cohort.index}: resumed after chunk {done} of {n_chunks}")
    else:
        state = programs.start()
    params0 = programs.start().params if programs.probes.needs_init else None
    reopen = done and saved.get("last", False) and done < n_chunks and _alive(state, len(cohort.members)).any()
    parts.metrics.drop_after(cohort.index, done)
    if reopen:
        state = _reopen(cohort, programs, parts, data, params0, state, done, pbt)
    elif done:
        programs.probes.resume(parts.metrics.read(cohort.index))
    return done, state, params0


def _reopen(cohort, programs: CohortPrograms, parts: RunParts, data, params0, state, done: int, pbt):
    """Chunk ``done`` was written as the last of a shorter run (everything due, no PBT round
    after it); write it again as the longer run writes it, and run its PBT round if one is due.

    Its training rows are kept (``state`` is already past them) and its timing row too; the
    test evaluation and the probes are measured again from the restored state and kept where
    they are due. Idempotent: a continued run interrupted before its next checkpoint reopens
    the same chunk again and gets the same rows and the same state.
    """
    t = cohort.config.train
    step = done * t.chunk_steps
    rows = parts.metrics.read(cohort.index)
    # The training chunk's metric names, from its output's structure (traced, not compiled):
    # whole-model values are written with "train_", per-layer ones ({layer: values}) as they are.
    shapes = jax.eval_shape(programs.train_chunk, state, data)[1]
    names = {name if isinstance(v, dict) else f"train_{name}" for name, v in shapes.items()}
    kept = rows[(rows.step > step - t.chunk_steps) & (rows.step <= step) & rows.metric.isin(names)]
    timing = parts.timing.read(cohort.index)
    parts.metrics.drop_after(cohort.index, done - 1)
    programs.probes.resume(parts.metrics.read(cohort.index))
    frame = _write_chunk(cohort, programs, parts, data, params0, state, kept.reset_index(drop=True), done, False)
    if len(timing):
        parts.timing.write(cohort.index, done, timing[timing.chunk == done])
    if pbt is not None and pbt.due(done, False):
        state, lineage = pbt.run(state, frame, done, step)
        parts.lineage.write(cohort.index, done, lineage)
    log(f"cohort {cohort.index}: chunk {done} reopened for the longer run")
    return state


def _write_chunk(cohort, programs: CohortPrograms, parts: RunParts, data, params0, state,
                 frame: pd.DataFrame | None, done: int, last: bool) -> pd.DataFrame:
    """Write chunk ``done``'s rows: its training windows, and what is due after it: the test
    evaluation with the samples of a task that makes them, and the probes. Returns the metric rows.

    ``done = 0`` is step 0, the state training starts from (its parts are ``..._000000``): no
    training rows, the evaluation and every probe. It only reads the state, with the programs
    the chunks use, so the training that follows is the same bit for bit.

    Args:
      frame: the chunk's training rows (tidy, ``train_`` metrics); None at step 0.
      last: the cohort's last chunk (the end, or every member diverged): everything is due.
    """
    t = cohort.config.train
    members, step = cohort.members["member"].to_numpy(), done * t.chunk_steps
    frames = [] if frame is None else [frame]
    # A federated chunk evaluates the global model after each of its rounds; step 0 has had none.
    if (done % t.eval_every == 0 or last) and not (programs.evaluated_in_chunk and done):
        scores = distributed.host(programs.evaluate(state, data.x_test, data.y_test))
        frames.append(_rows(cohort, scores, np.array([step]), "test_"))
        if programs.snapshot is not None:
            samples = np.asarray(distributed.host(programs.snapshot(state)))[: len(members)]
            parts.samples.write(cohort.index, done, sample_rows(samples, members, cohort.index, step))
    if programs.probes:
        rows, hist, pairs = programs.probes.measure(state, params0, data, done, last, step, cohort.index, members)
        frames.append(rows)
        if len(hist):
            parts.histograms.write(cohort.index, done, hist)
        if len(pairs):
            parts.pairs.write(cohort.index, done, pairs)
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True)
    parts.metrics.write(cohort.index, done, frame)
    return frame


def _write_timing(timing: MetricParts, cohort, done: int, seconds: float, alive: np.ndarray) -> None:
    """One row for chunk ``done``: its wall time and how many members were stepped and are alive."""
    t, k = cohort.config.train, len(cohort.members)
    timing.write(cohort.index, done, pd.DataFrame({
        "cohort": [cohort.index], "chunk": [done], "step": [done * t.chunk_steps], "seconds": [seconds],
        "members": [k], "alive": [int(alive.sum())], "member_steps": [k * t.chunk_steps]}))


def _pause_for_tests() -> None:
    """The test hook ``JAXDYN_PAUSE_AFTER_COMMIT=1``: the process stops itself (SIGSTOP) right
    after logging its first committed checkpoint, so a test can signal it at a known point
    however fast the machine is, then continue it with SIGCONT."""
    if os.environ.pop("JAXDYN_PAUSE_AFTER_COMMIT", "") == "1":
        os.kill(os.getpid(), signal.SIGSTOP)


def _alive(state, k: int) -> np.ndarray:
    """Which of the ``k`` real members (padding cut off) are still training."""
    return np.asarray(distributed.host(state.alive))[:k]


def _train_rows(cohort, metrics: dict, done: int) -> pd.DataFrame:
    """Tidy rows of chunk ``done``'s training metrics ``{name: [K_padded, n]}`` (or ``{layer: ...}``):
    a metric with n values per chunk is written at the ends of its n equal windows (every
    ``log_every`` steps, or every round of a federated cohort)."""
    chunk = cohort.config.train.chunk_steps
    by_length = {}
    for name, value in metrics.items():
        n = np.shape(next(iter(value.values())) if isinstance(value, dict) else value)[1]
        by_length.setdefault(n, {})[name] = value
    return pd.concat([_rows(cohort, group, (done - 1) * chunk + (chunk // n) * np.arange(1, n + 1), "train_")
                      for n, group in by_length.items()], ignore_index=True)


def _rows(cohort, values: dict, steps: np.ndarray, prefix: str) -> pd.DataFrame:
    """Tidy rows from ``{name: [K_padded, ...]}`` device results; padding members cut off."""
    k = len(cohort.members)
    real = jax.tree.map(lambda v: v[:k], values)
    return tidy(real, cohort.members["member"].to_numpy(), cohort.index, steps, prefix)


def _check_resumable(saved: dict, current: dict, run_dir: Path) -> None:
    # A checkpoint from before ``study_sha256`` existed holds only the full config hash.
    # ... and one from before several processes were possible ran as one.
    saved = {"n_processes": 1, **saved}
    diff = {k: (saved.get(k), v) for k, v in current.items()
            if k not in ("versions", "env", "device_kind") and saved.get(k) != v
            and (k != "study_sha256" or k in saved)}
    if diff:
        lines = "\n".join(f"  {k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"cannot resume {run_dir} bitwise: the run's layout changed\n{lines}\n"
            "Resume on the same number of devices (JAXDYN_CPU_DEVICES on CPU) with the same config."
        )
