"""Learning-rate schedules: a multiplier on each member's own learning rate at each step.

``optim.schedule`` is structural (a cohort axis), and so are the step counts a
schedule's shape depends on (``optim.decay_steps``, ``optim.warmup_steps``,
``optim.transition_steps``, ``optim.boundaries``). The numbers that only scale
values (``optim.alpha``, ``optim.decay_rate``) are member hyperparameters: each
member reads its own from ``MemberState.hparams``, and the task writes
``learning_rate × factor(step)`` into the optimizer's injected learning rate.

Cosine and warm-up cosine are optax's schedules, built with a peak of 1. optax's
``exponential_decay`` and ``piecewise_constant_schedule`` check their rate in
Python (``decay_rate == 0``, ``scale >= 0``), which a per-member (traced) rate
cannot pass, so those two are written out here: the same formulas.
"""

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxdyn.hparams import HParam

ALPHA = HParam(0.0, high=1.0, high_open=False, doc="cosine schedules: the final learning rate as a fraction of the peak")
DECAY_RATE = HParam(0.1, low_open=True, high=1.0, high_open=False,
                    doc="exponential: factor per transition_steps; step: factor at each boundary")


@dataclass(frozen=True)
class Schedule:
    """One schedule: ``factor(count, hparams, optim_config) -> multiplier`` and the member
    hyperparameters it reads (``"optim.alpha"`` -> HParam)."""

    factor: Callable
    hparams: dict
    doc: str


def _cosine(count, hp, cfg, steps):
    return optax.cosine_decay_schedule(1.0, cfg.decay_steps or steps, alpha=hp["alpha"])(count)


def _warmup_cosine(count, hp, cfg, steps):
    total = cfg.decay_steps or steps  # optax counts the warm-up inside decay_steps
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, cfg.warmup_steps, total, end_value=hp["alpha"])(count)


def _exponential(count, hp, cfg, steps):
    return jnp.power(hp["decay_rate"], count / cfg.transition_steps)


def _step(count, hp, cfg, steps):
    passed = sum((count >= b).astype(jnp.float32) for b in cfg.boundaries) if cfg.boundaries else 0.0
    return jnp.power(hp["decay_rate"], passed)


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(lambda count, hp, cfg, steps: jnp.ones(()), {}, "the learning rate throughout"),
    "cosine": Schedule(_cosine, {"optim.alpha": ALPHA},
                       "cosine decay from the learning rate to alpha x it over decay_steps (0 = all steps)"),
    "exponential": Schedule(_exponential, {"optim.decay_rate": DECAY_RATE},
                            "learning_rate x decay_rate^(step / transition_steps)"),
    "step": Schedule(_step, {"optim.decay_rate": DECAY_RATE},
                     "learning_rate x decay_rate^(boundaries passed)"),
    "warmup_cosine": Schedule(_warmup_cosine, {"optim.alpha": ALPHA},
                              "linear warm-up from 0 over warmup_steps, then cosine to alpha x the peak"),
}


# Schedules whose shape reads the run's length when ``decay_steps = 0``.
RUN_LENGTH_SCHEDULES = ("cosine", "warmup_cosine")


def reads_run_length(section) -> bool:
    """Whether a section with schedule fields (``optim``, ``[gan]``) decays over ``train.steps``."""
    return getattr(section, "schedule", "") in RUN_LENGTH_SCHEDULES and getattr(section, "decay_steps", 1) == 0


def learning_rate(count: jax.Array, hparams: dict, cfg, steps: int) -> jax.Array:
    """This member's learning rate at optimizer step ``count`` (0-based)."""
    return hparams["learning_rate"] * SCHEDULES[cfg.schedule].factor(count, hparams, cfg, steps)
