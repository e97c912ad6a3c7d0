"""Stopping a run on request: SIGTERM or Ctrl-C, honoured at a chunk boundary within a bounded time.

``StopFlag`` is set by the signal and read by the cohort loop (``runner.run_cohort``)
after every chunk, which then checkpoints and raises ``Interrupted``. A watchdog
thread bounds the wait when a chunk is long (see ``StopFlag``).
"""

import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from jaxdyn.logs import log


class Interrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived: the chunk in flight was finished and checkpointed.

    ``exit_code`` is the shell convention for the signal (143 for SIGTERM, 130 for SIGINT).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopFlag:
    """Set by SIGTERM or a first Ctrl-C; checked at chunk boundaries; honoured within a bounded time.

    A context manager that installs the handlers (main thread only). The signal also
    wakes a watchdog thread at once: ``signal.set_wakeup_fd`` has the C-level handler
    write the signal's number to a socket, so it arrives even while the main thread waits
    inside XLA for a long chunk (a Python handler runs only when that wait returns). The
    chunk in flight then has ``grace()`` seconds to finish and be checkpointed. If the
    stop has not reached ``__exit__`` by then, or a second signal comes, the watchdog
    logs that the chunk in flight is abandoned and which committed checkpoint a resume
    continues from, and ends the process at once with ``os._exit(128 + signum)``.

    Args:
      clock: seconds, monotonic (a test injects its own).
      exit: ends the process with a status (a test injects its own).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # Schedulers send SIGKILL some time after SIGTERM: 30 s by default in Slurm (KillWait)
    # and Kubernetes (terminationGracePeriodSeconds). Ending ourselves before that says what
    # was kept, where a SIGKILL says nothing; a chunk that takes longer is abandoned.
    GRACE_CAP = 25.0
    GRACE_FLOOR = 5.0  # room for the checkpoint's commit after a short chunk

    def __init__(self, clock: Callable[[], float] = time.monotonic, exit: Callable[[int], None] = os._exit):
        self.requested = False
        self.signum = 0
        self.signal_name = ""
        self.deadline = None
        self._clock, self._exit = clock, exit
        self._previous, self._previous_fd, self._sockets, self._thread = {}, None, None, None
        self._last_boundary, self._slowest = None, 0.0
        self._kept = "no checkpoint was committed yet"

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, runs to the end
                pass
        if self._previous:
            self._sockets = socket.socketpair()
            for sock in self._sockets:
                sock.setblocking(False)
            self._previous_fd = signal.set_wakeup_fd(self._sockets[1].fileno(), warn_on_full_buffer=False)
            self._thread = threading.Thread(target=self._watch, name="jaxdyn-stop", daemon=True)
            self._thread.start()
        return self

    def _handle(self, signum, frame):
        """The Python-level handler; the watchdog, woken by the same signal, does the work."""

    def chunks_start(self) -> None:
        """The first chunk of a cohort is dispatched (compiling and restoring are not a chunk's time)."""
        self._last_boundary = self._clock()

    def chunk_done(self) -> None:
        """A chunk boundary: the slowest interval between boundaries sets the grace."""
        now = self._clock()
        if self._last_boundary is not None:
            self._slowest = max(self._slowest, now - self._last_boundary)
        self._last_boundary = now

    def committed(self, cohort: int, chunk: int, run_dir: Path) -> None:
        """What a resume would continue from, for the message when a chunk is abandoned."""
        self._kept = (f"cohort {cohort}'s last committed checkpoint is after chunk {chunk}, which "
                      f"jaxdyn run --resume {run_dir} continues from")

    def grace(self) -> float:
        """Seconds the chunk in flight gets: twice the slowest chunk so far (its steps, rows and
        checkpoint), within [GRACE_FLOOR, GRACE_CAP]; GRACE_CAP before any chunk has finished."""
        if not self._slowest:
            return self.GRACE_CAP
        return min(self.GRACE_CAP, max(self.GRACE_FLOOR, 2 * self._slowest))

    def on_signal(self, signum: int) -> None:
        """The watchdog's reaction to a signal: the first sets the flag and the deadline, a second ends the process."""
        name = signal.Signals(signum).name
        if self.requested:
            self._abandon(signum, f"a second {name}")
            return
        self.requested, self.signum, self.signal_name = True, signum, name
        self.deadline = self._clock() + self.grace()
        log(f"{name}: finishing the chunk in flight, then saving a checkpoint (at most {self.grace():.0f} s; "
            f"a second {name} stops at once)")

    def agree(self, any_process: Callable[[bool], bool]) -> None:
        """Stop here if any process was asked to (``any_process``: ``distributed.any_process``,
        one collective per chunk with several processes), so that all checkpoint the same chunk."""
        if any_process(self.requested) and not self.requested:
            self.requested, self.signum, self.signal_name = True, signal.SIGTERM, "another process's SIGTERM"

    def check_deadline(self) -> None:
        """End the process if the stop was requested and its grace has run out."""
        if self.deadline is not None and self._clock() >= self.deadline:
            self._abandon(self.signum, f"the chunk in flight did not finish within {self.grace():.0f} s")

    def _abandon(self, signum: int, why: str) -> None:
        log(f"{signal.Signals(signum).name}: {why}: it is abandoned; {self._kept}")
        sys.stdout.flush()
        sys.stderr.flush()
        self._exit(128 + signum)

    def _watch(self) -> None:
        reader = self._sockets[0]
        while True:
            timeout = None if self.deadline is None else max(0.0, self.deadline - self._clock())
            ready, _, _ = select.select([reader], [], [], timeout)
            if not ready:
                self.check_deadline()
                continue
            try:
                got = reader.recv(64)
            except BlockingIOError:
                continue
            if not got:  # __exit__ closed the other end
                return
            for signum in got:
                if signum in self.SIGNALS:
                    self.on_signal(signum)

    def __exit__(self, *exc):
        if self._thread is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._sockets[1].close()
            self._thread.join()
            self._sockets[0].close()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
