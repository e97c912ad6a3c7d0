"""The ``[optim]`` section: its dataclass, and the range checks of its numbers and schedule.

Below ``config``, ``validation`` and ``gan.config``, which all need them: a GAN's two
optimizers are ``[optim]`` sections in all but name (``field`` and ``section`` name them).
"""

import math
from dataclasses import dataclass

import numpy as np

from jaxdyn.errors import ConfigError
from jaxdyn.optim import FAMILIES
from jaxdyn.schedules import SCHEDULES


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    schedule: str = "constant"  # constant | cosine | exponential | step | warmup_cosine
    decay_steps: int = 0  # cosine schedules: steps to decay over; 0 = train.steps
    warmup_steps: int = 0  # warmup_cosine
    transition_steps: int = 1000  # exponential: steps per factor of decay_rate
    boundaries: tuple[int, ...] = ()  # step: steps at which the rate is multiplied by decay_rate
    # Only the numbers the user set (family's and schedule's); their defaults fill in the rest.
    hparams: tuple[tuple[str, float], ...] = ()


# The structural [optim] fields; every other key in [optim] is a member number.
OPTIM_FIELDS = ("name", "schedule", "decay_steps", "warmup_steps", "transition_steps", "boundaries")


def check_float32(where: str, value: float) -> None:
    """Finite, and representable as the float32 members train in."""
    if not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number")
    as_f32 = float(np.float32(value)) if abs(value) < 3.4e38 else math.inf
    if not math.isfinite(as_f32):
        raise ConfigError(f"{where}: overflows float32, which members train in; use a smaller value")
    if value != 0 and abs(as_f32) < np.finfo(np.float32).tiny:
        raise ConfigError(f"{where}: is below float32's smallest normal number, which members train in; "
                          "use at least 1.2e-38")


def check_schedule(optim, steps: int, section: str = "optim") -> None:
    """The schedule's step counts fit the run (``section``: the table that holds them, for messages)."""
    for name in ("decay_steps", "warmup_steps"):
        if getattr(optim, name) < 0:
            raise ConfigError(f"{section}.{name} = {getattr(optim, name)}: must be >= 0")
    if optim.transition_steps <= 0:
        raise ConfigError(f"{section}.transition_steps = {optim.transition_steps}: must be >= 1")
    total = optim.decay_steps or steps
    if optim.schedule == "warmup_cosine" and optim.warmup_steps >= total:
        raise ConfigError(
            f"{section}.warmup_steps = {optim.warmup_steps} must be below the decay length ({total}: "
            f"{section}.decay_steps, or train.steps when 0); the warm-up is counted inside it"
        )
    b = list(optim.boundaries)
    if any(x <= 0 for x in b) or b != sorted(set(b)):
        raise ConfigError(f"{section}.boundaries = {b}: give increasing positive steps, e.g. [2000, 4000]")
    if optim.schedule == "step" and not b:
        raise ConfigError(f"{section}.schedule = 'step' needs {section}.boundaries, e.g. [2000, 4000]")


def check_hparam(optim, key: str, value: float, field: str = "") -> None:
    """Range check of one optimizer or schedule number (a member's); ``optim`` is the ``OptimConfig``,
    ``field`` the name messages give it (default ``optim.<key>``)."""
    where = f"{field or f'optim.{key}'} = {value!r}"
    schedule = SCHEDULES[optim.schedule].hparams
    if f"optim.{key}" in schedule:
        check_float32(where, value)
        problem = schedule[f"optim.{key}"].problem(float(np.float32(value)))
        if problem:
            raise ConfigError(f"{where}: {problem} ({schedule[f'optim.{key}'].doc})")
        return
    family = FAMILIES[optim.name]
    check_float32(where, value)
    value = float(np.float32(value))  # members train in float32: judge the value they will get
    if key in family.positive and value <= 0:
        raise ConfigError(f"{where}: must be > 0")
    if key in family.unit and not 0 <= value < 1:
        raise ConfigError(f"{where}: must lie in [0, 1)")
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0")
