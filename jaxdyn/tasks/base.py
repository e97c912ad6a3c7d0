"""The member contract: what one member of a population is, and how a kind of task plugs in.

A task is four pure functions of ONE member (``Task``): ``init``, ``step``,
``evaluate`` and, for a task that makes something to look at, ``snapshot``. The
population (``population.py``) vmaps them, scans the step and guards it against
divergence; it never learns what the task is. A kind of task (``TaskKind``) says
how a cohort's config becomes such a task, which config table it owns, which
member hyperparameters it takes and what the probes see. jaxdyn's own kinds
(``supervised``, ``gan``) and a user's (``[task] kind = "package.module:NAME"``)
are registered the same way.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxdyn.hparams import HParam


class MemberState(NamedTuple):
    """Everything that evolves in one member (leaves gain a leading ``[K]`` in a population).

    Any task's state is this tuple: the guard, checkpoints and resume rely on its fields.
    A task without a model or an optimizer keeps its own pytrees in ``params`` and
    ``opt_state`` (``{}`` or ``()`` where it has none).
    """

    params: Any
    model_state: Any  # non-trained variables such as BatchNorm statistics; {} if none
    opt_state: Any
    hparams: dict  # name -> float32 []: every member hyperparameter, the one source of truth
    step: jax.Array  # int32 []: optimisation steps taken
    data_key: jax.Array  # uint32 [2]: raw key data (checkpoint-safe), from data_seed
    dropout_key: jax.Array  # uint32 [2]: from dropout_seed; folded with the step for each mask
    alive: jax.Array  # bool []: False once the member diverged and was frozen
    diverged_at: jax.Array  # int32 []: step at which it diverged, -1 while alive


class Seeds(NamedTuple):
    init_seed: jax.Array  # int32 []
    data_seed: jax.Array  # int32 []
    dropout_seed: jax.Array  # int32 []


def fresh_state(params, opt_state, hparams: dict, seeds: Seeds, model_state=None) -> MemberState:
    """A member at step 0, alive, its keys from ``seeds`` (``hparams``: name -> value, as float32)."""
    return MemberState(
        params=params, model_state={} if model_state is None else model_state, opt_state=opt_state,
        hparams={k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()},
        step=jnp.zeros((), jnp.int32),
        data_key=jax.random.PRNGKey(seeds.data_seed), dropout_key=jax.random.PRNGKey(seeds.dropout_seed),
        alive=jnp.ones((), bool), diverged_at=jnp.full((), -1, jnp.int32))


class Task(Protocol):
    """What ONE member does; every function is pure and jit-able, and never mentions K.

    ``init(seeds, hparams) -> MemberState``
      ``seeds``: ``Seeds`` of int32 scalars; ``hparams``: name -> float32 scalar, every
      member hyperparameter of the cohort (``Config.member_hparams``).
    ``step(state, data) -> (state, metrics)``
      One optimisation step. ``data`` is the cohort's ``Dataset`` (on every device); the
      member draws its own batch from ``streams.key(state.data_key, Stream.BATCH, state.step)``. ``metrics``
      maps names to scalars (or ``{layer: scalar}``) and must hold ``"loss"``: the
      divergence guard freezes a member whose loss or new state is not finite. The new
      state's ``step`` is ``state.step + 1``.
    ``evaluate(state, x, y) -> metrics``
      Scores of the member on the whole of ``x, y`` (the test set); written as ``test_<name>``.
    ``snapshot(state) -> [n, features]`` (optional)
      Something to look at after each evaluation (a GAN's samples), written to
      ``samples.parquet``. A task without it has no such attribute.
    """

    def init(self, seeds: Seeds, hparams: dict) -> MemberState: ...

    def step(self, state: MemberState, data) -> tuple[MemberState, dict]: ...

    def evaluate(self, state: MemberState, x: jax.Array, y: jax.Array) -> dict: ...


def makes_snapshots(task) -> bool:
    """Whether ``task`` has the Protocol's optional ``snapshot`` (something to look at after each evaluation)."""
    return callable(getattr(task, "snapshot", None))


def track_updates(config) -> bool:
    """Whether the train step should log per-layer update norms (a probe asks for them)."""
    return any(p.step_metrics for p, _ in config.probes.enabled())


def no_views(config, task) -> tuple:
    """A task with no model for the probes to look at."""
    return ()


def own_params(task, params, model_state) -> tuple:
    """A member as it is: its ``params`` pytree, and no Flax module."""
    return params, None


def one_model(task, params, model_state) -> tuple:
    """A member of a task with one ``model``: its Flax variables and that module."""
    return {"params": params, **model_state}, task.model


@dataclass(frozen=True)
class TaskKind:
    """One kind of task (``[task] kind``): a ``TASK_KINDS`` entry, or any object at an import path.

    Attributes:
      build: ``(config, members) -> Task``: the task of one cohort (``config`` has no grid
        left; ``members`` is its member table, to see which optional parts any member uses).
      probe_views: ``(config, task) -> (ProbeView, ...)``: what the probes measure (``no_views``:
        nothing).
      doc: one line for ``jaxdyn list``.
      section_doc: what ``jaxdyn list`` says of the kind's own table, or ``""``.
      hparams: member hyperparameters the kind declares, ``"task.<name>" -> HParam``: set in
        ``[task]``, a member axis ``task.<name>`` of the grid, ``<name>`` in ``MemberState.hparams``.
      uses_optim: whether members also take the ``[optim]`` family's numbers and the
        ``[data]``/``[loss]``/``[model]``/``[train]`` member hyperparameters (the supervised path).
      section: a config table the kind owns (``"gan"``), parsed by ``parse`` into ``options``'s
        dataclass and written back by ``to_dict``; ``None``: none.
      options: the section's frozen dataclass (its default instance is the default section).
      parse: ``(table) -> options``; checks keys and types, raises ``ConfigError``.
      to_dict: ``(options, gridded: set of field names) -> table``, the inverse of ``parse``.
      check: ``(config, info) -> None``: range checks of the section, ``info`` the dataset's
        ``DatasetInfo``; raises ``ConfigError``.
      member_hparams: ``(options) -> {name: default}``: the section's member numbers.
      check_member: ``(options, name, value) -> None``: one member number's range.
      cohort_axes: the section's structural fields (a grid axis ``<section>.<field>`` makes cohorts).
      member_axes: every member number the section may take, for grid axis names.
      choices: the member choices (``axes.MEMBER_CHOICES``, ``"model.init"``) that ``build`` honours per
        member: a grid over one makes members, not cohorts. ``members`` then has a column of each
        member's name, and ``init`` gets its index among the cohort's (``hparams.present``) under the
        bare name wherever the cohort mixes them. Any other choice is structural.
      has_model: whether the task has one ``model`` whose predictions an ensemble can average.
      finals: test metrics (without ``test_``) kept in the member table as ``final_<name>``
        beside the loss and accuracy; the first one a run logs is the summary's headline.
      curves: further metrics the report draws as curves (beside the losses and accuracy).
      member_model: ``(task, params, model_state) -> (variables, module)`` of one member, what
        ``jaxdyn.extract_member`` returns (``own_params``: the params, no module).
    """

    build: Callable
    probe_views: Callable = no_views
    doc: str = ""
    section_doc: str = ""
    hparams: dict[str, HParam] = field(default_factory=dict)
    uses_optim: bool = False
    section: str | None = None
    options: type | None = None
    parse: Callable | None = None
    to_dict: Callable | None = None
    check: Callable | None = None
    member_hparams: Callable | None = None
    check_member: Callable | None = None
    cohort_axes: tuple[str, ...] = ()
    member_axes: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    has_model: bool = False
    finals: tuple[str, ...] = ()
    curves: tuple[str, ...] = ()
    member_model: Callable = own_params
