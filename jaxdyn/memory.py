"""Will a study fit in memory? An estimate from XLA's own figures, checked before any run folder.

Each cohort's programs (init, the train chunk, evaluation, samples, each set of
probes due together) are compiled from abstract shapes and asked for their
``memory_analysis()``: per device, the arguments, the outputs, the outputs that
alias (donated) arguments, and the temporaries. The run then calls these same
jitted functions (``Estimate.programs``), whose compiled executables jit keeps:
nothing is traced or compiled twice.

What a run holds at its peak, on CPU where device memory is host memory::

    runtime     the process after compiling (its high-water mark: Python, JAX, libraries,
                the compiler's own peak, the executables)
  + data        the dataset on the host and one copy on each device
  + state       the population state, and the initial parameters if a probe needs them
  + program     the largest program's temporaries and new outputs, on every device at once
  + checkpoint  Orbax's host copy of the state while an async save is in flight
  + chunk rows  a chunk's metrics read back and tidied into rows

and at the end, the whole metrics table read back and written (``tables``), in
place of the training terms. Each term is an upper bound, so the sum is too.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdyn.data import dataset_info
from jaxdyn.data.dataset import Dataset
from jaxdyn.errors import ConfigError
from jaxdyn.logs import log
from jaxdyn.population import make_mesh, plan_layout
from jaxdyn.runner import CohortPrograms

# One long metric row in pandas: cohort, member (int32), step (int64), metric and
# layer (shared string objects), value (float32) = 36 bytes, with room for the
# Arrow table and the concatenated copy alive together while a table is read or written.
ROW_BYTES = 150
# What a run's process takes after the check, whatever its size: Orbax's and TensorStore's
# writer threads and their malloc arenas (first save), pyarrow's parquet writer and the
# summary at the end. Measured here: 50-75 MiB for an MLP, CNN or LSTM study.
RUNTIME_GROWTH = 128 * 2**20
# Buffers are allocated through malloc (XLA's CPU buffers, numpy, pandas): room for its
# rounding and fragmentation. Measured: the sum of the terms fell short of the growth of
# peak RSS by up to 6% (an LSTM's 12 GiB probe program, a 1,000-member MLP's evaluation).
ALLOCATOR_SLACK = 1.10
GiB = 2**30


def member_shapes(cohort, task=None):
    """One member's state as shapes and dtypes (``jax.eval_shape`` of ``init``: nothing compiles)."""
    one = lambda a: jax.ShapeDtypeStruct((), a.dtype)  # what the run's init gets, less the member axis
    seeds, hparams = jax.tree.map(one, cohort.member_arrays(lambda a: a))
    return jax.eval_shape((task or cohort.task()).init, seeds, hparams)


def member_state_bytes(cohort) -> int:
    """Bytes of one member's state (params, optimizer state, keys, ...), from shapes alone."""
    return _bytes(member_shapes(cohort))


@dataclass(frozen=True)
class Estimate:
    """The peak resident memory of one cohort's run, in bytes, by where it goes.

    ``device`` is what lives in the devices' memory and ``host`` the rest; on CPU
    they are the same memory and ``total`` is their sum.
    """

    cohort: int
    members: int  # padded
    runtime: int
    data_host: int
    data_devices: int
    state: int
    program: int
    program_name: str
    checkpoint: int
    chunk_rows: int
    tables: int
    # The cohort's CohortPrograms, compiled here: the run calls these same jitted functions, so
    # nothing is traced or compiled twice.
    programs: object = field(default=None, compare=False, repr=False)

    @property
    def device(self) -> int:
        return _slack(self.data_devices + self.state + self.program)

    @property
    def host(self) -> int:
        return self.runtime + RUNTIME_GROWTH + _slack(self.data_host + max(self.checkpoint + self.chunk_rows,
                                                                             self.tables))

    @property
    def total(self) -> int:
        training = self.data_devices + self.state + self.program + self.checkpoint + self.chunk_rows
        return self.runtime + RUNTIME_GROWTH + _slack(self.data_host + max(training, self.tables))

    def breakdown(self) -> str:
        parts = [("runtime after compiling", self.runtime), ("runtime growth while training", RUNTIME_GROWTH),
                 ("dataset on host", self.data_host), ("dataset on devices", self.data_devices), ("population state", self.state),
                 (f"{self.program_name} program (XLA temporaries + outputs)", self.program),
                 ("checkpoint copy in flight", self.checkpoint), ("a chunk's metric rows", self.chunk_rows),
                 ("tables at the end (instead of training)", self.tables)]
        return ", ".join(f"{name} {_gib(b)}" for name, b in parts if b) + f"; x{ALLOCATOR_SLACK} allocator slack"


class DoesNotFit(ConfigError):
    """A cohort that would not fit in memory; ``members``: the most members per program that
    would, from the estimate taken as linear in the members (0: not even one)."""

    def __init__(self, message: str, members: int):
        super().__init__(message)
        self.members = members


def _members_that_fit(e: Estimate, need: str, free: int) -> int:
    """Members per program that fit in ``free`` bytes: what ``need`` (an ``Estimate`` property)
    holds without the terms that grow with the members, plus the rest pro rata."""
    fixed = getattr(dataclasses.replace(e, state=0, program=0, checkpoint=0, chunk_rows=0, tables=0), need)
    per_member = (getattr(e, need) - fixed) / e.members
    return max(int((free - fixed) // per_member), 0) if per_member > 0 else 0


def estimate(cohort, mesh) -> Estimate:
    """Compile ``cohort``'s programs from abstract shapes and add up what its run holds at its peak."""
    t = cohort.config.train
    layout = plan_layout(len(cohort.members), mesh.size, t.member_group, mesh.devices.flat[0].platform)
    programs = CohortPrograms.build(cohort, layout, mesh)
    init = programs.init.func.lower(*programs.init.args).compile()
    # The compiled program's own output shapes: an eval_shape of the jitted init would add a
    # (trace-only) entry to its cache and read as one more compiled program.
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=s.sharding), init.out_info)
    data = abstract_dataset(cohort.config, mesh)
    n_chunks = t.steps // t.chunk_steps
    compiled = {"init": init,
                "train chunk": programs.train_chunk.lower(state, data).compile(),
                "evaluate": programs.evaluate.lower(state, data.x_test, data.y_test).compile()}
    if programs.snapshot is not None:
        compiled["samples"] = programs.snapshot.lower(state).compile()
    if programs.probes:
        n = min(programs.probes.batch_size, data.x_train.shape[0])
        x, y = (jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype, sharding=a.sharding) for a in data[:2])
        for names in sorted(programs.probes.due_sets(n_chunks)):
            compiled["probes " + "+".join(names)] = programs.probes._program(names).lower(
                state, state.params, x, y).compile()
    stats = {name: c.memory_analysis() for name, c in compiled.items()}
    # Metric values each program returns per member; the train chunk also returns the state
    # (and, when its state is not donated, that output is a new copy, counted in ``extra``).
    values = {name: _values_per_member(c.out_info, layout.n_padded) for name, c in compiled.items()}
    values["train chunk"] = _values_per_member(compiled["train chunk"].out_info[1], layout.n_padded)
    # Per device, what a program adds to what is already resident: its temporaries and the
    # outputs that do not reuse a donated argument (the train chunk's state does).
    extra = {name: s.temp_size_in_bytes + s.output_size_in_bytes - s.alias_size_in_bytes
             for name, s in stats.items()}
    biggest = max(extra, key=extra.get)
    state_bytes = _bytes(state)
    data_bytes = _bytes(data)
    return Estimate(
        cohort=cohort.index, members=layout.n_padded, runtime=_high_water_mark(),
        data_host=data_bytes, data_devices=data_bytes * mesh.size,
        state=state_bytes + (_bytes(state.params) if programs.probes.needs_init else 0),
        program=extra[biggest] * mesh.size, program_name=biggest,
        checkpoint=state_bytes,
        chunk_rows=values["train chunk"] * layout.n_members * ROW_BYTES,
        tables=_run_rows(values, layout.n_members, cohort.config, programs.probes) * ROW_BYTES,
        programs=programs)


def abstract_dataset(cfg, mesh=None) -> Dataset:
    """The configured dataset as shapes, placed like ``population.replicate`` places the real one
    (on ``mesh``; no placement without one)."""
    info = dataset_info(cfg.data)
    n_train = cfg.data.n_train or info.n_train
    y_dtype = np.int32 if info.n_classes else np.float32
    on_all = None if mesh is None else NamedSharding(mesh, P())
    shapes = [((n_train, *info.input_shape), np.float32), ((n_train, *info.target_shape), y_dtype),
              ((info.n_test, *info.input_shape), np.float32), ((info.n_test, *info.target_shape), y_dtype)]
    return Dataset(*(jax.ShapeDtypeStruct(s, d, sharding=on_all) for s, d in shapes))


def _values_per_member(outputs, n_padded: int) -> int:
    """Values per member in a program's ``outputs`` (shapes with the member axis first)."""
    return sum(x.size for x in jax.tree.leaves(outputs)) // n_padded


def _run_rows(values: dict, n_members: int, cfg, probes) -> int:
    """Metric rows of the whole run: the train windows, the evaluations and the probes' values."""
    t = cfg.train
    n_chunks = t.steps // t.chunk_steps
    per_member = n_chunks * values["train chunk"]
    # Step 0, every eval_every-th chunk, and the last chunk.
    per_member += (n_chunks // t.eval_every + 2) * values["evaluate"]
    for chunk in range(n_chunks + 1):  # chunk 0: every probe at step 0
        names = tuple(p.name for p, _ in probes.due(chunk, chunk == n_chunks) if p.fn is not None)
        if names:
            per_member += values["probes " + "+".join(names)]
    return per_member * n_members


def check_memory(cohorts, mesh=None) -> list[Estimate]:
    """Refuse, before any run folder, a study whose largest cohort would not fit in memory.

    Compiles every cohort's programs (the run then reads them from the compilation cache).

    Returns:
      Each cohort's ``Estimate``.

    Raises:
      DoesNotFit: with the estimate broken down, the memory available, the fix and the members
        per program that would fit.
    """
    mesh = mesh if mesh is not None else make_mesh()
    estimates = [estimate(cohort, mesh) for cohort in cohorts]
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    host = available_bytes() + _resident()  # what this process holds already is in the estimate
    device = None if on_cpu else _device_limit(mesh)
    for cohort, e in zip(cohorts, estimates):
        term, free = ("total", host) if on_cpu else ("host", host)
        where = "" if on_cpu else " of host memory"
        if device is not None and e.device > device:
            term, free, where = "device", device, " of device memory"
        need = getattr(e, term)
        log(f"memory: cohort {cohort.index} needs about {_gib(need)}{where} at its peak, "
            f"{_gib(free)} is available")
        if need > free:
            settings = f" {cohort.settings}" if cohort.settings else ""
            raise DoesNotFit(
                f"cohort {cohort.index}{settings} needs about {_gib(need)}{where} at its peak but "
                f"{_gib(free)} is available: {e.members:,} members; {e.breakdown()}.\n"
                "To fit, use fewer members or a smaller model: fewer seeds or grid values per cohort "
                "(or split the study; train.max_members_per_program splits a cohort), a smaller train.chunk_steps (fewer metrics held per chunk), "
                "or a narrower or shallower model.", _members_that_fit(e, term, free)
            )
    return estimates


def available_bytes() -> int:
    """Host memory this process may still take: the kernel's MemAvailable, capped by the
    cgroup's limit (a container's), which MemAvailable does not know about."""
    free = _meminfo_available()
    for limit, usage in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        try:
            cap = int(Path("/sys/fs/cgroup", limit).read_text()) - int(Path("/sys/fs/cgroup", usage).read_text())
        except (OSError, ValueError):  # "max", no cgroup, or not Linux
            continue
        free = min(free, cap)
        break
    return free


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            return 2**63  # unknown: do not refuse


def _device_limit(mesh) -> int | None:
    """The smallest device's memory limit times the devices (members are spread evenly), or None."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.devices.flat]
    return min(limits) * len(limits) if all(limits) else None


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):  # not Linux
        return 0


def _high_water_mark() -> int:
    """This process's peak resident memory so far (``VmHWM``): it includes the compiler's peak."""
    return _status_kib("VmHWM") * 1024


def _resident() -> int:
    return _status_kib("VmRSS") * 1024


def _slack(n: int) -> int:
    return int(n * ALLOCATOR_SLACK)


def _bytes(tree) -> int:
    return sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"
