"""A FedAvg round's server side (``federated.round``) against numpy and optax, on the
two-device mesh the suite runs on (federations spread over both devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdyn import population as pop
from jaxdyn import streams
from jaxdyn.federated.config import FederatedConfig
from jaxdyn.federated.round import ClientIds, FedOptState, selected, server_optimizer, server_round
from jaxdyn.streams import Stream
from jaxdyn.tasks.base import MemberState

K, N_FED, CLIENTS = 8, 2, 4
# Interleaved, so that each federation has clients on both devices of the mesh (members 0-3, 4-7).
FEDERATION = np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int32)
CLIENT = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
WEIGHT = np.array([10, 20, 30, 40, 50, 60, 70, 80], np.float32)


def _state(rng, server_cfg, alive=None):
    params = {"dense": {"kernel": rng.normal(size=(K, 3, 2)).astype(np.float32),
                        "bias": rng.normal(size=(K, 2)).astype(np.float32)},
              "head": {"kernel": rng.normal(size=(K, 2, 1)).astype(np.float32)}}
    anchor = {"dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
                        "bias": rng.normal(size=(2,)).astype(np.float32)},
              "head": {"kernel": rng.normal(size=(2, 1)).astype(np.float32)}}
    anchor = jax.tree.map(lambda a: np.broadcast_to(a, (K, *a.shape)).copy(), anchor)
    tx = server_optimizer(server_cfg)
    server = jax.vmap(tx.init)(anchor)
    state = MemberState(params=params, model_state={}, opt_state=FedOptState((), server),
                        hparams={"server_learning_rate": np.full(K, 0.7, np.float32)},
                        step=np.zeros(K, np.int32), data_key=np.zeros((K, 2), np.uint32),
                        dropout_key=np.zeros((K, 2), np.uint32),
                        alive=np.ones(K, bool) if alive is None else alive, diverged_at=np.full(K, -1, np.int32))
    return state, anchor, tx


def _round(mesh, state, anchor, taking, tx):
    ids = ClientIds(FEDERATION, CLIENT, WEIGHT)
    body = lambda s, a, st, i, t: server_round(s, a, st, i, t, tx, N_FED)
    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(pop.AXIS),) * 5, out_specs=(P(pop.AXIS), P(pop.AXIS)),
                                check_vma=False))
    put = lambda t: jax.device_put(t, NamedSharding(mesh, P(pop.AXIS)))
    return jax.device_get(run(put(state), put(anchor), put(state.opt_state.client), put(ids), put(taking)))


def _numpy_average(params, taking, alive):
    """The weighted mean per federation of the clients that took part and live, as written."""
    out = {}
    for f in range(N_FED):
        use = (FEDERATION == f) & taking & alive
        w = WEIGHT[use]
        out[f] = jax.tree.map(lambda x: np.tensordot(w, x[use], axes=1) / w.sum(), params)
    return out


@pytest.mark.parametrize("sampled", [False, True])
def test_a_plain_fedavg_round_is_the_weighted_average_of_the_clients(mesh, sampled):
    rng = np.random.default_rng(0)
    state, anchor, tx = _state(rng, FederatedConfig())  # sgd
    state.hparams["server_learning_rate"][:] = 1.0
    taking = np.array([1, 1, 0, 1, 1, 0, 1, 1], bool) if sampled else np.ones(K, bool)
    new, metrics = _round(mesh, state, anchor, taking, tx)
    want = _numpy_average(state.params, taking, np.ones(K, bool))
    for k in range(K):
        got = jax.tree.map(lambda x: x[k], new.params)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, want[FEDERATION[k]])
        drift = metrics["client_drift"][""][k]
        if taking[k]:
            flat = lambda t: np.concatenate([x.ravel() for x in jax.tree.leaves(t)])
            mine = flat(jax.tree.map(lambda x: x[k], state.params))
            assert drift == pytest.approx(np.linalg.norm(mine - flat(want[FEDERATION[k]])), rel=1e-5)
        else:
            assert np.isnan(drift)


def test_update_cosine_is_the_mean_over_pairs_of_clients(mesh):
    rng = np.random.default_rng(1)
    state, anchor, tx = _state(rng, FederatedConfig())
    taking = np.array([1, 1, 1, 1, 0, 1, 1, 1], bool)
    _, metrics = _round(mesh, state, anchor, taking, tx)
    flat = lambda t, k: np.concatenate([x[k].ravel() for x in jax.tree.leaves(t)])
    for f in range(N_FED):
        members = np.flatnonzero((FEDERATION == f) & taking)
        u = [flat(state.params, k) - flat(anchor, k) for k in members]
        cos = [u[i] @ u[j] / np.linalg.norm(u[i]) / np.linalg.norm(u[j])
               for i in range(len(u)) for j in range(len(u)) if i != j]
        for k in members:
            assert metrics["update_cosine"][""][k] == pytest.approx(np.mean(cos), abs=1e-5)
        head = [state.params["head"]["kernel"][k].ravel() - anchor["head"]["kernel"][k].ravel() for k in members]
        cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for i, a in enumerate(head) for j, b in enumerate(head)
               if i != j]
        assert metrics["update_cosine"]["head"][members[0]] == pytest.approx(np.mean(cos), abs=1e-5)


@pytest.mark.parametrize("name, reference", [
    ("momentum", lambda: optax.sgd(0.7, momentum=0.9)),
    ("adam", lambda: optax.adam(0.7, b1=0.9, b2=0.99, eps=1e-3)),
    ("sgd", lambda: optax.sgd(0.7)),
])
def test_server_optimizers_step_like_optax_on_the_pseudo_gradient(mesh, name, reference):
    """Two rounds: the global model moves as optax's optimizer (rate 0.7) moves params on
    ``anchor - average``, its state carried from one round to the next."""
    rng = np.random.default_rng(2)
    state, anchor, tx = _state(rng, FederatedConfig(server_optim=name))
    taking = np.ones(K, bool)
    ref = reference()
    glob = {f: jax.tree.map(lambda a: a[np.flatnonzero(FEDERATION == f)[0]], anchor) for f in range(N_FED)}
    ref_state = {f: ref.init(glob[f]) for f in range(N_FED)}
    for _ in range(2):
        avg = _numpy_average(state.params, taking, np.ones(K, bool))
        for f in range(N_FED):
            delta = jax.tree.map(lambda a, b: a - b, glob[f], avg[f])
            updates, ref_state[f] = ref.update(delta, ref_state[f], glob[f])
            glob[f] = optax.apply_updates(glob[f], updates)
        new, _ = _round(mesh, state, anchor, taking, tx)
        for k in range(K):
            got = jax.tree.map(lambda x: x[k], new.params)
            jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6), got, glob[FEDERATION[k]])
        # the next round: the clients move away from the new global model
        anchor = new.params
        state = new._replace(params=jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.1,
                                                 new.params))


def test_a_diverged_client_is_left_out_and_other_federations_are_bitwise_unaffected(mesh):
    rng = np.random.default_rng(3)
    state, anchor, tx = _state(rng, FederatedConfig())
    taking = np.ones(K, bool)
    healthy, _ = _round(mesh, state, anchor, taking, tx)
    alive = np.ones(K, bool)
    alive[2] = False  # federation 0's client 1
    sick, metrics = _round(mesh, state._replace(alive=alive), anchor, taking, tx)
    want = _numpy_average(state.params, taking, alive)
    lr = 0.7
    for k in np.flatnonzero(FEDERATION == 0):
        got = jax.tree.map(lambda x: x[k], sick.params)
        if k == 2:  # frozen as it was
            jax.tree.map(lambda g, w: np.testing.assert_array_equal(g, w[2]), got, state.params)
            assert np.isnan(metrics["client_drift"][""][k])
        else:  # anchor + 0.7 (average - anchor), the dead client not in the average
            expect = jax.tree.map(lambda a, m: a[k] + lr * (m - a[k]), anchor, want[0])
            jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, expect)
    for k in np.flatnonzero(FEDERATION == 1):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[k], b[k]), sick.params, healthy.params)


def test_client_sampling_takes_the_first_m_of_each_federations_permutation(mesh):
    root = jax.random.PRNGKey(5)
    ids = ClientIds(jnp.asarray(FEDERATION), jnp.asarray(CLIENT), jnp.asarray(WEIGHT))
    for round_index in range(3):
        got = np.asarray(selected(ids, root, round_index, N_FED, CLIENTS, 2))
        key = streams.key(root, Stream.CLIENTS, round_index)
        for f in range(N_FED):
            first = set(np.asarray(jax.random.permutation(jax.random.fold_in(key, f), CLIENTS))[:2].tolist())
            assert {int(CLIENT[k]) for k in np.flatnonzero(got & (FEDERATION == f))} == first
    padded = ClientIds(jnp.asarray([0, 2]), jnp.asarray([0, 0]), jnp.asarray([1.0, 0.0]))  # 2 = padding
    assert np.asarray(selected(padded, root, 0, 2, 1, 1)).tolist() == [True, False]
