"""``extract_member``: one member of a run as Flax variables that ``model.apply`` takes directly."""

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.errors import as_path
from jaxdyn.rundir import load_run_config
from jaxdyn.study import expand


@dataclass(frozen=True)
class Member:
    """One member, as its newest checkpoint holds it.

    Attributes:
      variables: ``{"params": ..., **model_state}`` (BatchNorm's ``batch_stats`` when the
        model has them); for a GAN, ``{"generator": {...}, "discriminator": {...}}``; for a task
        without a model, its ``params`` (``TaskKind.member_model`` says which).
      model: the Flax module (for a GAN, ``{"generator": module, "discriminator": module}``;
        None for a task without one).
      hparams: the member's hyperparameters as float32 scalars; models read theirs
        (``dropout``, ``leaky_slope``) from it: ``model.apply(variables, x, train=False, hparams=hparams)``.
      config: the cohort's config (the study's, with this cohort's settings, no grid).
      step: the training step the checkpoint was taken at.
    """

    member: int
    cohort: int
    variables: Any
    model: Any
    hparams: dict
    config: Any
    step: int


def member_parts(cohort, state, position: int) -> tuple[Any, Any, dict]:
    """``(params, model_state, hparams)`` of the member at ``position`` of a cohort's saved state
    (``checkpoint.load_state``), its hyperparameters as float32 scalars."""
    pick = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[position]), tree)
    row = cohort.members.iloc[position]
    return (pick(state["params"]), pick(state.get("model_state", {}) or {}),
            {name: jnp.float32(row[name]) for name in cohort.hparam_names})


def extract_member(run_dir, member: int) -> Member:
    """Member ``member`` of the run in ``run_dir`` (finished, interrupted or resumed) from its
    cohort's newest checkpoint.

    Raises:
      KeyError: no such member in the study.
      FileNotFoundError: its cohort has no checkpoint yet.
    """
    run_dir = as_path(run_dir, "run_dir")
    cohorts = expand(load_run_config(run_dir))
    found = [(c, i) for c in cohorts for i, m in enumerate(c.members["member"]) if int(m) == int(member)]
    if not found:
        total = sum(len(c.members) for c in cohorts)
        raise KeyError(f"member {member} is not in {run_dir}: its members are 0..{total - 1}")
    cohort, position = found[0]
    if not committed_steps(cohort_checkpoint_dir(run_dir, cohort.index)):
        raise FileNotFoundError(f"{run_dir}: cohort {cohort.index} (member {member}) has no checkpoint yet")
    state = load_state(run_dir, cohort.index)
    params, model_state, hparams = member_parts(cohort, state, position)
    alone = cohort.alone(int(member))  # its own initialiser in its config and module
    variables, model = alone.config.task.spec().member_model(alone.task(), params, model_state)
    return Member(int(member), cohort.index, variables, model, hparams, alone.config,
                  int(np.asarray(state["step"])[position]))
