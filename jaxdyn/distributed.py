"""Many processes, one population: JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same study. ``jax.distributed.initialize`` joins them into one set
of global devices, the mesh spans them all, and the member axis is sharded over it as over
one process's devices. What a process reads back from the devices (metrics, scores, which
members are alive) is gathered from all of them (``host``), so every process makes the same
host-side decisions (rows, PBT rounds, when to stop) from the same numbers.

Process 0 is the writer: it owns the run folder (lock, ``config.toml``, ``run.json``, the
tables, checkpoint manifests, the report). The others write their copies of the tables to
a private scratch folder, never to the run folder, and Orbax writes every process's shards
of a checkpoint into the shared run folder, so the folder must be on a filesystem every
process sees (checked at the start). One process is exactly the single-process code path.

Failures end every process within a bounded time, with a message: a process that never
joins ends the others after the initialisation timeout (``--init-timeout``), and a process
that dies mid-run ends the others at their next collective (one per chunk) or after the
heartbeat timeout (``--heartbeat-timeout``), whichever comes first.
"""

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxdyn.errors import ConfigError, causes
from jaxdyn.logs import set_quiet

DEFAULT_INIT_TIMEOUT = 300  # seconds; jax's own default
DEFAULT_HEARTBEAT_TIMEOUT = 100  # seconds; jax's own default
LOST_PEER_EXIT = 75  # EX_TEMPFAIL: a resume can continue once every process runs again


@dataclass(frozen=True)
class Settings:
    """How this process joins the others. ``None``: from the environment, else auto-detected.

    Attributes:
      coordinator: ``host:port`` of process 0's coordination service (``JAX_COORDINATOR_ADDRESS``).
      num_processes: how many processes take part (``JAX_NUM_PROCESSES``).
      process_id: this process's index, 0 ... num_processes - 1 (``JAX_PROCESS_ID``).
      init_timeout: seconds to wait for every process to join (``JAXDYN_INIT_TIMEOUT``).
      heartbeat_timeout: seconds of silence after which a process counts as dead
        (``JAXDYN_HEARTBEAT_TIMEOUT``).
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    init_timeout: float | None = None
    heartbeat_timeout: float | None = None

    def resolved(self) -> "Settings":
        """Fill what was not given from the environment; check every value (``ConfigError``)."""
        env = os.environ
        coordinator = self.coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
        n = self.num_processes if self.num_processes is not None else _env_int("JAX_NUM_PROCESSES", minimum=1)
        i = self.process_id if self.process_id is not None else _env_int("JAX_PROCESS_ID", minimum=0)
        init = self.init_timeout if self.init_timeout is not None else _env_int("JAXDYN_INIT_TIMEOUT", minimum=1)
        beat = (self.heartbeat_timeout if self.heartbeat_timeout is not None
                else _env_int("JAXDYN_HEARTBEAT_TIMEOUT", minimum=1))
        if n is not None and n < 1:
            raise ConfigError(f"--num-processes {n}: give the number of processes, 1 or more")
        if i is not None and (i < 0 or (n is not None and i >= n)):
            raise ConfigError(f"--process-id {i}: give this process's index, 0 to {(n or 1) - 1} "
                              f"(--num-processes {n})")
        for name, value in (("--init-timeout", init), ("--heartbeat-timeout", beat)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} {value}: give seconds, more than 0")
        if coordinator is not None:
            check_coordinator(coordinator, "--coordinator" if self.coordinator else "JAX_COORDINATOR_ADDRESS")
        given = [x is not None for x in (coordinator, n, i)]
        if any(given) and not all(given):
            raise ConfigError("--distributed: give all of --coordinator, --num-processes and --process-id (or "
                              "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or none of them "
                              "under SLURM or on a TPU pod, where jax detects them")
        return Settings(coordinator, n, i, init or DEFAULT_INIT_TIMEOUT, beat or DEFAULT_HEARTBEAT_TIMEOUT)


def check_coordinator(address: str, name: str = "--coordinator") -> None:
    """Refuse a coordinator address that is not ``host:port`` with a port of 1 to 65535 and a host
    this machine can resolve (``[v6 address]:port`` for IPv6): jax hands it to gRPC, which
    crashes the process (a segfault) on a port that is not a number, and waits out
    ``--init-timeout`` on one out of range (``ConfigError``)."""
    given = f"{name} {address!r}"
    example = "give host:port of process 0, e.g. 10.0.0.1:12345"
    host, sep, port = address.rpartition(":")
    if "://" in address:
        raise ConfigError(f"{given}: {example}, without a scheme such as http://")
    if not sep or not host:
        raise ConfigError(f"{given}: {example}")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"{given}: the port {port!r} is not a number from 1 to 65535; {example}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in host and bare == host:
        raise ConfigError(f"{given}: write an IPv6 host in brackets, e.g. [::1]:{port}")
    try:
        socket.getaddrinfo(bare, int(port))
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"{given}: this machine cannot resolve the host {bare!r} "
                          f"({getattr(e, 'strerror', None) or e}); give process 0's address or hostname") from None


def resume_command(run_dir, processes: int | None = None) -> str:
    """The command that continues ``run_dir``: ``jaxdyn run --resume RUN``, or for a run of
    several processes (``processes``; default this run's count) the local launcher's form and
    the form to start in each process, since a resume needs them all again."""
    n = count() if processes is None else processes
    if n <= 1:
        return f"jaxdyn run --resume {run_dir}"
    return (f"scripts/launch_local.sh {n} --resume {run_dir} (on one machine), or in each of the {n} processes: "
            f"jaxdyn run --resume {run_dir} --distributed --coordinator HOST:PORT --num-processes {n} "
            f"--process-id I (or under SLURM: srun jaxdyn run --resume {run_dir} --distributed)")


def _env_int(name: str, minimum: int) -> int | None:
    text = os.environ.get(name, "")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: give a whole number >= {minimum}")
    return value


def initialize(settings: Settings = Settings()) -> None:
    """Join the other processes; call before anything uses a device.

    On CPU, cross-process collectives go through gloo (TCP). A process that cannot join
    within ``init_timeout`` (a peer never started, a wrong address) prints which and exits
    with status 75 on its own, never a hang; jax's own deadline is set a little later, as
    a backstop that aborts.

    Raises:
      ConfigError: a bad setting, or jax was already initialised on its devices.
    """
    s = settings.resolved()
    if jax.distributed.is_initialized():
        return
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except RuntimeError:  # a backend already started: jax.distributed.initialize says so below
        pass
    who = (f"process {s.process_id} of {s.num_processes}" if s.process_id is not None
           else "this process (detected by jax)")
    where = s.coordinator or "the coordinator jax detects (SLURM, TPU pod)"
    print(f"[jaxdyn] {who}: joining {where}; waiting up to {s.init_timeout:g} s for every process",
          file=sys.stderr, flush=True)
    watchdog = threading.Timer(s.init_timeout, _never_joined, (who, where, s))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=s.coordinator, num_processes=s.num_processes, process_id=s.process_id,
            initialization_timeout=int(s.init_timeout) + 30, heartbeat_timeout_seconds=int(s.heartbeat_timeout))
    except RuntimeError as e:
        raise ConfigError(f"--distributed: jax.distributed could not start ({(str(e).splitlines() or [''])[0]}); "
                          "initialise it before anything uses a device (import jaxdyn, then "
                          "jaxdyn.distributed.initialize, then the rest)") from None
    except ValueError as e:  # no coordinator given and no cluster detected
        raise ConfigError(f"--distributed: {e}; give --coordinator, --num-processes and --process-id") from None
    finally:
        watchdog.cancel()
    set_quiet(jax.process_index() != 0)


def _never_joined(who: str, where: str, s: Settings) -> None:
    sys.stderr.write(
        f"jaxdyn: error: {who} waited {s.init_timeout:g} s at {where} and not every process joined (one never "
        "started, crashed, or was given another address or process count); stopping. Start all "
        f"{s.num_processes or ''} processes with the same --coordinator and --num-processes, or raise "
        "--init-timeout\n")
    sys.stderr.flush()
    os._exit(LOST_PEER_EXIT)


def count() -> int:
    """How many processes take part (1 without ``jax.distributed``)."""
    return jax.process_count()


def index() -> int:
    return jax.process_index()


def is_writer() -> bool:
    """Process 0 writes the run folder; every process when there is one."""
    return jax.process_index() == 0


def host(tree):
    """Device values as numpy, each whole: ``jax.device_get`` in one process; with several, an
    array that spans other processes' devices is gathered from them first (a collective:
    every process calls this in the same order, as every process runs the same host code)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (one collective; no-op in one process).
    Used for a stop requested by a signal that reached only some processes."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.array([flag], dtype=np.bool_))))


def writer_value(value: int) -> int:
    """Process 0's ``value`` on every process (one collective; ``value`` itself in one process)."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.array(value, dtype=np.int32)))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name``."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_lost_peer(error: BaseException) -> bool:
    """A failure that says another process went away: a collective whose peer closed its
    connection (gloo's error, raised as whatever type the caller wraps it in), or the
    coordination service reporting a task as unhealthy."""
    if jax.process_count() == 1:
        return False
    return any(t in str(e)[:4000] for e in causes(error) for t in _LOST_PEER_TEXT)


_LOST_PEER_TEXT = ("Gloo", "Connection closed by peer", "Connection reset by peer", "heartbeat timeout",
                   "unhealthy", "Barrier failed", "coordination service")


def exit_lost_peer(message: str) -> None:
    """Print ``message`` and end this process at once with status 75, skipping jax's shutdown
    barrier (which would wait for the lost process until its own timeout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(LOST_PEER_EXIT)


def leave() -> bool:
    """Meet every process at jax's shutdown barrier and leave the multi-process runtime; True in
    the process that wrote the run (process 0, or the only one). What comes after the training
    (the report: ensembles and soups evaluate checkpoints) is then one process's work, done in a
    fresh single-process ``jaxdyn report``: a program over the global devices would wait for
    processes that have gone."""
    writer = is_writer()
    if jax.process_count() > 1:
        jax.distributed.shutdown()
    return writer


def describe() -> dict:
    """What ``run.json`` and every checkpoint record: the process count (a resume needs the same)."""
    return {"n_processes": jax.process_count()}


def wait_for(path, seconds: float = 30.0) -> bool:
    """True once ``path`` exists (a follower looking for what process 0 wrote on a shared
    filesystem, whose metadata may lag); False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def writer_text(text: str | None) -> str:
    """Process 0's ``text`` on every process (two collectives; ``text`` itself in one process)."""
    if jax.process_count() == 1:
        return text or ""
    data = np.frombuffer((text or "").encode(), np.uint8) if is_writer() else np.zeros(0, np.uint8)
    n = writer_value(len(data))
    if n == 0:
        return ""
    buffer = data if is_writer() else np.zeros(n, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).astype(np.uint8)).decode()
