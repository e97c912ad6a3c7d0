"""One FedAvg round's server side, as a pure function of the members on one device.

Runs inside ``shard_map`` over the member axis (``population.AXIS``): every sum over a
federation is a ``segment_sum`` over this device's members, then a sum over the devices'
partial sums, so a federation may span devices, and a round needs no host. Leaves are
``[n_local, ...]``; ``ids`` say which federation (0..F-1, F for a padding member) and
which client each member is, and its weight in the average.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxdyn import streams
from jaxdyn.population import AXIS
from jaxdyn.streams import Stream


class ClientIds(NamedTuple):
    """Per member ``[K_padded]`` (sharded like the state): ``federation`` int32 (F for padding),
    ``client`` int32 (its index in the federation), ``weight`` float32 (its example count, or 1
    under uniform weighting; 0 for padding)."""

    federation: Any
    client: Any
    weight: Any


class FedOptState(NamedTuple):
    """A client's optimizer state and its copy of the server optimizer's (identical within a federation)."""

    client: Any
    server: Any


def server_optimizer(cfg) -> optax.GradientTransformation:
    """The server's optax optimizer at learning rate 1 (the member's ``server_learning_rate``
    scales its update, which is linear in the rate for all three)."""
    if cfg.server_optim == "sgd":
        return optax.sgd(1.0)
    if cfg.server_optim == "momentum":
        return optax.sgd(1.0, momentum=cfg.server_momentum)
    return optax.adam(1.0, b1=cfg.server_b1, b2=cfg.server_b2, eps=cfg.server_eps)


def selected(ids: ClientIds, root: jax.Array, round_index, n_fed: int, clients: int, m: int) -> jax.Array:
    """``[n_local]`` bool: whether each member is one of the ``m`` clients its federation samples
    this round: the first m of ``jax.random.permutation(fold_in(key, federation), clients)`` with
    ``key = streams.key(root, Stream.CLIENTS, round_index)``. All clients when ``m == clients``."""
    real = ids.federation < n_fed
    if m >= clients:
        return real
    key = streams.key(root, Stream.CLIENTS, round_index)
    perms = jax.vmap(lambda f: jax.random.permutation(jax.random.fold_in(key, f), clients))(jnp.arange(n_fed))
    ranks = jnp.argsort(perms, axis=1)  # ranks[f, c]: where client c comes in federation f's draw
    return real & (ranks[jnp.minimum(ids.federation, n_fed - 1), ids.client] < m)


def _per_member(w: jax.Array, x: jax.Array) -> jax.Array:
    return w.reshape(w.shape + (1,) * (x.ndim - 1))


def federation_total(x: jax.Array, federation: jax.Array, n_fed: int) -> jax.Array:
    """Each federation's sum of ``x [n_local, ...]`` over all devices, ``[F + 1, ...]`` (row F: padding).

    The devices' partial sums are gathered (``[n_devices, F + 1, ...]`` on every device) and
    added by one ``jnp.sum`` in device order, not by ``psum``: the order in which an all-reduce
    adds depends on how the collective is carried out (within one process, or across processes
    through gloo or NCCL), and floating-point addition is not associative, so with ``psum`` a
    run as 2 processes of 2 devices differed from one process of 4 in the last bits. Gathered,
    every layout of the same global devices adds in the same order, bitwise."""
    partial = jax.ops.segment_sum(x, federation, num_segments=n_fed + 1)
    return jnp.sum(lax.all_gather(partial, AXIS), axis=0)


def federation_sum(x: jax.Array, federation: jax.Array, n_fed: int) -> jax.Array:
    """Each member's federation's sum of ``x [n_local, ...]`` over all devices, ``[n_local, ...]``
    (``federation_total`` handed to each member)."""
    return federation_total(x, federation, n_fed)[federation]


def weighted_mean(tree, w: jax.Array, federation: jax.Array, n_fed: int):
    """``(mean, total weight)``: each member's federation's ``sum_k w_k x_k / sum_k w_k`` of every
    floating leaf (other leaves as they are); the mean is 0 where the total weight is 0."""
    den = federation_sum(w, federation, n_fed)
    safe = jnp.where(den > 0, den, 1.0)

    def mean(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        total = federation_sum(_per_member(w, x).astype(x.dtype) * x, federation, n_fed)
        return (total / _per_member(safe, x).astype(x.dtype)).astype(x.dtype)

    return jax.tree.map(mean, tree), den


def _layer_norms(tree) -> dict:
    """``{layer: ||tree[layer]||, "": ||tree||}`` per member, each ``[n_local]``."""
    sq = {name: sum(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))) for x in jax.tree.leaves(sub))
          for name, sub in tree.items()}
    norms = {name: jnp.sqrt(v) for name, v in sq.items()}
    norms[""] = jnp.sqrt(sum(sq.values()))
    return norms


def update_cosine(updates, taking: jax.Array, federation: jax.Array, n_fed: int) -> dict:
    """The mean cosine over pairs of distinct clients that took part (``taking``) between their
    updates, per layer and whole, per member's federation: with unit updates û_k and n of them,
    the mean over pairs k != l of û_k · û_l is ``(||sum_k û_k||^2 - n) / (n (n - 1))``. NaN when
    fewer than two took part. The sums and their norms are taken per federation (``[F + 1, ...]``)
    and only the F + 1 values handed to the members."""
    n = federation_sum(taking.astype(jnp.float32), federation, n_fed)
    norms = _layer_norms(updates)
    out = {}
    for layer in norms:
        sub = updates if layer == "" else {layer: updates[layer]}
        inv = jnp.where(taking & (norms[layer] > 0), 1.0 / jnp.where(norms[layer] > 0, norms[layer], 1.0), 0.0)
        summed = jax.tree.map(lambda u: federation_total(_per_member(inv, u).astype(u.dtype) * u, federation, n_fed),
                              sub)
        square = (_layer_norms(summed)[""] ** 2)[federation]
        out[layer] = jnp.where(n >= 2, (square - n) / jnp.where(n >= 2, n * (n - 1), 1.0), jnp.nan)
    return out


def server_round(state, anchor, start_opt, ids: ClientIds, taking: jax.Array, server_tx, n_fed: int):
    """Average the clients that took part, step the server, and hand every living client the new
    global model. Returns ``(state, metrics)``.

    ``state``: members after their local steps (``opt_state`` a ``FedOptState``); ``anchor``: the
    params every client of a federation started the round from (the global model); ``start_opt``:
    the client optimizer states at the round's start, given back to clients that did not take part
    (``taking`` false), whose local steps are discarded. A client that diverged is left out of the
    average and keeps its frozen state. Where no client of a federation took part and lived, the
    global model and the server state stay as they were.

    Metrics, each ``{layer: [n_local]}`` with ``""`` the whole model, NaN for members that did not
    take part: ``client_drift`` ``||w_k - w_avg||`` (w_avg the clients' weighted average, before
    the server step) and ``update_cosine`` (``update_cosine``, the same for every client of a federation).
    """
    taking = taking & state.alive
    w = jnp.where(taking, ids.weight, 0.0).astype(jnp.float32)
    avg, den = weighted_mean(state.params, w, ids.federation, n_fed)
    model_avg, _ = weighted_mean(state.model_state, w, ids.federation, n_fed)
    has = den > 0
    lr = state.hparams["server_learning_rate"]

    def server_step(anchor_k, avg_k, server_k, lr_k):
        delta = jax.tree.map(lambda a, b: a - b, anchor_k, avg_k)  # the pseudo-gradient
        updates, server_k = server_tx.update(delta, server_k, anchor_k)
        return jax.tree.map(lambda a, u: a + lr_k.astype(u.dtype) * u, anchor_k, updates), server_k

    new_global, server = jax.vmap(server_step)(anchor, avg, state.opt_state.server, lr)
    keep = lambda mask, new, old: jax.tree.map(lambda n, o: jnp.where(_per_member(mask, n), n, o), new, old)
    new_global = keep(has, new_global, anchor)
    server = keep(has, server, state.opt_state.server)
    live = state.alive
    params = keep(live, new_global, state.params)
    model_state = keep(live & has, model_avg, state.model_state)
    client_opt = keep(taking | ~live, state.opt_state.client, start_opt)
    opt_state = FedOptState(client_opt, keep(live, server, state.opt_state.server))
    drift = _layer_norms(jax.tree.map(lambda a, b: a - b, state.params, avg))
    updates = jax.tree.map(lambda a, b: a - b, state.params, anchor)
    cosine = update_cosine(updates, taking, ids.federation, n_fed)
    hide = lambda d: {k: jnp.where(taking, v, jnp.nan) for k, v in d.items()}
    metrics = {"client_drift": hide(drift), "update_cosine": hide(cosine)}
    return state._replace(params=params, model_state=model_state, opt_state=opt_state), metrics
