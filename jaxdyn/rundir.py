"""The run folder's life: create it, prove it writable, lock it, write and check ``run.json``.

A run folder belongs to one live process at a time. ``open_new`` and
``open_existing`` take an exclusive ``flock`` on ``RUN/.lock`` for the whole run;
the kernel drops it when the process ends, however it ends, so a ``kill -9``
never leaves a stale lock. The lock file itself stays (deleting it would let a
third process lock a new file while a second still holds the old one).
"""

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import jax

from jaxdyn import distributed
from jaxdyn.atomic import check_writable, write_atomic
from jaxdyn.axes import MEMBER_CHOICES
from jaxdyn.checkpoint import committed_steps
from jaxdyn.config import Config, load_config, to_toml
from jaxdyn.data import arrays
from jaxdyn.errors import ConfigError, RunError, RunInUse
from jaxdyn.logs import log
from jaxdyn.schedules import reads_run_length

LOCK_NAME = ".lock"
# Environment that shapes the compiled program or the device count: recorded, and
# a resume under other values is warned about.
ENV_RECORDED = ("XLA_FLAGS", "JAXDYN_CPU_DEVICES")


def load_run_config(run_dir) -> Config:
    """A run folder's saved config, read as a resume, ``extract_member``, the ensemble and the
    report all read it: the arrays handed to ``jaxdyn.run`` for it are taken from the folder's
    copy first, so no process has to hand them over again. A folder written before a member
    choice was one (``run.json`` does not list it) keeps it structural: its cohorts, checkpoints
    and member ids were laid out so."""
    arrays.adopt(run_dir)
    cfg = load_config(Path(run_dir) / "config.toml")
    try:
        written = json.loads((Path(run_dir) / "run.json").read_text()).get("member_choices", [])
    except (OSError, ValueError, AttributeError):  # no run.json (yet): the layout of today
        return cfg
    return dataclasses.replace(cfg, kept_structural=tuple(k for k in MEMBER_CHOICES if k not in written))


def run_info(config: Config) -> dict:
    """What ``run.json`` records: config hashes, versions, devices and the XLA environment.
    ``study_sha256`` hashes the config without ``train.steps``: a checkpoint's record of the
    study, which a continued run (more steps) still matches."""
    no_length = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=0))
    # Which settings members choose for themselves: fewer cohorts. A folder written before lists
    # none (``load_run_config``), and its checkpoints, which record this, still match it.
    choices = {"member_choices": sorted(k for k in MEMBER_CHOICES if k not in config.kept_structural)}
    return {
        "config_sha256": hashlib.sha256(to_toml(config).encode()).hexdigest(),
        "study_sha256": hashlib.sha256(to_toml(no_length).encode()).hexdigest(),
        "versions": _versions(),
        "n_devices": len(jax.devices()),
        **distributed.describe(),
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,  # shown in the report; not checked on resume
        "env": {name: os.environ.get(name) for name in ENV_RECORDED},
        **(choices if choices["member_choices"] else {}),
    }


@contextlib.contextmanager
def open_new(out, study_name: str, config_toml: str, info: dict):
    """Create a run folder, lock it and write ``config.toml`` and ``run.json``; yield its path.

    Raises:
      ConfigError: the folder is a file, is not empty, or is not writable (any
        folders this call created are removed again).
      RunInUse: another process holds the folder.
    """
    run_dir = Path(out) if out is not None else _fresh_name(study_name)
    # Checked again (the folder may have changed since the check before compiling), and before
    # locking, so that no .lock is left in someone's folder.
    check_new(run_dir)
    created = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
    with _locked(run_dir, created, fix="choose another --out folder"):
        if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise _not_empty(run_dir)
        try:
            write_atomic(run_dir / "config.toml", lambda p: p.write_text(config_toml))
            write_atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(info, indent=2)))
        except OSError as e:
            raise ConfigError(f"cannot write to output folder {run_dir} ({e.strerror or e}); free space "
                              "or choose another --out folder") from None
        yield run_dir


def check_new(out) -> None:
    """What ``open_new`` would refuse, found without creating anything, so that a study fails
    before it compiles: ``out`` is a file or lies under one, holds another run or anything
    else, or is not writable (tried with a scratch folder in it, or in the nearest folder
    above it that exists, removed at once). ``out`` None: a fresh folder under ``runs/``.

    Raises:
      ConfigError: the folder cannot be a new run's; the message names it and the fix.
      RunInUse: a live process holds the folder.
    """
    run_dir = Path(out) if out is not None else Path("runs")
    fix = "choose another --out folder"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output folder {run_dir} is a file; choose a new --out folder")
    if run_dir.is_symlink() and not run_dir.exists():
        raise ConfigError(f"output folder {run_dir} is a link to {os.readlink(run_dir)}, which does not exist; "
                          f"create that folder, or {fix}")
    if out is not None and run_dir.is_dir():
        _try_lock(run_dir, fix)
        if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise _not_empty(run_dir)
    check_writable(run_dir, f"output folder {run_dir}", fix)


def _not_empty(run_dir: Path) -> ConfigError:
    return ConfigError(f"output folder {run_dir} is not empty; choose a new --out folder, or --resume {run_dir}")


def check_existing(run_dir, info: dict) -> None:
    """What ``open_existing`` would refuse (a folder in use, not writable, or one that cannot
    continue bitwise under ``info``), found without changing it, before anything compiles.

    Raises:
      ConfigError, RunInUse: as ``open_existing``.
    """
    run_dir = Path(run_dir)
    _try_lock(run_dir, "make it writable to resume it")
    check_writable(run_dir, f"output folder {run_dir}", "make it writable to resume it")
    _check_resume(run_dir, info)


def _try_lock(run_dir: Path, fix: str) -> None:
    """Take and release the folder's lock if it has one: ``RunInUse`` if a live process holds it,
    ``ConfigError`` if the lock file cannot be opened for writing (a read-only disk, another user's)."""
    if not (run_dir / LOCK_NAME).exists():
        return
    try:
        _Lock(run_dir / LOCK_NAME).release()
    except OSError as e:
        raise ConfigError(f"output folder {run_dir} is not writable ({e.strerror or e}); {fix}") from None


@contextlib.contextmanager
def open_existing(run_dir, info: dict):
    """Lock an existing run folder for a resume and check it can continue bitwise; yield its path.

    Raises:
      ConfigError: not writable, ``run.json`` missing or damaged, or other devices.
      RunInUse: another process holds the folder.
    """
    run_dir = Path(run_dir)
    with _locked(run_dir, [], fix="make it writable to resume it"):
        _warn_changes(_check_resume(run_dir, info), info)
        yield run_dir


def resume_change(saved: Config, requested: Config, run_dir: Path) -> int | None:
    """What a resume may change: nothing, or ``train.steps`` upwards (the run continues for
    more steps). Returns the saved ``train.steps`` when the run is extended, else None.

    Raises:
      ConfigError: any other change (with the diff), fewer steps, or a schedule whose shape
        reads ``train.steps`` (the learning rates already used would change).
    """
    old, new = saved.train.steps, requested.train.steps
    same_length = dataclasses.replace(requested, train=dataclasses.replace(requested.train, steps=old))
    refuse_changed_config(to_toml(saved), to_toml(same_length), run_dir)
    if new == old:
        return None
    if new < old:
        raise ConfigError(f"--resume {run_dir}: train.steps = {new} is fewer than the run's {old}; a resume "
                          "continues a run (more steps) and never shortens it; read the first steps from "
                          "its tables instead")
    if any(key == "train.steps" for key, _ in saved.grid):
        raise ConfigError(f"--resume {run_dir} --set train.steps: the run has a train.steps grid axis; "
                          "continue each setting as its own run instead")
    options = saved.task.options
    decaying = [name for name, section in (("optim", saved.optim), (saved.task.spec().section, options))
                if section is not None and reads_run_length(section)]
    if decaying:
        raise ConfigError(f"--resume {run_dir} --set train.steps={new}: the {decaying[0]}.schedule decays over "
                          f"train.steps ({decaying[0]}.decay_steps = 0), so more steps would change the learning "
                          f"rates this run already used; start a new run with {decaying[0]}.decay_steps set")
    return old


def extend(run_dir: Path, config_toml: str, steps_before: int, steps: int) -> None:
    """Make a finished (or interrupted) run folder one of ``steps`` steps: its ``config.toml``
    says so, and every cohort is unfinished again (their member tables are rewritten at the end)."""
    write_atomic(run_dir / "config.toml", lambda p: p.write_text(config_toml))
    info = json.loads((run_dir / "run.json").read_text())
    info["config_sha256"] = hashlib.sha256(config_toml.encode()).hexdigest()
    write_atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(info, indent=2)))
    for marker in (run_dir / "parts").glob("members_c*.csv"):
        marker.unlink()
    log(f"continuing {run_dir} from {steps_before} to {steps} steps")


def refuse_changed_config(saved: str, current: str, run_dir: Path) -> None:
    """Raise a ConfigError with a diff when a resume asks for another config."""
    if saved == current:
        return
    diff = "".join(difflib.unified_diff(
        saved.splitlines(True), current.splitlines(True), f"{run_dir}/config.toml", "requested config"
    ))
    raise ConfigError(
        f"refusing to resume {run_dir} with a changed config (a resume must continue the same study):\n"
        f"{diff}Start a new run with --out instead, or resume without changes (only train.steps may grow: "
        "--set train.steps=N continues the run for more steps)."
    )


def disk_full_error(run_dir: Path) -> RunError:
    """The message for a run stopped by a full disk: cause, folder, last checkpoint, fix."""
    last = last_checkpoint(run_dir)
    where = (f"The last complete checkpoint is {last}; earlier checkpoints are untouched."
             if last else "No checkpoint was completed yet, so a resume starts the unfinished cohort over.")
    return RunError(
        f"no space left on device while writing {run_dir}. {where}\n"
        f"Free space on that disk, then continue with: jaxdyn run --resume {run_dir}"
    )


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest committed checkpoint folder of the run's last cohort that has one."""
    for cohort_dir in sorted((Path(run_dir) / "checkpoints").glob("cohort_*"), reverse=True):
        steps = committed_steps(cohort_dir)
        if steps:
            return cohort_dir / str(steps[-1])
    return None


class _Lock:
    """An exclusive, non-blocking ``flock`` on one file, held until ``release``."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a+")  # O_CLOEXEC: child processes do not inherit it
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip()
            self._file.close()
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunInUse(
                f"{path.parent} is in use by {who}; wait for it to finish or stop it "
                "(it saves on SIGTERM), or choose another folder"
            ) from None
        self._file.truncate(0)
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


@contextlib.contextmanager
def _locked(run_dir: Path, created: list[Path], fix: str):
    """Create ``run_dir`` and take its lock (which proves it writable); release on exit.

    On a write failure the ``created`` folders are removed again, innermost first.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _Lock(run_dir / LOCK_NAME)
    except OSError as e:
        for path in created:
            try:
                (path / LOCK_NAME).unlink(missing_ok=True)
                path.rmdir()
            except OSError:
                pass
        raise ConfigError(f"output folder {run_dir} is not writable ({e.strerror or e}); {fix}") from None
    try:
        yield
    finally:
        lock.release()


def _check_resume(run_dir: Path, current: dict) -> dict:
    """Refuse a resume that cannot continue bitwise; return the saved ``run.json``."""
    try:
        saved = json.loads((run_dir / "run.json").read_text())
        saved["n_devices"], saved["platform"], saved["versions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"--resume {run_dir}: run.json is missing or damaged ({type(e).__name__}: {e}); "
            "is it a jaxdyn run folder?"
        ) from None
    processes = saved.get("n_processes", 1)
    if processes != current.get("n_processes", 1):  # first: a process count says more than a device count
        raise ConfigError(
            f"cannot resume {run_dir} bitwise: it ran as {processes} process(es) and this run has "
            f"{current.get('n_processes', 1)}; resume with the same process count and devices per process: "
            + distributed.resume_command(run_dir, processes))
    if saved["n_devices"] != current["n_devices"] or saved["platform"] != current["platform"]:
        where = "this process has" if processes == 1 else f"these {processes} processes have"
        raise ConfigError(
            f"cannot resume {run_dir} bitwise: it ran on {saved['n_devices']} {saved['platform']} "
            f"device(s), {where} {current['n_devices']} {current['platform']}; resume on the "
            "same devices (JAXDYN_CPU_DEVICES sets the CPU device count of each process)"
        )
    return saved


def _warn_changes(saved: dict, current: dict) -> None:
    """Say when library versions or XLA settings differ from those a resumed run started with."""
    changed = {k: (v, current["versions"].get(k)) for k, v in saved["versions"].items()
               if current["versions"].get(k) != v}
    if changed:
        log("library versions changed since this run started, so results may differ in the last bits: "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    saved_env = saved.get("env")
    if isinstance(saved_env, dict):
        env_changed = {k: (saved_env.get(k), v) for k, v in current["env"].items() if saved_env.get(k) != v}
        if env_changed:
            log("the XLA settings differ from those the run started with, so results may differ in the "
                "last bits: " + "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in env_changed.items()))


def _fresh_name(study_name: str) -> Path:
    """``runs/<name>-<time>``, never shared with a run started in the same second: the
    first process to create a name owns it (``mkdir`` is atomic)."""
    stem = Path("runs") / f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in itertools.count():
        path = stem.with_name(f"{stem.name}-{i}") if i else stem
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError:  # unwritable: open_new reports it
            return path


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("jaxdyn", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
