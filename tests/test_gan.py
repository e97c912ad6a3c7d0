"""The GAN task: each player's loss falls against a fixed opponent, the gradient penalty, a member
against its solo run, a diverging member frozen, and a population that learns the ring's modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdyn import population as pop
from jaxdyn.data import Dataset, load_dataset
from jaxdyn.data.synthetic import mixture
from jaxdyn.gan.losses import GAN_LOSSES, discriminator_loss, generator_loss, gradient_penalty
from jaxdyn.gan.task import GANTask
from jaxdyn.models import MLP
from jaxdyn.optim import FAMILIES
from jaxdyn.tasks.supervised import Seeds

from conftest import assert_same_curve, assert_within_a_step

CENTERS, STD = mixture("ring")


def ring_task(loss="non_saturating", width=64, n_critic=1):
    return GANTask(MLP((width, width), 2), MLP((width, width), 1), FAMILIES["adam"], FAMILIES["adam"], (2,), 2, 100,
                   loss=loss, n_critic=n_critic, centers=tuple(map(tuple, CENTERS)), std=STD)


def hparams(k: int, **over) -> dict:
    base = {"g_learning_rate": 1e-3, "d_learning_rate": 1e-3, "g_b1": 0.5, "g_b2": 0.999, "g_eps": 1e-8,
            "d_b1": 0.5, "d_b2": 0.999, "d_eps": 1e-8, "gp_weight": 0.1, "leaky_slope": 0.01, "dropout": 0.0}
    return {name: np.broadcast_to(np.asarray(over.get(name, v), np.float32), (k,)).copy() for name, v in base.items()}


def seeds(k: int) -> Seeds:
    return Seeds(*(np.arange(k, dtype=np.int32) for _ in range(3)))


def one(tree, i=0):
    return jax.tree.map(lambda a: jnp.asarray(a[i]), tree)


@pytest.fixture(scope="module")
def ring():
    return load_dataset("ring")


@pytest.mark.parametrize("loss", GAN_LOSSES)
def test_each_player_improves_against_a_fixed_opponent(loss, ring):
    task = ring_task(loss)
    state = task.init(one(seeds(1)), one(hparams(1)))
    real = jnp.asarray(ring.x_train[:100])
    z = jax.random.normal(jax.random.PRNGKey(1), (100, 2))
    key = jax.random.PRNGKey(2)

    @jax.jit
    def d_only(state):
        grads = jax.grad(lambda p: task.d_loss(p, state, real, z, key)[0])(state.params["discriminator"])
        return task._update(state, "discriminator", grads)[0]

    @jax.jit
    def g_only(state):
        return task._update(state, "generator", jax.grad(lambda p: task.g_loss(p, state, z)[0])(state.params["generator"]))[0]

    # Each player against its own loss before its 30 steps (not a fixed level): over 8 seeds the falls
    # vary too much for mean - 5 std to stay above 0 (D: 0.47 +- 0.10 to 1.66 +- 0.41; G: 0.23 +- 0.02
    # to 9.8 +- 2.1; every seed's fall >= 0.16). This member's falls are >= 0.20 (least-squares G) and
    # move by <= 2e-6 (std, 8 float32-rounding perturbations of its init), so the 0.05 margin holds.
    before = task.d_loss(state.params["discriminator"], state, real, z, key)[0]
    s = state
    for _ in range(30):
        s = d_only(s)
    assert task.d_loss(s.params["discriminator"], s, real, z, key)[0] < before - 0.05
    for a, b in zip(jax.tree.leaves(s.params["generator"]), jax.tree.leaves(state.params["generator"])):
        np.testing.assert_array_equal(a, b)  # the generator held fixed
    before = task.g_loss(s.params["generator"], s, z)[0]
    t = s
    for _ in range(30):
        t = g_only(t)
    assert task.g_loss(t.params["generator"], t, z)[0] < before - 0.05
    for a, b in zip(jax.tree.leaves(t.params["discriminator"]), jax.tree.leaves(s.params["discriminator"])):
        np.testing.assert_array_equal(a, b)  # the discriminator held fixed


def test_loss_formulas():
    r, f = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(discriminator_loss("minimax", r, f), np.mean(-np.log(sig(r)) - np.log(1 - sig(f))), rtol=1e-6)
    np.testing.assert_allclose(generator_loss("minimax", f), np.mean(np.log(1 - sig(f))), rtol=1e-6)
    np.testing.assert_allclose(generator_loss("non_saturating", f), np.mean(-np.log(sig(f))), rtol=1e-6)
    np.testing.assert_allclose(discriminator_loss("hinge", r, f), np.mean(np.maximum(0, 1 - r) + np.maximum(0, 1 + f)))
    np.testing.assert_allclose(discriminator_loss("least_squares", r, f),
                               np.mean(0.5 * (r - 1) ** 2 + 0.5 * f ** 2))
    np.testing.assert_allclose(generator_loss("least_squares", f), np.mean(0.5 * (f - 1) ** 2))
    np.testing.assert_allclose(discriminator_loss("wgan_gp", r, f), np.mean(f - r))


def test_gradient_penalty_matches_a_per_sample_computation():
    critic_net = MLP((5,), 1, "tanh")
    params = critic_net.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    critic = lambda x: critic_net.apply(params, x)[:, 0]
    rng = np.random.default_rng(0)
    real, fake = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32), jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    key = jax.random.PRNGKey(7)
    got = gradient_penalty(critic, real, fake, key)
    eps = np.asarray(jax.random.uniform(key, (6, 1)))  # the mixing draw the definition specifies
    terms = []
    for i in range(6):
        point = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        g = jax.grad(lambda p: critic(p[None])[0])(point)  # one example alone
        terms.append((np.linalg.norm(np.asarray(g, np.float64)) - 1) ** 2)
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)


def test_a_member_equals_its_solo_run(mesh, ring):
    task = ring_task("wgan_gp", width=16, n_critic=2)
    hp = hparams(4, d_learning_rate=[1e-3, 2e-3, 3e-4, 1e-3], gp_weight=[0.1, 1.0, 0.1, 10.0])
    data = pop.replicate(ring, mesh)
    state, metrics = pop.make_train_chunk(task, 20, 10, 2, mesh)(pop.init_population(task, seeds(4), hp, mesh), data)
    solo = task.init(one(seeds(4), 3), one(hp, 3))
    step = jax.jit(task.step)
    losses, states = [], []
    for _ in range(21):  # one more than the population, for the scale of one step
        solo, m = step(solo, Dataset(*map(jnp.asarray, ring)))
        losses.append(float(m["d_loss"]))
        states.append(solo.params)
    # Another compilation rounds differently and a GAN's play amplifies it: the member is its solo
    # run up to well under one step of it (conftest.assert_within_a_step), curves and weights.
    windows = lambda first: np.mean(np.reshape(losses[first:first + 20], (2, 10)), axis=1)
    assert_same_curve(metrics["d_loss"][3], windows(0), windows(1))
    assert_within_a_step(one(state.params, 3), states[19], states[18])


def test_a_diverging_discriminator_is_frozen_and_the_others_are_untouched(mesh, ring):
    task = ring_task(width=16)
    data = pop.replicate(ring, mesh)
    chunk = pop.make_train_chunk(task, 30, 10, 2, mesh)
    calm = chunk(pop.init_population(task, seeds(4), hparams(4), mesh), data)[0]
    wild = chunk(pop.init_population(task, seeds(4), hparams(4, d_learning_rate=[1e-3, 1e-3, 1e-3, 1e35]), mesh),
                 data)[0]
    assert np.asarray(wild.alive).tolist() == [True, True, True, False] and int(wild.diverged_at[3]) >= 0
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(wild.params)[0][3])))  # frozen at its last finite state
    for a, b in zip(jax.tree.leaves(one(calm.params, slice(0, 3))), jax.tree.leaves(one(wild.params, slice(0, 3)))):
        np.testing.assert_array_equal(a, b)  # bitwise


def test_a_population_learns_the_ring(mesh, ring):
    task = ring_task(width=64)
    data = pop.replicate(ring, mesh)
    state = pop.init_population(task, seeds(4), hparams(4), mesh)
    state, _ = pop.make_train_chunk(task, 1000, 100, 4, mesh)(state, data)
    state, _ = pop.make_train_chunk(task, 1000, 100, 4, mesh)(state, data)
    scores = jax.device_get(pop.make_evaluate(task, mesh)(state, data.x_test, data.y_test))
    assert scores["modes"].mean() >= 4, scores["modes"]  # far more than the one mode of a collapse
    assert scores["high_quality"].mean() > 0.02, scores["high_quality"]
