"""The errors jaxdyn reports to people, and how to tell a full disk from other failures.

Every error a user can cause or meet has a class here with a message that names
the cause, the file or field, and the fix. The CLI prints the message alone;
``JAXDYN_DEBUG=1`` adds the traceback.
"""

import difflib
import errno
import math
import os
from pathlib import Path

BRIEF = 60  # characters of a value's repr that a message shows


def debug_enabled() -> bool:
    """``JAXDYN_DEBUG=1`` (or any value but empty/0): print full tracebacks and library logs."""
    return os.environ.get("JAXDYN_DEBUG", "") not in ("", "0")


def brief(value) -> str:
    """A value as a message shows it: an array as its kind, dtype and shape, anything else as its
    repr cut to ``BRIEF`` characters (a value passed in the wrong place can be megabytes)."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"<{type(value).__name__} {dtype}{list(shape)}>"
    text = repr(value)
    return text if len(text) <= BRIEF else f"{text[:BRIEF - 1]}… ({type(value).__name__}, {len(text)} characters)"


def as_path(value, what: str) -> Path:
    """``value`` as a ``Path``, or a ``ConfigError`` naming ``what`` when it is no path at all."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise ConfigError(f"{what} = {brief(value)}: give a path (a str or a pathlib.Path)")


class ConfigError(ValueError):
    """A bad config, dataset or run folder: raised before any compile. CLI exit code 2."""

    exit_code = 2


class RunError(RuntimeError):
    """A run could not go on for a reason outside the study (disk, damaged files). Exit code 1."""

    exit_code = 1


class RunInUse(RunError):
    """Another live process holds the run folder's lock. Exit code 2."""

    exit_code = 2


def closest(word: str, options) -> str:
    """A hint for a misspelt name: the closest valid one, or the list of valid ones."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(map(str, options)))}"


def choice(where: str, value, options) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``options``, naming the closest one."""
    if value not in options:
        raise ConfigError(f"{where} = {brief(value)} is not known{closest(value, options)}")


def chunk_steps_fix(steps: int, chunk_steps: int, log_every: int, rounds: int = 1) -> str:
    """The fix for a ``train.chunk_steps`` that breaks the rule it must keep with every other
    setting at once: a divisor of ``train.steps`` and a multiple of ``train.log_every`` and of
    ``rounds`` (a federated round's local steps). The one nearest ``chunk_steps``, or, when no
    divisor of the steps is such a multiple, the steps and chunk that would be."""
    unit = math.lcm(log_every, rounds)
    fits = [d for d in range(unit, steps + 1, unit) if steps % d == 0]
    if fits:
        best = min(fits, key=lambda d: (abs(d - chunk_steps), d))
        return f"set train.chunk_steps = {best}"
    longer = math.ceil(steps / unit) * unit
    return (f"no divisor of train.steps = {steps} is a multiple of {unit}; set train.steps = {longer} "
            f"and train.chunk_steps = {unit} (or a multiple of {unit} that divides it)")


_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "os_error_code='28'")


def causes(exc: BaseException | None, limit: int = 20) -> list[BaseException]:
    """``exc`` and what it was raised from (``__cause__``, else ``__context__``), outermost first;
    at most ``limit`` of them, each once (a cycle ends the walk)."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen and len(chain) < limit:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` or anything it was raised from is ENOSPC/EDQUOT.

    Orbax and TensorStore report a full disk from their own threads as a plain
    exception whose text carries the OS message, so the text is checked as well
    as ``errno``.
    """
    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(text in str(e).lower() for text in _DISK_FULL_TEXT) for e in causes(exc))
