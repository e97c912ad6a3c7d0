"""The run folder when several processes run one study (``jaxdyn.distributed``).

Process 0 opens the folder as a single process does (creates or locks it, writes
``config.toml`` and ``run.json``, prepares it) and tells the others its path, or its
error, which they then raise too. Each other process checks it sees the folder (it must be
on a filesystem every process shares, for Orbax writes every process's shards of a
checkpoint there), copies the tables written so far (``parts/``, on a resume) to a private
scratch folder and writes its own copies of the tables there from then on: identical rows,
which it reads back as process 0 reads its own, and which are deleted at the end. So no
process ever reads a table while another writes it.
"""

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, ContextManager

from jaxdyn import distributed
from jaxdyn.errors import ConfigError, RunError, RunInUse

_ERROR = "\0error\0"


def check_first(check: Callable[[], None]) -> None:
    """Run ``check`` (``rundir.check_new`` / ``check_existing``) in process 0, and raise its
    error in every process: the run folder is refused before anything compiles."""
    if distributed.count() == 1:
        check()
        return
    if distributed.is_writer():
        try:
            check()
        except Exception as e:  # whatever it is, the others must not wait for an answer that never comes
            distributed.writer_text(f"{_ERROR}{type(e).__name__}\0{e}")
            raise
        distributed.writer_text("")
    else:
        _raise_writer_error(distributed.writer_text(None), "refused the run folder")


def _raise_writer_error(text: str, what: str) -> None:
    """Raise in a follower the error process 0 sent (``text``), if it sent one."""
    if text.startswith(_ERROR):
        kind, message = text[len(_ERROR):].split("\0", 1)
        known = {"ConfigError": ConfigError, "RunError": RunError, "RunInUse": RunInUse}
        if kind not in known:  # process 0 failed in its check itself: it prints the traceback
            raise RunError(f"process 0 {what}: {kind}: {message}")
        raise known[kind](f"process 0 {what}: {message}")


@contextlib.contextmanager
def open_run(open_folder: Callable[[], ContextManager[Path]], prepare: Callable[[Path], None]):
    """Yield ``(run_dir, tables_dir)``: where checkpoints go (the shared run folder) and where
    this process writes its tables (the run folder in process 0, a scratch folder elsewhere).

    Args:
      open_folder: ``rundir.open_new(...)`` or ``rundir.open_existing(...)``, not yet entered;
        process 0 enters it.
      prepare: called with the run folder by process 0 after it opened it, before the others
        copy its tables (extends a continued run, keeps handed-over arrays, ...).

    Raises:
      ConfigError, RunInUse: process 0 could not open the folder (every process raises), or a
        process cannot see the folder process 0 made.
    """
    if distributed.count() == 1:
        with open_folder() as run_dir:
            prepare(run_dir)
            yield run_dir, run_dir
        return
    with contextlib.ExitStack() as stack:
        if distributed.is_writer():
            try:
                run_dir = stack.enter_context(open_folder())
                prepare(run_dir)
            except (ConfigError, RunError) as e:
                distributed.writer_text(f"{_ERROR}{type(e).__name__}\0{e}")
                raise
            distributed.writer_text(str(Path(run_dir).absolute()))
        else:
            text = distributed.writer_text(None)
            _raise_writer_error(text, "could not open the run folder")
            run_dir = Path(text)
        tables = run_dir if distributed.is_writer() else _scratch(run_dir, stack)
        missing = tables is None
        if distributed.any_process(missing):
            where = f"process {distributed.index()}" if missing else "another process"
            raise ConfigError(f"{where} cannot see the run folder {run_dir} that process 0 created: put --out on "
                              "a filesystem every process shares (Orbax writes each process's part of a "
                              "checkpoint there)")
        distributed.barrier("jaxdyn-run-open")  # every follower has its copy before process 0 writes on
        yield run_dir, tables


def _scratch(run_dir: Path, stack: contextlib.ExitStack) -> Path | None:
    """A private copy of the run folder's tables so far, removed at the end; None if this
    process cannot see the run folder."""
    if not distributed.wait_for(run_dir / "run.json"):
        return None
    scratch = Path(tempfile.mkdtemp(prefix=f"jaxdyn-process{distributed.index()}-"))
    stack.callback(shutil.rmtree, scratch, True)
    if (run_dir / "parts").is_dir():
        shutil.copytree(run_dir / "parts", scratch / "parts")
    return scratch


def finish(run_dir: Path) -> None:
    """Every process waits here until process 0 has written the run's tables."""
    distributed.barrier(f"jaxdyn-run-done-{Path(run_dir).name}")
