"""A population: K members of one task as one compiled program.

State is one pytree whose leaves have a leading member axis ``[K, ...]``. The
member axis is sharded over every local device (``Mesh(devices, ("pop",))``);
inside a device, members are stepped in groups of G (``lax.map`` over groups of
``vmap`` over members of ``lax.scan`` over steps), because on CPU a smaller group
keeps its params and optimizer state in cache. Members are independent, so the
grouping changes only speed and the low bits, not the maths.

A member whose loss or new state is non-finite is frozen with ``where`` (never
multiplication) and flagged; the others are bitwise unaffected.
"""

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdyn import distributed
from jaxdyn.tasks.base import MemberState

AXIS = "pop"


@dataclass(frozen=True)
class Layout:
    """How K members are placed: padded to ``n_devices * groups * group_size``."""

    n_members: int
    n_devices: int
    group_size: int
    n_padded: int

    @property
    def per_device(self) -> int:
        return self.n_padded // self.n_devices


def plan_layout(n_members: int, n_devices: int, member_group: int = 0, platform: str = "cpu") -> Layout:
    """Pad K up to a multiple of ``n_devices * G``.

    An explicit ``member_group`` is G exactly (capped at the members per device).
    ``member_group = 0`` aims at G = 8 on CPU (measured: 1.3-1.4x the member-steps/s
    of one vmap over 64 members) and every member of a device elsewhere, and
    evens the groups out so that little is padded (17 per device: 3 groups of 6).
    """
    per_device = math.ceil(n_members / n_devices)
    if member_group:
        group = min(member_group, per_device)
    else:
        target = 8 if platform == "cpu" else per_device
        group = math.ceil(per_device / math.ceil(per_device / target))
    per_device = math.ceil(per_device / group) * group
    return Layout(n_members, n_devices, group, per_device * n_devices)


def make_mesh(devices=None) -> Mesh:
    return Mesh(np.array(devices if devices is not None else jax.devices()), (AXIS,))


def pad_members(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Pad ``[K, ...]`` host values to ``[K_padded, ...]`` by repeating member 0.

    Padding members train like real ones (valid values keep them finite) and are
    dropped from the results.
    """
    extra = layout.n_padded - len(values)
    return np.concatenate([values, np.repeat(values[:1], extra, axis=0)]) if extra else values


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def guarded(step_fn: Callable) -> Callable:
    """Wrap one member's ``step`` with the divergence freeze.

    After the step, ``ok = alive & isfinite(loss) & all_finite(new state)``. A
    member that is not ok keeps its old state (``where``), is marked dead and gets
    ``diverged_at``; its metrics from then on are NaN so curves end where it died.
    """

    def step(state: MemberState, data):
        new, metrics = step_fn(state, data)
        ok = state.alive & jnp.isfinite(metrics["loss"]) & all_finite((new.params, new.opt_state, new.model_state))
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        kept = kept._replace(
            step=new.step,
            alive=ok,
            diverged_at=jnp.where(state.alive & ~ok, state.step, state.diverged_at),
        )
        metrics = jax.tree.map(lambda m: jnp.where(state.alive, m, jnp.nan), metrics)
        return kept, metrics

    return step


def init_population(task, seeds, hparams: dict, mesh: Mesh) -> MemberState:
    """Stacked, sharded member state.

    Args:
      task: provides ``init(seeds, hparams)`` for one member.
      seeds: ``Seeds`` of int32 arrays ``[K_padded]``.
      hparams: name -> float32 array ``[K_padded]``.
    """
    return make_init(task, mesh)(seeds, hparams)


def make_init(task, mesh: Mesh):
    """``init(seeds, hparams) -> MemberState``, compiled once however often it is called
    (a run calls it for the state and again for the probes' initial parameters)."""
    # One member at a time within each device (lax.map, not vmap): a batched QR (the
    # orthogonal initialiser) runs on jaxlib's LAPACK thread pool, and with two CPU
    # devices doing so at once both waited on that pool for ever (seen: K = 4 on 2
    # devices hung in sgeqrf). Init runs once, so its speed does not matter.
    def per_device(seeds, hparams):
        return lax.map(lambda member: task.init(*member), (seeds, hparams))

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P(AXIS),
                            check_vma=False)
    return jax.jit(sharded)


def make_train_chunk(task, chunk_steps: int, log_every: int, group_size: int, mesh, checked_once: bool = True):
    """``chunk(state, data) -> (state, metrics)``: ``chunk_steps`` steps of every member.

    ``metrics`` leaves are ``[K, chunk_steps // log_every]``: each member's step metrics
    averaged over windows of ``log_every`` steps.

    ``checked_once`` (the default) runs the chunk checking only each step's loss, and the
    whole state once, at the end (``CheckedChunk``); the per-step guard (``guarded``) runs
    only for a chunk in which a live member failed, from the same state, and gives what it
    always gave. Without it, every chunk runs under the per-step guard (state donated).
    """

    def windows(metrics):
        return jax.tree.map(lambda m: m.reshape(-1, log_every).mean(axis=1), metrics)

    step = guarded(task.step)

    def member_guarded(state, data):
        state, metrics = lax.scan(lambda s, _: step(s, data), state, None, length=chunk_steps)
        return state, windows(metrics)

    careful = _population_program(jax.vmap(member_guarded, in_axes=(0, None)), group_size, mesh, donate=True)
    if not checked_once:
        return careful

    def member_plain(state, data):
        def body(s, _):
            new, metrics = task.step(s, data)
            return new, (metrics, jnp.isfinite(metrics["loss"]))

        new, (metrics, finite) = lax.scan(body, state, None, length=chunk_steps)
        return new, windows(metrics), jnp.all(finite) & all_finite((new.params, new.opt_state, new.model_state))

    def plain_group(state, data):  # what the guard gives when no live member fails; dead members stay frozen
        new, metrics, clean = jax.vmap(member_plain, in_axes=(0, None))(state, data)
        alive = state.alive
        kept = jax.tree.map(lambda n, o: _per_member(alive, n, o), new, state)
        kept = kept._replace(step=new.step, alive=alive, diverged_at=state.diverged_at)
        return kept, jax.tree.map(lambda m: _per_member(alive, m, jnp.nan), metrics), clean | ~alive

    return CheckedChunk(_population_program(plain_group, group_size, mesh, donate=False), careful)


def _population_program(group_chunk, group_size: int, mesh, donate: bool):
    """``jit(shard_map(...))`` of ``group_chunk(state, data)`` over each device's members, in
    groups of ``group_size`` (``lax.map``); its outputs have the member axis first."""

    def device_chunk(state, data):
        n_local = jax.tree.leaves(state)[0].shape[0]
        if group_size >= n_local:
            return group_chunk(state, data)
        split = lambda x: x.reshape(n_local // group_size, group_size, *x.shape[1:])
        merge = lambda x: x.reshape(n_local, *x.shape[2:])
        out = lax.map(lambda s: group_chunk(s, data), jax.tree.map(split, state))
        return jax.tree.map(merge, out)

    # check_vma=False (here and below): models build constants inside their own scans
    # (flax's nn.RNN starts its carry from zeros), which the varying-axis check rejects,
    # though every member's computation is local to its device anyway.
    sharded = jax.shard_map(device_chunk, mesh=mesh, in_specs=(P(AXIS), P()), out_specs=P(AXIS), check_vma=False)
    return jax.jit(sharded, donate_argnums=0 if donate else ())


def _per_member(which, new, old):
    """``where(which, new, old)`` with ``which [G]`` over the leading member axis of ``new`` and ``old``."""
    return jnp.where(which.reshape(which.shape + (1,) * (jnp.ndim(new) - 1)), new, old)


class CheckedChunk:
    """A chunk whose divergence guard checks once, at the end.

    ``plain(state, data) -> (state, metrics, clean)`` runs the steps with no per-step freeze
    (dead members are restored at the end) and says, per member, whether every step's loss
    and the final state are finite (or the member was dead already). When every member is
    clean, that is the per-step guard's result bit for bit: a value that turns non-finite
    stays so under a step's arithmetic (``p + u``, running averages, ``max``), so a state
    finite at the end was finite all along, and with no member frozen the guard's ``where``
    selects every new state. Otherwise ``careful`` (the per-step guard) runs the chunk again
    from the same state, compiled on first need. Measured (MLP 40-100-100-10, K = 8 / 32, 2-core
    CPU): 1.21 / 1.28x the member-steps/s of the per-step guard; 1.01-1.02x for the CNN, whose
    arithmetic dominates. It costs a copy of the state while a chunk runs (not donated).
    """

    def __init__(self, plain, careful):
        self.plain, self.careful = plain, careful

    def __call__(self, state, data):
        new, metrics, clean = self.plain(state, data)
        if isinstance(clean, jax.core.Tracer):  # traced (eval_shape): the shapes are the same either way
            return new, metrics
        if np.all(distributed.host(clean)):
            return new, metrics
        del new, metrics  # the rerun holds no more than the plain chunk did
        return self.careful(state, data)

    def lower(self, state, data):
        """The program that always runs (the memory check compiles it)."""
        return self.plain.lower(state, data)

    def _cache_size(self) -> int:
        return self.plain._cache_size() + self.careful._cache_size()


def make_evaluate(task, mesh: Mesh):
    """``evaluate(state, x, y) -> metrics`` with leaves ``[K]`` (each member on all of x, y)."""
    per_member = jax.vmap(task.evaluate, in_axes=(0, None, None))
    sharded = jax.shard_map(
        per_member, mesh=mesh, in_specs=(P(AXIS), P(), P()), out_specs=P(AXIS), check_vma=False
    )
    return jax.jit(sharded)


def make_snapshot(task, mesh: Mesh):
    """``snapshot(state) -> [K, n, features]``: each member's ``task.snapshot`` (samples to look at)."""
    sharded = jax.shard_map(jax.vmap(task.snapshot), mesh=mesh, in_specs=(P(AXIS),), out_specs=P(AXIS),
                            check_vma=False)
    return jax.jit(sharded)


def enable_compile_cache(directory) -> None:
    """Persist compiled programs in ``directory``, so a repeated study skips compiling
    (measured: a small study's wall time 4.0 s -> 1.3 s). A cache the user set is kept.

    Every program is kept, not only those that took a second or more to compile (jax's
    default): a study's small programs (evaluation, probes, samples) each compile in
    under a second but add up, and a resumed or repeated run reads them back."""
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def replicate(tree, mesh: Mesh):
    """Put host arrays on every device once (the dataset)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
