"""A federated cohort's programs: its task (``FederatedTask``) and its training chunk.

A chunk of ``chunk_steps`` steps is ``chunk_steps / local_steps`` rounds, scanned inside
one compiled program: each round, every member takes ``local_steps`` steps on its own
client's examples (grouped on each device as ``population.make_train_chunk`` groups them),
then ``round.server_round`` averages each federation across devices. A chunk ends on a
round's end, so a checkpoint always holds global models and a resume is bitwise.
"""

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxdyn import population as pop
from jaxdyn.federated.partition import ClientExamples
from jaxdyn.federated.round import ClientIds, FedOptState, selected, server_round


@dataclass(frozen=True)
class FederatedTask:
    """A supervised task whose members are clients: the same init, evaluation and probes, with
    the optimizer state a ``FedOptState`` (the client's and a copy of the server's).

    Attributes:
      inner: the cohort's ``SupervisedTask``.
      server: the server's optax optimizer (``round.server_optimizer``).
      proximal: whether FedProx's term is compiled in (some member's ``prox_mu > 0``).
    """

    inner: Any
    server: Any
    proximal: bool = False

    def init(self, seeds, hparams):
        state = self.inner.init(seeds, hparams)
        return state._replace(opt_state=FedOptState(state.opt_state, self.server.init(state.params)))

    def step(self, state, data, examples=None, anchor=None):
        """One local step on this client's ``examples`` (``(order, start, count)``), with FedProx's
        pull towards ``anchor`` (the round's global params) when compiled in."""
        inner, metrics = self.inner.step(state._replace(opt_state=state.opt_state.client), data, examples=examples,
                                         anchor=anchor if self.proximal else None)
        return inner._replace(opt_state=FedOptState(inner.opt_state, state.opt_state.server)), metrics

    def __getattr__(self, name):  # evaluate, probe_loss, model, loss_and_metrics, ...: the inner task's
        return getattr(self.inner, name)


@dataclass(frozen=True)
class Federation:
    """What a federated cohort's chunk needs to know, fixed for the run.

    Attributes:
      ids: ``ClientIds`` of numpy arrays ``[K_padded]``.
      examples: the partition (``ClientExamples``).
      n_fed: federations in the cohort.
      clients: clients per federation.
      per_round: clients sampled per round (m).
      local_steps: E.
      root: the raw key of client sampling (``federated.seed`` folded with the cohort).
    """

    ids: ClientIds
    examples: ClientExamples
    n_fed: int
    clients: int
    per_round: int
    local_steps: int
    root: np.ndarray


LOCAL_EXAMPLES = 256  # at most this many of a client's own examples measure local_loss / local_accuracy


def own_scores(task: FederatedTask, state, start, count, data, order, size: int) -> dict:
    """ONE client's loss and accuracy (classes) on its own first ``min(count, size)`` examples (in
    index order), as ``{metric: {"": value}}``: ``local_loss``, ``local_accuracy``."""
    j = jnp.arange(size)
    mask = (j < count).astype(jnp.float32)
    idx = order[start + jnp.minimum(j, count - 1)]
    x, y = data.x_train[idx], data.y_train[idx]
    inner = task.inner
    out = inner._outputs(inner.model.apply({"params": state.params, **state.model_state}, x, train=False,
                                           hparams=state.hparams))
    per_example = lambda v: v.reshape(size, -1).mean(axis=1)
    mean = lambda v: jnp.sum(per_example(v) * mask) / jnp.sum(mask)
    if not inner.n_classes:
        return {"local_loss": {"": mean(jnp.square(out - y))}}
    return {"local_loss": {"": mean(optax.softmax_cross_entropy_with_integer_labels(out, y))},
            "local_accuracy": {"": mean((out.argmax(-1) == y).astype(jnp.float32))}}


def make_federated_chunk(task: FederatedTask, chunk_steps: int, log_every: int, group_size: int, mesh,
                         fed: Federation):
    """``chunk(state, data) -> (state, metrics)`` of a federated cohort, as ``population.make_train_chunk``'s:
    the training windows ``[K, chunk_steps // log_every]``, each the mean over the window's steps at
    which the client took part (NaN if it took part in none), the rounds' ``client_drift`` and
    ``update_cosine`` ``{layer: [K, rounds]}``, the global model's ``test_*`` after every round
    (``global_scores``; ``{"": [K, rounds]}``), and, after the chunk's last round of local steps and
    before its average, each participating client's ``local_loss`` and ``local_accuracy`` on its own
    examples (personalisation; ``{"": [K, 1]}``, NaN for the others)."""
    size = int(min(int(fed.examples.count.max()), LOCAL_EXAMPLES))
    per_model = jax.vmap(task.evaluate, in_axes=(0, None, None))
    own = jax.vmap(lambda s, e, d, o: own_scores(task, s, e[0], e[1], d, o, size), in_axes=(0, 0, None, None))
    rounds, E = chunk_steps // fed.local_steps, fed.local_steps
    step = pop.guarded(lambda s, d: task.step(s, d[0], examples=d[1], anchor=d[2]))

    def member_round(state, extra, data, order):
        start, count = extra
        anchor = state.params
        examples = (order, start, count)
        return lax.scan(lambda s, _: step(s, (data, examples, anchor)), state, None, length=E)

    group_round = jax.vmap(member_round, in_axes=(0, 0, None, None))
    everyone = fed.per_round >= fed.clients

    def local_steps(state, extra, taking, data, order):
        """The round's local steps of the members taking part. With every client taking part, every
        member steps (padding too: it is discarded). Otherwise the members taking part are moved to
        the front of this device's groups (``where`` they are within their group does not change
        their bits: ``test_member_independent_of_position_and_neighbours``) and only the groups
        holding one of them compute; a member left out keeps its state (steps it took in a group
        that stepped are undone), so it cannot diverge in a round it had no part in, and only its
        step counter moves on (by E, as a stepping member's)."""
        n_local = taking.shape[0]
        size = min(group_size, n_local)
        split = lambda x: x.reshape(n_local // size, size, *x.shape[1:])
        merge = lambda x: x.reshape(n_local, *x.shape[2:])
        step_group = lambda a: group_round(a[0], a[1], data, order)
        if everyone and size == n_local:
            return step_group((state, extra))
        if everyone:
            return jax.tree.map(merge, lax.map(step_group, jax.tree.map(split, (state, extra))))
        shape = jax.eval_shape(step_group, jax.tree.map(lambda x: x[:size], (state, extra)))[1]
        idle = lambda a: (a[0]._replace(step=a[0].step + E),
                          jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), shape))
        if size == n_local:  # one group: it steps if anyone takes part
            new, metrics = lax.cond(jnp.any(taking), step_group, idle, (state, extra))
        else:
            front = jnp.argsort(~taking, stable=True)  # members taking part first, each part in member order
            back = jnp.argsort(front)
            busy = (jnp.sum(taking) + size - 1) // size  # groups holding a member taking part
            groups = jax.tree.map(lambda x: split(x[front]), (state, extra))
            new, metrics = lax.map(lambda ga: lax.cond(ga[0] < busy, step_group, idle, ga[1]),
                                   (jnp.arange(n_local // size), groups))
            new, metrics = jax.tree.map(lambda x: merge(x)[back], (new, metrics))
        # a member left out but in a group that stepped: its steps are undone (alive and diverged_at too)
        kept = jax.tree.map(lambda n, o: jnp.where(pop_mask(taking, n), n, o), new, state)
        return kept._replace(step=new.step), metrics

    def device_chunk(state, ids, data, order, start, count):
        n_local = ids.federation.shape[0]
        mine = jnp.minimum(ids.client, fed.clients - 1)
        extra = (start[mine], count[mine])

        def one_round(state, r):
            round_index = state.step[0] // E
            taking = selected(ids, fed.root, round_index, fed.n_fed, fed.clients, fed.per_round)
            anchor, start_opt = state.params, state.opt_state.client
            state, metrics = local_steps(state, extra, taking, data, order)
            metrics = jax.tree.map(lambda m: jnp.where(pop_mask(taking, m), m, jnp.nan), metrics)
            shape = jax.eval_shape(own, state, extra, data, order)
            local = lax.cond(r == rounds - 1, lambda s: own(s, extra, data, order),
                             lambda s: jax.tree.map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shape), state)
            local = jax.tree.map(lambda v: jnp.where(taking & state.alive, v, jnp.nan), local)
            state, round_metrics = server_round(state, anchor, start_opt, ids, taking, task.server, fed.n_fed)
            tested = global_scores(per_model, state, ids.federation, data.x_test, data.y_test, fed.n_fed, mesh.size)
            round_metrics.update({f"test_{k}": {"": v} for k, v in tested.items()})
            return state, (metrics, round_metrics, local)

        state, (windows, per_round, local) = lax.scan(one_round, state, jnp.arange(rounds))
        # [rounds, K, E] -> [K, chunk_steps] -> windows of log_every steps, each the mean over the steps
        # in it at which the client took part (NaN if none: a window may span rounds, or lie within one)
        windows = jax.tree.map(lambda m: jnp.nanmean(jnp.moveaxis(m, 0, 1).reshape(n_local, -1, log_every), axis=2),
                               windows)
        per_round = jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), per_round)  # [K, rounds]
        local = jax.tree.map(lambda m: m[-1][:, None], local)  # the last round's: [K, 1]
        return state, {**windows, **per_round, **local}

    sharded = jax.shard_map(device_chunk, mesh=mesh,
                            in_specs=(P(pop.AXIS), P(pop.AXIS), P(), P(), P(), P()),
                            out_specs=(P(pop.AXIS), P(pop.AXIS)), check_vma=False)
    chunk = jax.jit(sharded, donate_argnums=0)
    ids = jax.device_put(ClientIds(*(np.asarray(a) for a in fed.ids)), jax.sharding.NamedSharding(mesh, P(pop.AXIS)))
    parts = pop.replicate(tuple(jnp.asarray(a) for a in fed.examples), mesh)

    def train_chunk(state, data):
        return chunk(state, ids, data, *parts)

    train_chunk._cache_size = chunk._cache_size  # the runner counts compiled variants
    train_chunk.lower = lambda state, data: chunk.lower(state, ids, data, *parts)  # the memory check
    return train_chunk


def pop_mask(mask: jax.Array, m: jax.Array) -> jax.Array:
    """``mask [n]`` broadcast against ``m [n, ...]``."""
    return mask.reshape(mask.shape + (1,) * (m.ndim - 1))


def global_scores(per_model, state, federation, x, y, n_fed: int, n_devices: int) -> dict:
    """Inside ``shard_map``: each federation's global model on all of ``x, y``, ``{name: [n_local]}``
    for each living client (NaN for a diverged one, which left the federation). After a round every
    living client of a federation holds the global model, so each device evaluates one living client
    per federation it holds (F models, not K) and the lowest such device's scores are shared
    (``pmin``, ``psum``). ``per_model``: the task's ``evaluate`` vmapped over models."""
    n_local = federation.shape[0]
    first = jax.ops.segment_min(jnp.where(state.alive, jnp.arange(n_local), n_local), federation,
                                num_segments=n_fed + 1)[:n_fed]
    here = first < n_local
    reps = jax.tree.map(lambda a: a[jnp.minimum(first, n_local - 1)], state)
    scores = per_model(reps, x, y)  # {name: [F]}
    device = lax.axis_index(pop.AXIS)
    owner = lax.pmin(jnp.where(here, device, n_devices), pop.AXIS)
    mine = here & (owner == device)
    shared = jax.tree.map(lambda s: lax.psum(jnp.where(mine, s, jnp.zeros_like(s)), pop.AXIS), scores)
    alive_somewhere = owner < n_devices

    def spread(s):
        s = jnp.concatenate([jnp.where(alive_somewhere, s, jnp.nan), jnp.full((1,), jnp.nan, s.dtype)])
        return jnp.where(state.alive, s[federation], jnp.nan)

    return jax.tree.map(spread, shared)


def make_federated_evaluate(task: FederatedTask, mesh, fed: Federation):
    """``evaluate(state, x, y) -> metrics [K_padded]``: ``global_scores`` as a program of its own
    (the runner's evaluation; the chunk also evaluates after every round)."""
    per_model = jax.vmap(task.evaluate, in_axes=(0, None, None))

    def device_evaluate(state, federation, x, y):
        return global_scores(per_model, state, federation, x, y, fed.n_fed, mesh.size)

    sharded = jax.shard_map(device_evaluate, mesh=mesh, in_specs=(P(pop.AXIS), P(pop.AXIS), P(), P()),
                            out_specs=P(pop.AXIS), check_vma=False)
    program = jax.jit(sharded)
    federation = jax.device_put(np.asarray(fed.ids.federation), jax.sharding.NamedSharding(mesh, P(pop.AXIS)))

    def evaluate(state, x, y):
        return program(state, federation, x, y)

    evaluate._cache_size = program._cache_size
    evaluate.lower = lambda state, x, y: program.lower(state, federation, x, y)
    return evaluate
