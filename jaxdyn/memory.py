"""Will a cohort fit? An estimate from shapes alone, checked before any folder or compile."""

import os

import jax
import numpy as np

from jaxdyn.errors import ConfigError
from jaxdyn.population import plan_layout
from jaxdyn.tasks.supervised import Seeds

# A chunk holds the donated state, the new state, and gradients/updates of the
# same size: about four copies of the member state at its peak.
WORKING_COPIES = 4


def member_shapes(cohort, task=None):
    """One member's state as shapes and dtypes (``jax.eval_shape`` of ``init``: nothing compiles)."""
    seeds = Seeds(*(jax.ShapeDtypeStruct((), np.int32) for _ in Seeds._fields))
    hparams = {h: jax.ShapeDtypeStruct((), np.float32) for h in cohort.hparam_names}
    return jax.eval_shape((task or cohort.task()).init, seeds, hparams)


def member_state_bytes(cohort) -> int:
    """Bytes of one member's state (params, optimizer state, keys, ...), from shapes alone."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(member_shapes(cohort)))


def available_bytes() -> int:
    """Memory the population may use: the devices' limit, or the host's available RAM on CPU."""
    devices = jax.devices()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] * len(devices)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            return 2**63  # unknown: do not refuse


def check_memory(cohorts) -> None:
    """Refuse, before any folder or compile, a cohort whose state cannot fit.

    Raises:
      ConfigError: with the estimate and the memory available.
    """
    free = available_bytes()
    devices = jax.devices()
    for cohort in cohorts:
        per_member = member_state_bytes(cohort)
        layout = plan_layout(len(cohort.members), len(devices), cohort.config.train.member_group,
                             devices[0].platform)
        need = layout.n_padded * per_member * WORKING_COPIES
        if need > free:
            where = f" {cohort.settings}" if cohort.settings else ""
            raise ConfigError(
                f"cohort {cohort.index}{where} needs about {need / 2**30:.1f} GiB "
                f"({layout.n_padded:,} members x {per_member / 2**20:.2f} MiB of state x {WORKING_COPIES} "
                f"working copies) but {free / 2**30:.1f} GiB is available; use fewer members or a smaller model"
            )
