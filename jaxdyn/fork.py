"""Forks: a study whose members start from a trained member of another run (``[init]``).

A fork replaces the freshly initialised parameters (and model state such as BatchNorm
statistics, and with ``keep_optimizer`` the optimizer state) of every member by the
parent member's, read from the parent's checkpoint bit for bit. Everything else is
the fork's own: its hyperparameters, its data and dropout seeds (``study.seeds``, so
children of one parent see different batches), its step counter (from 0). This is
how a spawning study (Frankle et al. 2020, linear mode connectivity) or a fine-tune
starts. The parent run folder must stay where it is while the fork runs or resumes.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jax
import numpy as np

from jaxdyn import distributed
from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.errors import ConfigError

COPIED = ("params", "model_state")  # and opt_state with keep_optimizer


@dataclass(frozen=True)
class Parent:
    """Where one cohort's members start: a parent cohort's checkpoint and a row of it per member.

    Attributes:
      run: the parent run folder.
      cohort: the parent cohort holding the members copied.
      chunks_done: the parent checkpoint read (``checkpoints/cohort_NNN/<chunks_done>``).
      rows: ``[K]`` the parent state's row (member position in its cohort) for each member.
      fields: the state fields copied (``params``, ``model_state``, maybe ``opt_state``).
      step: the parent's step at that checkpoint.
      source: the parent ``study.Cohort``; at step 0 its members' initial state is made from
        their seeds (no checkpoint holds it).
    """

    run: Path
    cohort: int
    chunks_done: int
    rows: tuple[int, ...]
    fields: tuple[str, ...]
    step: int
    source: object = field(default=None, compare=False, repr=False)


def resolve(fork, child_members, parent_cohorts, cohort_label: str = "") -> Parent:
    """The ``Parent`` of one child cohort.

    Args:
      fork: the ``ForkConfig``.
      child_members: the child cohort's member ids, in order.
      parent_cohorts: the parent study's cohorts (``study.Cohort``: ``index``, ``config``, ``members``).

    Raises:
      ConfigError: no such parent member, members that do not line up, or no checkpoint at ``step``.
    """
    where = {int(m): (c, pos) for c in parent_cohorts for pos, m in enumerate(c.members["member"])}
    wanted = [fork.member] * len(child_members) if fork.member >= 0 else [int(m) for m in child_members]
    if any(m not in where for m in wanted):
        missing = next(m for m in wanted if m not in where)
        raise ConfigError(f"init: {fork.run} has no member {missing} (it has members 0-{len(where) - 1}); "
                          + ("set init.member to one of them" if fork.member >= 0 else
                             "members = \"all\" needs a parent with at least as many members as this study"))
    cohorts = {where[m][0].index for m in wanted}
    if len(cohorts) > 1:
        raise ConfigError(f"init: members = \"all\" maps the members {cohort_label}of this study onto parent "
                          f"cohorts {sorted(cohorts)} of {fork.run}; the members of one cohort must come from "
                          "one parent cohort (same grid of structural settings)")
    parent_cohort = where[wanted[0]][0]
    chunk_steps = parent_cohort.config.train.chunk_steps
    kept = committed_steps(cohort_checkpoint_dir(fork.run, parent_cohort.index))
    if not kept and fork.step != 0:
        raise ConfigError(f"init: {fork.run} has no checkpoint of cohort {parent_cohort.index} yet; run (or resume) "
                          "the parent first")
    if fork.step == 0:
        chunks = 0  # the parent's initial state: from its members' seeds
    elif fork.step < 0:
        chunks = kept[-1]
    elif fork.step % chunk_steps or fork.step // chunk_steps not in kept:
        raise ConfigError(f"init.step = {fork.step}: {fork.run} keeps checkpoints at steps "
                          f"{', '.join(str(c * chunk_steps) for c in [0, *kept])} only (its start and last two); "
                          "fork from one of "
                          "them, or continue the parent to the step wanted (jaxdyn run --resume PARENT --set "
                          "train.steps=N) and fork from its end")
    else:
        chunks = fork.step // chunk_steps
    fields = COPIED + (("opt_state",) if fork.keep_optimizer else ())
    return Parent(Path(fork.run), parent_cohort.index, chunks, tuple(where[m][1] for m in wanted), fields,
                  chunks * chunk_steps, parent_cohort)


@lru_cache(maxsize=4)
def _saved(parent: Parent):
    """The parent cohort's state at the fork's step, members ``[K_parent, ...]``: read from its
    checkpoint, or at step 0 initialised from its members' seeds and hyperparameters as its run did."""
    if parent.chunks_done:
        return jax.device_get(load_state(parent.run, parent.cohort, parent.chunks_done))
    cohort = parent.source
    seeds, hparams = cohort.member_arrays(lambda a: a)
    return jax.device_get(jax.jit(jax.vmap(cohort.task().init))(seeds, hparams))


def _child(node, name):
    """``node[name]``: a dict key, list position or NamedTuple field (a checkpoint read without a
    target holds dicts and lists where the live state holds NamedTuples); None where there is none."""
    try:
        return getattr(node, name) if isinstance(name, str) and hasattr(node, "_fields") else node[name]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def member_leaves(parent: Parent, like) -> dict:
    """The copied fields of the parent's members, in the structure of ``like`` (a state or its
    shapes, one member or a population): ``{field: pytree of arrays [K, ...]}``.

    Raises:
      ConfigError: the parent's state has another structure, shape or dtype (another model, or
        another optimizer with ``keep_optimizer``), naming the first leaf that differs.
    """
    saved = _saved(parent)
    rows = np.asarray(parent.rows)
    out = {}
    for field_name in parent.fields:
        def take(path, leaf, field=field_name):
            node = _child(saved, field)
            for key in path:
                node = _child(node, getattr(key, "name", getattr(key, "key", getattr(key, "idx", None))))
                if node is None:
                    break
            if node is None:
                raise ConfigError(_mismatch(parent, field, jax.tree_util.keystr(path), "nothing there"))
            value = np.asarray(node)[rows]
            if value.shape[1:] != tuple(leaf.shape) or value.dtype != leaf.dtype:
                found = f"{value.dtype}{list(value.shape[1:])}, this study's member has {leaf.dtype}{list(leaf.shape)}"
                raise ConfigError(_mismatch(parent, field, jax.tree_util.keystr(path), found))
            return value
        out[field_name] = jax.tree_util.tree_map_with_path(take, getattr(like, field_name))
        extra = sorted(set(_names(_child(saved, field_name))) - set(_names(getattr(like, field_name))))
        if extra:  # the parent's state holds more (an Adam's moments where this study runs SGD)
            where = "".join(f"[{k!r}]" for k in extra[0])
            raise ConfigError(_mismatch(parent, field_name, where, "a value this study's member does not have"))
    return out


def _names(tree) -> list[tuple]:
    """Each leaf's path as plain names (dict keys, field names, list positions)."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [tuple(getattr(k, "name", getattr(k, "key", getattr(k, "idx", None))) for k in path) for path, _ in paths]


def _mismatch(parent: Parent, field: str, where: str, found: str) -> str:
    fix = ("use the parent's optimizer, or keep_optimizer = false" if field == "opt_state"
           else "use the parent's model and data shapes")
    return (f"init: the parent {parent.run} (cohort {parent.cohort}, step {parent.step}) does not fit this study: "
            f"{field}{where} there is {found}; {fix}")


def check(parent: Parent, member_shapes) -> None:
    """Refuse a parent whose copied state does not fit one member's state shapes, before compiling."""
    member_leaves(parent, member_shapes)


def start(init, parent: Parent):
    """``init()``'s population state with the parent's fields copied into the real members'
    rows (padding members keep their fresh values), on the same shardings."""
    state = init()
    leaves = member_leaves(parent, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state))
    k = len(parent.rows)

    def place(fresh, copied):
        rows = np.concatenate([copied, np.asarray(distributed.host(fresh))[k:]])
        return jax.device_put(rows, fresh.sharding)

    return state._replace(**{f: jax.tree.map(place, getattr(state, f), leaves[f]) for f in parent.fields})
