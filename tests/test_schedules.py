"""Learning-rate schedules: each against its formula, per member inside a population, and
against plain optax with the same schedule."""

import dataclasses
import math
from functools import partial

import jax
import numpy as np
import optax
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.config import OptimConfig, load_config
from jaxdyn.schedules import SCHEDULES, learning_rate
from jaxdyn.study import expand

from conftest import assert_within_a_step, make_task, member_arrays, traced_once
from test_population import member, train_population

STEPS = 1000


def formula(name, t, cfg, alpha=0.0, rate=0.1):
    """The schedules written out by hand (Loshchilov & Hutter 2017 for the cosine)."""
    total = cfg.decay_steps or STEPS
    if name == "constant":
        return 1.0
    if name == "cosine":
        t = min(t, total)
        return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * t / total)) + alpha
    if name == "warmup_cosine":
        w = cfg.warmup_steps
        if t < w:
            return t / w
        t = min(t - w, total - w)
        return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * t / (total - w))) + alpha
    if name == "exponential":
        return rate ** (t / cfg.transition_steps)
    if name == "step":
        return rate ** sum(t >= b for b in cfg.boundaries)
    raise AssertionError(name)


CFGS = {
    "constant": OptimConfig(),
    "cosine": OptimConfig(schedule="cosine", decay_steps=800),
    "warmup_cosine": OptimConfig(schedule="warmup_cosine", warmup_steps=100),
    "exponential": OptimConfig(schedule="exponential", transition_steps=250),
    "step": OptimConfig(schedule="step", boundaries=(300, 700)),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_gives_its_formula_at_chosen_steps(name):
    cfg = CFGS[name]
    for alpha, rate in ((0.0, 0.1), (0.2, 0.5)):
        hp = {"learning_rate": np.float32(0.3), "alpha": np.float32(alpha), "decay_rate": np.float32(rate)}
        for t in (0, 1, 50, 99, 100, 101, 299, 300, 500, 699, 700, 800, 999):
            got = float(learning_rate(np.int32(t), hp, cfg, STEPS))
            np.testing.assert_allclose(got, 0.3 * formula(name, t, cfg, alpha, rate), rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name} at step {t}")


def test_members_follow_their_own_schedule_numbers_like_plain_optax(mesh, device_data, dataset):
    cfg = OptimConfig(name="sgd", schedule="cosine", decay_steps=40)
    base = make_task("sgd")
    task = dataclasses.replace(base, schedule=partial(learning_rate, cfg=cfg, steps=40))
    seeds, hp = member_arrays("sgd", [0, 0], [0, 0], learning_rate=0.1, alpha=[0.0, 0.5])
    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=30)
    # The injected rate is the member's own: lr * cosine(29 / 40) with its alpha.
    for i, alpha in enumerate([0.0, 0.5]):
        got = float(state.opt_state.hyperparams["learning_rate"][i])
        np.testing.assert_allclose(got, 0.1 * formula("cosine", 29, cfg, alpha), rtol=1e-5)
    assert not np.allclose(losses[0], losses[1])
    # Member 1 against plain optax: sgd with optax's cosine schedule, the same batches.
    tx = optax.sgd(optax.cosine_decay_schedule(0.1, 40, alpha=0.5))
    params = base.init(member(seeds, 1), member(hp, 1)).params
    opt_state = tx.init(params)
    for t in range(30):
        before = params
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 2), t)  # streams: fold_in(fold_in(seed, BATCH=2), step)
        idx = jax.random.randint(key, (base.batch_size,), 0, dataset.x_train.shape[0])
        x, y = dataset.x_train[idx], dataset.y_train[idx]
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(base.model.apply({"params": p}, x), y).mean()
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    # Another program, 30 amplifying steps: within a fraction of optax's own last step (see conftest).
    assert_within_a_step(member(state.params, 1), params, before)


def test_schedule_numbers_never_recompile(mesh, device_data):
    cfg = OptimConfig(schedule="warmup_cosine", warmup_steps=5)
    task = traced_once(dataclasses.replace(make_task("adam"), schedule=partial(learning_rate, cfg=cfg, steps=20)))
    chunk = pop.make_train_chunk(task, 5, 5, 1, mesh)
    for alphas in ([0.0, 0.1], [0.3, 0.9]):
        seeds, hp = member_arrays("adam", [0, 1], [0, 1], alpha=alphas)
        chunk(pop.init_population(task, seeds, hp, mesh), device_data)


def test_a_schedule_study_runs_end_to_end(tmp_path):
    cfg = {"study": {"seeds": 1}, "model": {"hidden": [16]},
           "optim": {"name": "sgd", "learning_rate": 0.1, "schedule": "step", "boundaries": [20]},
           "train": {"steps": 40, "batch_size": 16, "chunk_steps": 20, "log_every": 10},
           "grid": {"optim.decay_rate": [0.1, 1.0]}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    assert sorted(res.members.decay_rate) == [0.1, 1.0]
    assert "schedule = \"step\"" in (res.run_dir / "config.toml").read_text()


@pytest.mark.parametrize("optim, message", [
    ({"schedule": "linear"}, "optim.schedule = 'linear' is not known"),
    ({"schedule": "warmup_cosine", "warmup_steps": 6000}, "optim.warmup_steps = 6000 must be below the decay length"),
    ({"schedule": "step"}, "optim.schedule = 'step' needs optim.boundaries"),
    ({"schedule": "step", "boundaries": [400, 200]}, "optim.boundaries = [400, 200]: give increasing positive steps"),
    ({"schedule": "cosine", "alpha": 1.5}, "optim.alpha = 1.5: must lie in [0, 1]"),
    ({"alpha": 0.5}, "optim.alpha is not a number of optimizer 'adam' with schedule 'constant'"),
    ({"schedule": "exponential", "transition_steps": 0}, "optim.transition_steps = 0: must be >= 1"),
])
def test_bad_schedules_are_named(optim, message):
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({"optim": optim}))
    assert message in str(err.value)
