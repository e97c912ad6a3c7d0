"""Give XLA one host device per CPU core, before jax initialises.

One XLA CPU device runs a small model's step on about one core, so a
population sharded over one device per core uses them all (2x member-steps/s
on a 2-core machine). This is jaxdyn's one import-time side effect and it only
touches the CPU platform: on a GPU or TPU machine the accelerator stays the
default backend.

Override with ``JAXDYN_CPU_DEVICES=N`` (``1`` turns it off), which wins over
everything; or set ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``
yourself, which jaxdyn then leaves alone.
"""

import os
import sys
import warnings

_FLAG = "--xla_force_host_platform_device_count"


def _core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = os.environ.get("JAXDYN_CPU_DEVICES", "")
    if _FLAG in flags and not wanted:
        return
    try:
        count = int(wanted) if wanted else _core_count()
        if count < 1:
            raise ValueError
    except ValueError:
        # Raising here would break `import jaxdyn` (even `jaxdyn --help`) with a traceback.
        warnings.warn(
            f"JAXDYN_CPU_DEVICES={wanted!r} is not a whole number >= 1 (the number of XLA CPU "
            f"devices; 1 turns the per-core split off); using one per core ({_core_count()}).",
            stacklevel=3,
        )
        count, wanted = _core_count(), ""
    if _backend_started():
        if count > 1 or wanted:
            warnings.warn(
                "jax was initialised before jaxdyn was imported, so jaxdyn could not give XLA "
                f"{count} CPU devices; import jaxdyn first or set XLA_FLAGS={_FLAG}={count}.",
                stacklevel=3,
            )
        return
    # JAXDYN_CPU_DEVICES wins over a flag already in XLA_FLAGS (e.g. inherited from a parent).
    kept = " ".join(f for f in flags.split() if not f.startswith(_FLAG))
    os.environ["XLA_FLAGS"] = f"{kept} {_FLAG}={count}".strip()


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except Exception:  # private API moved: assume the worst only if jax is loaded
        return True
