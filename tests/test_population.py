"""The population against independent references: solo runs, other positions, other sizes."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxdyn import population as pop

from conftest import assert_same_curve, assert_within_a_step, make_task, member_arrays, traced_once

STEPS = 100


def train_population(task, seeds, hparams, mesh, data, *, chunk=STEPS, chunks=1, log_every=1, group=0,
                     checked_once=True):
    layout = pop.plan_layout(len(seeds.init_seed), mesh.size, group)
    padded = jax.tree.map(lambda a: pop.pad_members(a, layout), (seeds, hparams))
    state = pop.init_population(task, *padded, mesh)
    train_chunk = pop.make_train_chunk(task, chunk, log_every, layout.group_size, mesh, checked_once=checked_once)
    losses = []
    for _ in range(chunks):
        state, metrics = train_chunk(state, data)
        losses.append(np.asarray(metrics["loss"]))
    k = len(seeds.init_seed)
    return jax.tree.map(lambda x: np.asarray(x)[:k], state), np.concatenate(losses, axis=1)[:k]


class Solo(NamedTuple):
    state: object  # after ``steps`` steps
    losses: np.ndarray  # [steps]
    before: object  # after ``steps - 1`` steps: the scale of one step
    later_losses: np.ndarray  # [steps]: the loss curve one step later


def solo_run(task, seeds, hparams, data, steps=STEPS) -> Solo:
    """One member, no vmap, no sharding, no freeze: plain jit(scan(task.step)), one step more."""
    state = jax.jit(task.init)(seeds, hparams)

    def run(s):
        before, first = lax.scan(lambda c, _: task.step(c, data), s, None, length=steps - 1)
        state, last = task.step(before, data)
        _, extra = task.step(state, data)
        return before, state, jnp.concatenate([first["loss"], last["loss"][None], extra["loss"][None]])

    before, state, losses = jax.tree.map(np.asarray, jax.jit(run)(state))
    return Solo(state, losses[:-1], before, losses[1:])


def member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def grid_run(mesh, device_data):
    """6 members: 2 learning rates x 3 seeds, on every device, in groups of 2."""
    task = make_task()
    seeds, hp = member_arrays("adam", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2],
                              learning_rate=[1e-3] * 3 + [1e-2] * 3)
    state, losses = train_population(task, seeds, hp, mesh, device_data, group=2)
    return task, seeds, hp, state, losses


@pytest.fixture(scope="module")
def grid_solos(grid_run, device_data):
    """Members 0 (lr 1e-3) and 4 (lr 1e-2) of the grid, each trained alone."""
    task, seeds, hp, _, _ = grid_run
    return {i: solo_run(task, member(seeds, i), member(hp, i), device_data) for i in (0, 4)}


def test_member_equals_solo_run(grid_run, grid_solos):
    # Another compilation (vmap, groups, shard_map, the freeze guard): the same maths, other
    # roundings, amplified over 100 steps; so the member is compared against the solo run's own
    # last step (conftest.assert_within_a_step), not at a tolerance found by trial.
    _, _, _, state, losses = grid_run
    for i, solo in grid_solos.items():
        assert_within_a_step(member(state.params, i), solo.state.params, solo.before.params)
        assert_within_a_step(member(state.opt_state, i), solo.state.opt_state, solo.before.opt_state)
        assert_same_curve(losses[i], solo.losses, solo.later_losses)
        assert int(state.step[i]) == STEPS == int(solo.state.step)


def test_learning_rate_changes_training(grid_run):
    _, _, _, state, losses = grid_run
    # Same seeds, 10x the learning rate: a different trajectory that learns faster early on.
    assert not np.array_equal(losses[0], losses[3])
    # Mean of the last 20 batch losses, lr 1e-3 minus lr 1e-2, same seeds: 0.430 +- 0.025 over 8 seeds
    # (min 0.406); the 0.2 margin <= mean - 5 std = 0.303, above the baseline 0 (no difference).
    assert losses[3][-20:].mean() < losses[0][-20:].mean() - 0.2, (losses[0][-20:].mean(), losses[3][-20:].mean())


def test_member_independent_of_position_and_neighbours(grid_run, mesh, device_data):
    task, seeds, hp, state, losses = grid_run
    order = np.array([5, 3, 0, 4, 2, 1])  # every member moves; neighbours and devices change
    moved_state, moved_losses = train_population(
        task, member(seeds, order), member(hp, order), mesh, device_data, group=2
    )
    for new, old in enumerate(order):
        np.testing.assert_array_equal(moved_losses[new], losses[old])
        chex.assert_trees_all_equal(member(moved_state.params, new), member(state.params, old))


def test_member_close_across_population_sizes(grid_run, grid_solos, mesh, device_data):
    task, seeds, hp, _, _ = grid_run
    idx = np.array([0, 4])  # a population of 2 (groups of 1) instead of 6 (groups of 2): another
    # program layout, so not bits (population.py: grouping changes the low bits), but the same training
    small_state, small_losses = train_population(task, member(seeds, idx), member(hp, idx), mesh, device_data)
    for k, i in enumerate(idx):
        solo = grid_solos[i]
        assert_within_a_step(member(small_state.params, k), solo.state.params, solo.before.params)
        assert_same_curve(small_losses[k], solo.losses, solo.later_losses)


def test_seeds_repeat_and_act_independently(mesh, device_data):
    task = make_task()
    # Members: (init, data) = (0,0), (0,0), (0,1), (1,0)
    seeds, hp = member_arrays("adam", [0, 0, 0, 1], [0, 0, 1, 0])
    layout = pop.plan_layout(4, mesh.size)
    state0 = jax.tree.map(np.asarray, pop.init_population(task, seeds, hp, mesh))
    # init_seed alone decides the initial params; data_seed alone decides the data key.
    chex.assert_trees_all_equal(member(state0.params, 0), member(state0.params, 2))
    assert not np.array_equal(state0.params["head"]["kernel"][0], state0.params["head"]["kernel"][3])
    np.testing.assert_array_equal(state0.data_key[0], state0.data_key[3])
    assert not np.array_equal(state0.data_key[0], state0.data_key[2])

    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=20, log_every=1)
    chex.assert_trees_all_equal(member(state.params, 0), member(state.params, 1))
    np.testing.assert_array_equal(losses[0], losses[1])
    for other in (2, 3):
        assert not np.array_equal(state.params["head"]["kernel"][0], state.params["head"]["kernel"][other])
    # Same data seed, other init: the first batch is the same data, so the first-step
    # losses differ only through the init; same init, other data: different batches.
    assert losses[0][0] != losses[2][0]
    assert layout.n_padded == 4


def test_diverging_member_is_frozen_and_others_untouched(mesh, device_data):
    task = make_task("sgd")
    seeds = [0, 1, 2, 3]
    normal = member_arrays("sgd", seeds, seeds, learning_rate=[0.1, 0.1, 0.1, 0.1])
    blowup = member_arrays("sgd", seeds, seeds, learning_rate=[0.1, 1e4, 0.1, 0.1])
    ref_state, ref_losses = train_population(task, *normal, mesh, device_data, chunk=25, chunks=2)
    state, losses = train_population(task, *blowup, mesh, device_data, chunk=25, chunks=2)

    assert bool(state.alive[1]) is False
    died = int(state.diverged_at[1])
    assert 0 <= died < 50
    # Logged up to and including the step that blew up, NaN after it.
    assert np.all(np.isfinite(losses[1][:died])) and np.all(np.isnan(losses[1][died + 1:]))
    assert all(np.all(np.isfinite(x[1])) for x in jax.tree.leaves(state.params))
    assert int(state.step[1]) == 50
    for i in (0, 2, 3):
        assert bool(state.alive[i]) and int(state.diverged_at[i]) == -1
        np.testing.assert_array_equal(losses[i], ref_losses[i])
        chex.assert_trees_all_equal(member(state.params, i), member(ref_state.params, i))


def test_frozen_member_keeps_its_last_finite_state(mesh, device_data):
    task = make_task("sgd")
    seeds, hp = member_arrays("sgd", [0, 1], [0, 1], learning_rate=[1e4, 0.1])
    state, _ = train_population(task, seeds, hp, mesh, device_data, chunk=25, chunks=2)
    died = int(state.diverged_at[0])
    assert died >= 2
    # Rerun member 0 alone: the frozen state is its state after exactly `died` steps. The solo
    # program is another compilation, so its floats differ a little from the population's, and the
    # divergence (to ~1e17) amplifies that with every step; what holds on any machine is that the
    # frozen state is finite and closer to step `died` than to step `died - 1` (an off-by-one
    # freeze is a whole step away: one step of this divergence is the size of the state itself).
    solo = solo_run(task, member(seeds, 0), member(hp, 0), device_data, steps=died)
    assert_within_a_step(member(state.params, 0), solo.state.params, solo.before.params)


def test_second_chunk_does_not_recompile(mesh, device_data):
    task = traced_once(make_task())
    seeds, hp = member_arrays("adam", [0, 1], [0, 1], learning_rate=[1e-3, 3e-3])
    state = pop.init_population(task, seeds, hp, mesh)
    chunk = pop.make_train_chunk(task, 10, 5, 1, mesh)
    for _ in range(3):
        state, _ = chunk(state, device_data)


def test_layout_pads_to_devices_and_groups():
    layout = pop.plan_layout(5, 2, 2)
    assert (layout.group_size, layout.n_padded, layout.per_device) == (2, 8, 4)
    assert pop.plan_layout(32, 2, 0, "cpu").group_size == 8
    auto = pop.plan_layout(33, 2, 0, "cpu")  # 17 per device: 3 groups of 6, not 3 of 8
    assert (auto.group_size, auto.n_padded) == (6, 36)
    assert pop.plan_layout(1, 2, 0, "cpu").n_padded == 2
    assert pop.plan_layout(32, 1, 0, "gpu").group_size == 32
    padded = pop.pad_members(np.array([3.0, 4.0, 5.0, 6.0, 7.0]), layout)
    np.testing.assert_array_equal(padded, [3, 4, 5, 6, 7, 3, 3, 3])


def test_non_finite_state_with_finite_loss_freezes_at_exact_state(mesh, device_data):
    """The guard also catches a state that turns non-finite while the loss is finite, and the
    frozen member holds exactly (bitwise) its state before that step."""
    base = make_task()

    class Poisoned(type(base)):
        def step(self, state, data):
            new, metrics = super().step(state, data)
            # Members with learning rate 2e-3 get a NaN weight from their 8th step (step 7) on.
            poison = (state.step >= 7) & (state.opt_state.hyperparams["learning_rate"] == 2e-3)
            kernel = new.params["head"]["kernel"]
            kernel = kernel.at[0, 0].set(jnp.where(poison, jnp.nan, kernel[0, 0]))
            new = new._replace(params={**new.params, "head": {**new.params["head"], "kernel": kernel}})
            return new, metrics

    task = Poisoned(base.model, base.optimizer, base.batch_size, base.input_shape)
    seeds, hp = member_arrays("adam", [0, 1, 2], [0, 1, 2], learning_rate=[1e-3, 2e-3, 1e-3])
    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=20)
    assert not bool(state.alive[1]) and int(state.diverged_at[1]) == 7
    assert np.all(np.isfinite(losses[1][:8])) and np.all(np.isnan(losses[1][8:]))
    at_7, _ = train_population(base, seeds, hp, mesh, device_data, chunk=7)
    chex.assert_trees_all_equal(member(state.params, 1), member(at_7.params, 1))
    chex.assert_trees_all_equal(member(state.opt_state, 1), member(at_7.opt_state, 1))
    full, _ = train_population(base, seeds, hp, mesh, device_data, chunk=20)
    for i in (0, 2):
        chex.assert_trees_all_equal(member(state.params, i), member(full.params, i))


@pytest.mark.parametrize("group", [1, 2, 0])
def test_checking_once_per_chunk_is_the_per_step_guard_bit_for_bit(mesh, device_data, group):
    """The chunk that checks the state once and reruns a failed group under the per-step guard
    gives the guard's result exactly: members that diverge in a chunk, stay dead in the next ones
    (frozen, NaN metrics, the step counter going on), and the healthy ones in the same group."""
    task = make_task("sgd")
    seeds = [0, 1, 2, 3, 4]
    lrs = [0.1, 1e4, 0.1, 30.0, 0.1]  # member 1 dies at once, member 3 later
    args = (task, *member_arrays("sgd", seeds, seeds, learning_rate=lrs), mesh, device_data)
    fast = train_population(*args, chunk=10, chunks=4, log_every=5, group=group)
    guarded = train_population(*args, chunk=10, chunks=4, log_every=5, group=group, checked_once=False)
    chex.assert_trees_all_equal(fast, guarded)
    state = fast[0]
    assert not state.alive[1] and not state.alive[3] and state.alive[[0, 2, 4]].all()
    assert (state.step == 40).all()
