"""Each optimizer family, with per-member injected hyperparameters, against plain optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.data import DATASETS, dataset_info, fixed, load_dataset
from jaxdyn.models import MLP

from conftest import assert_same_curve, assert_within_a_step, make_task, member_arrays
from test_population import train_population

STEPS = 30
# Non-default values, so that a hyperparameter that is not wired through would show.
CASES = {
    "sgd": ({"learning_rate": 0.05}, lambda h: optax.sgd(h["learning_rate"])),
    "momentum": ({"learning_rate": 0.02, "momentum": 0.7},
                 lambda h: optax.sgd(h["learning_rate"], momentum=h["momentum"])),
    "nesterov": ({"learning_rate": 0.02, "momentum": 0.7},
                 lambda h: optax.sgd(h["learning_rate"], momentum=h["momentum"], nesterov=True)),
    "adagrad": ({"learning_rate": 0.05, "initial_accumulator_value": 0.2, "eps": 1e-6},
                lambda h: optax.adagrad(h["learning_rate"], h["initial_accumulator_value"], h["eps"])),
    "rmsprop": ({"learning_rate": 3e-3, "decay": 0.8, "eps": 1e-6},
                lambda h: optax.rmsprop(h["learning_rate"], decay=h["decay"], eps=h["eps"])),
    "adam": ({"learning_rate": 3e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
             lambda h: optax.adam(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"])),
    "adamw": ({"learning_rate": 3e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
              lambda h: optax.adamw(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"],
                                    weight_decay=h["weight_decay"])),
}


def reference_run(tx, dataset, init_seed, data_seed, batch=32, hidden=(32,)):
    """A plain optax loop with the documented sampling rule: uniform indices from
    fold_in(fold_in(PRNGKey(data_seed), Stream.BATCH = 2), step)."""
    model = MLP(hidden, 10)
    # streams.key(PRNGKey(init_seed), Stream.INIT = 1) for the init, Stream.BATCH = 2 for batches
    params = model.init(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(init_seed), 1), 0), jnp.zeros((1, 40)), train=False)["params"]
    opt_state = tx.init(params)
    x_all, y_all = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)

    @jax.jit
    def step(params, opt_state, i):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(data_seed), 2), i)  # streams: BATCH = 2
        idx = jax.random.randint(key, (batch,), 0, len(x_all))
        loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x_all[idx]), y_all[idx]).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses, before = [], params
    for i in range(STEPS + 1):  # one step more: the loss curve one step later
        if i == STEPS - 1:
            before = params
        last = params
        params, opt_state, loss = step(params, opt_state, i)
        losses.append(float(loss))
    return last, before, np.array(losses)


@pytest.mark.parametrize("family", list(CASES))
def test_family_matches_plain_optax(family, mesh, device_data, dataset):
    hparams, make = CASES[family]
    task = make_task(family)
    # Member 0 carries the case's values; member 1 other values, to show values are per member.
    values = {k: [v, v * 0.5] for k, v in hparams.items()}
    seeds, hp = member_arrays(family, [3, 4], [5, 6], **values)
    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=STEPS)
    ref_params, ref_before, ref_losses = reference_run(make(hparams), dataset, 3, 5)
    # Another program than plain optax, 30 amplifying steps: within a fraction of the reference's own
    # last step (conftest.assert_within_a_step), not at a tolerance found by trial.
    assert_same_curve(losses[0], ref_losses[:-1], ref_losses[1:])
    assert_within_a_step(jax.tree.map(lambda x: x[0], state.params), ref_params, ref_before)
    assert not np.allclose(losses[1], ref_losses[:-1])


def test_mixed_families_and_datasets_in_one_study(tmp_path, monkeypatch):
    """Optimizer families and datasets as cohort axes; member table columns in spec order."""
    def flipped():  # a second dataset: MNIST-1D reversed in time, with shifted labels
        ds = load_dataset("mnist1d")
        return ds._replace(x_train=ds.x_train[:, ::-1].copy(), y_train=(ds.y_train + 1) % 10,
                           x_test=ds.x_test[:, ::-1].copy(), y_test=(ds.y_test + 1) % 10)

    calls = []
    monkeypatch.setitem(DATASETS, "flipped", fixed(lambda: calls.append(1) or flipped(), dataset_info("mnist1d"),
                                                   "reversed"))
    cfg = {
        "study": {"seeds": 2},
        "model": {"hidden": [16]},
        "optim": {"learning_rate": 0.01},
        "train": {"steps": 20, "batch_size": 16, "chunk_steps": 10, "log_every": 10},
        "grid": {"optim.name": ["momentum", "adamw"], "data.name": ["mnist1d", "flipped"]},
    }
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False)
    m = res.members
    assert calls == [1]  # the second dataset was loaded, once
    assert list(m.columns) == [
        "member", "cohort", "optim.name", "data.name", "init_seed", "data_seed", "dropout_seed", "learning_rate",
        "momentum", "b1", "b2", "eps", "weight_decay", "label_noise", "noise_std", "l1", "l2", "label_smoothing", "init_scale", "dropout",
        "leaky_slope", "grad_clip", "ema_decay", "init",
        "final_train_loss", "final_test_loss", "final_test_accuracy", "diverged_at"]
    assert m.groupby(["optim.name", "data.name"]).size().to_dict() == {
        ("adamw", "flipped"): 2, ("adamw", "mnist1d"): 2, ("momentum", "flipped"): 2, ("momentum", "mnist1d"): 2}
    assert m[m["optim.name"] == "momentum"].weight_decay.isna().all()
    assert (m[m["optim.name"] == "adamw"].weight_decay == 1e-4).all()
    # Same seeds and optimizer, other data: different results.
    a = m[(m["optim.name"] == "adamw")].set_index(["data.name", "init_seed"]).final_train_loss
    assert a[("mnist1d", 0)] != a[("flipped", 0)]
    pd.testing.assert_frame_equal(jaxdyn.load(tmp_path / "run").members, m)
