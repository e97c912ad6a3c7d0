"""Give XLA one host device per CPU core, before jax initialises.

One XLA CPU device runs a small model's step on about one core, so a
population sharded over one device per core uses them all (2x member-steps/s
on a 2-core machine). This is jaxdyn's one import-time side effect and it only
touches the CPU platform (jax's ``jax_num_cpu_devices`` option): on a GPU or
TPU machine the accelerator stays the default backend.

Override with ``JAXDYN_CPU_DEVICES=N`` (``1`` turns it off), which wins over
everything; or set the count yourself, with ``JAX_NUM_CPU_DEVICES`` or
``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, which jaxdyn then
leaves alone.
"""

import os
import warnings

_FLAG = "--xla_force_host_platform_device_count"


def _core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure() -> None:
    import jax  # importing jax starts no backend; only the first device query or operation does

    wanted = os.environ.get("JAXDYN_CPU_DEVICES", "")
    user_set = _FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices >= 0
    if user_set and not wanted:
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
        count = _core_count()
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # jax refuses once a backend has started
        if len(jax.devices("cpu")) != count:
            warnings.warn(
                "jax was initialised before jaxdyn was imported, so jaxdyn could not give XLA "
                f"{count} CPU devices; import jaxdyn first or set JAX_NUM_CPU_DEVICES={count}.",
                stacklevel=3,
            )
