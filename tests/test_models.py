"""The layer catalogue inside a population: BatchNorm and dropout per member, initialisers,
residual MLP, linear baseline, and the per-kind model config."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.models import MLP
from jaxdyn.models.layers import INIT_VARIANCE, INITIALIZERS, activate, fans
from jaxdyn.optim import FAMILIES
from jaxdyn.study import expand
from jaxdyn.tasks.supervised import SupervisedTask

from conftest import assert_same_curve, assert_within_a_step, member_arrays
from test_population import member, solo_run, train_population


def bn_dropout_task(use_dropout=True, norm="batch", hidden=(32,)):
    return SupervisedTask(MLP(hidden, 10, norm=norm, use_dropout=use_dropout), FAMILIES["adam"], 32, (40,))


@pytest.fixture(scope="module")
def bn_dropout_run(mesh, device_data):
    """4 members: dropout 0, 0.3, 0.5 on seeds 0, 1, 2, and seed 0 again at 0.5."""
    task = bn_dropout_task()
    seeds, hp = member_arrays("adam", [0, 1, 2, 0], [0, 1, 2, 0], dropout=[0.0, 0.3, 0.5, 0.5],
                              learning_rate=1e-2)
    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=30)
    return task, seeds, hp, state, losses


def test_batchnorm_and_dropout_members_equal_their_solo_runs(bn_dropout_run, device_data):
    task, seeds, hp, state, losses = bn_dropout_run
    for i in range(4):
        solo = solo_run(task, member(seeds, i), member(hp, i), device_data, steps=30)
        # Another compilation, 30 amplifying steps: within a fraction of the solo's own last step
        # (conftest.assert_within_a_step), for the weights and the running BatchNorm statistics.
        assert_same_curve(losses[i], solo.losses, solo.later_losses)
        assert_within_a_step(member(state.params, i), solo.state.params, solo.before.params)
        assert_within_a_step(member(state.model_state, i), solo.state.model_state, solo.before.model_state)


def test_batchnorm_statistics_are_per_member(bn_dropout_run):
    _, _, _, state, _ = bn_dropout_run
    mean = np.asarray(state.model_state["batch_stats"]["norm_0"]["mean"])
    assert mean.shape == (4, 32) and not np.allclose(mean[0], 0)  # running averages moved
    for a, b in [(0, 1), (1, 2), (0, 3)]:
        assert not np.allclose(mean[a], mean[b])  # own data order / own masks: own statistics


def test_evaluation_does_not_depend_on_the_batch(bn_dropout_run, dataset):
    task, _, hp, state, _ = bn_dropout_run
    one = member(state, 1)
    variables = {"params": one.params, **one.model_state}
    x = dataset.x_test[:16]
    together = task.model.apply(variables, x, train=False, hparams=member(hp, 1))
    alone = np.stack([task.model.apply(variables, x[i:i + 1], train=False, hparams=member(hp, 1))[0]
                      for i in range(16)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_dropout_masks_per_member_repeat_for_a_seed_and_vanish_in_eval(bn_dropout_run, dataset):
    task, _, hp, state, losses = bn_dropout_run
    # Seed 0 at dropout 0 and at 0.5: the same init and data, different trajectories.
    assert not np.allclose(losses[0], losses[3])
    model = MLP((64,), 10, use_dropout=True)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40)))["params"]
    x = dataset.x_train[:8]

    def train_out(dropout_seed, step=0, rate=0.5):
        rng = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), step)
        return model.apply({"params": params}, x, train=True, hparams={"dropout": rate, "leaky_slope": 0.01},
                           rngs={"dropout": rng})

    assert not np.allclose(train_out(0), train_out(1))  # members draw their own masks
    assert not np.allclose(train_out(0, step=0), train_out(0, step=1))  # and new ones each step
    np.testing.assert_array_equal(train_out(0), train_out(0))  # the same seed and step repeat
    eval_out = model.apply({"params": params}, x, train=False, hparams={"dropout": 0.5, "leaky_slope": 0.01})
    plain = MLP((64,), 10).apply({"params": params}, x)
    np.testing.assert_array_equal(eval_out, plain)  # no dropout in evaluation
    np.testing.assert_array_equal(train_out(0, rate=0.0), plain)  # rate 0 is exactly off


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_initialiser_variance_matches_its_formula(name):
    shape = (300, 200)
    w = np.asarray(INITIALIZERS[name]()(jax.random.PRNGKey(3), shape, jnp.float32))
    expected = INIT_VARIANCE[name](*fans(shape))
    if expected == 0:
        assert not w.any()
        return
    # 60,000 draws: the sample variance is within a few percent of the true one.
    np.testing.assert_allclose(w.var(), expected, rtol=0.05)
    np.testing.assert_allclose(w.mean(), 0, atol=4 * np.sqrt(expected / w.size))


def test_zeros_init_keeps_hidden_units_identical(tmp_path):
    cfg = {"study": {"seeds": 1}, "model": {"hidden": [6], "init": "zeros", "activation": "sigmoid"},
           "optim": {"name": "sgd", "learning_rate": 0.5},
           "train": {"steps": 50, "batch_size": 32, "chunk_steps": 50, "log_every": 50}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    from jaxdyn.checkpoint import load_state

    params = load_state(res.run_dir)["params"]
    hidden, head = np.asarray(params["hidden_0"]["kernel"][0]), np.asarray(params["head"]["kernel"][0])
    assert np.abs(hidden).max() > 0 and np.abs(head).max() > 0  # it trained...
    np.testing.assert_allclose(hidden, hidden[:, :1].repeat(6, axis=1), rtol=1e-5)  # ...but every
    np.testing.assert_allclose(head, head[:1].repeat(6, axis=0), rtol=1e-5)  # unit is the same unit


def test_residual_mlp_adds_where_widths_match(dataset):
    model = MLP((8, 8, 4), 10, residual=True)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40)))
    x = dataset.x_train[:5]
    _, sown = model.apply(variables, x, mutable=["intermediates"])
    h = {k: v[0] for k, v in sown["intermediates"].items()}
    dense = lambda name, v: v @ variables["params"][name]["kernel"] + variables["params"][name]["bias"]
    np.testing.assert_allclose(h["hidden_0"], nn.relu(dense("hidden_0", x)), rtol=1e-6)  # 40 -> 8: no skip
    np.testing.assert_allclose(h["hidden_1"], h["hidden_0"] + nn.relu(dense("hidden_1", h["hidden_0"])), rtol=1e-6)
    np.testing.assert_allclose(h["hidden_2"], nn.relu(dense("hidden_2", h["hidden_1"])), rtol=1e-6)  # 8 -> 4
    assert sorted(h) == ["head", "hidden_0", "hidden_1", "hidden_2"]
    assert "intermediates" not in model.apply(variables, x, mutable=["batch_stats"])[1]  # not unless asked


def test_leaky_slope_is_a_member_value():
    x = jnp.array([-2.0, 3.0])
    np.testing.assert_allclose(activate("leaky_relu", x, {"leaky_slope": jnp.float32(0.2)}), [-0.4, 3.0])
    seeds_cfg = {"model": {"activation": "leaky_relu"},
                 "grid": {"model.leaky_slope": [0.01, 0.3], "model.dropout": [0.0, 0.1]}}
    (cohort,) = expand(load_config(seeds_cfg))
    assert sorted(set(zip(cohort.members.leaky_slope, cohort.members.dropout))) == [
        (0.01, 0.0), (0.01, 0.1), (0.3, 0.0), (0.3, 0.1)]
    assert cohort.task().model.use_dropout  # some member drops out: masks are compiled in


def test_linear_baseline_learns(tmp_path):
    cfg = {"study": {"seeds": 2}, "model": {"kind": "linear"}, "optim": {"learning_rate": 1e-2},
           "train": {"steps": 600, "batch_size": 100, "chunk_steps": 300, "log_every": 100}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    # Chance 0.1; the MNIST-1D paper: 0.32. Measured over 8 seeds: 0.310 +- 0.010; 0.25 <= mean - 5 std = 0.263.
    assert (res.members.final_test_accuracy > 0.25).all(), res.members.final_test_accuracy
    assert "dropout" not in res.members.columns  # a linear model has no dropout field


@pytest.mark.parametrize("model, message", [
    ({"kind": "linear", "hidden": [8]},
     "model.hidden is not a field of model kind 'linear' (it belongs to model kind mlp, cnn); 'linear' takes: init, init_scale"),
    ({"kind": "mlp", "norm": "group"}, "model.norm = 'group' is not known"),
    ({"kind": "mlp", "residual": 1}, "model.residual = 1: expected true or false"),
    ({"kind": "mlp", "dropout": 1.0}, "model.dropout = 1.0: must lie in [0, 1)"),
    ({"kind": "tree"}, "model.kind = 'tree' is not known"),
])
def test_bad_model_fields_name_the_field(model, message):
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({"model": model}))
    assert message in str(err.value)


def test_a_grid_over_another_kinds_field_is_refused():
    with pytest.raises(jaxdyn.ConfigError, match="grid axis 'model.dropout' is not a field of model kind 'linear'"):
        expand(load_config({"model": {"kind": "linear"}, "grid": {"model.dropout": [0.0, 0.1]}}))


FAMILY_MODELS = {
    "mlp-residual-batchnorm": {"kind": "mlp", "hidden": [32, 32], "residual": True, "norm": "batch"},
    "linear": {"kind": "linear"},
    "cnn-1d-pool": {"kind": "cnn", "channels": [8, 8], "kernels": [5, 3], "strides": [1, 1], "padding": "same",
                    "pool": "max", "global_pool": "mean", "hidden": [16]},
    "gru": {"kind": "rnn", "cell": "gru", "hidden_size": 8, "readout": "last"},
    "lstm-bidirectional": {"kind": "rnn", "cell": "lstm", "hidden_size": 6, "bidirectional": True, "readout": "mean"},
    "elman-stacked": {"kind": "rnn", "cell": "elman", "hidden_size": 8, "layers": 2, "readout": "flatten"},
    # Member dropout too: the solo run draws the same masks from the member's own dropout key.
    "transformer-causal-cls-dropout": {"kind": "transformer", "d_model": 16, "heads": 2, "layers": 2,
                                       "causal": True, "readout": "cls", "dropout": 0.1},
}


@pytest.mark.parametrize("name", sorted(FAMILY_MODELS))
def test_every_family_trains_in_a_population_and_matches_its_solo_run(name, mesh, device_data):
    cfg = {"study": {"seeds": 2}, "model": FAMILY_MODELS[name], "optim": {"learning_rate": 1e-2},
           "train": {"steps": 40, "batch_size": 32, "chunk_steps": 40, "log_every": 1}}
    (cohort,) = expand(load_config(cfg))
    task = cohort.task()
    seeds, hp = cohort.member_arrays(lambda a: a)
    state, losses = train_population(task, seeds, hp, mesh, device_data, chunk=40)
    assert losses.shape == (2, 40) and np.isfinite(losses).all()
    # It learns: the loss on a fixed 2,000 training examples falls below the init's. (It compared
    # the mean of 10 noisy batch losses with that of 5 (batch 32: std ~0.07 each), a coin flip for
    # the GRU, whose loss moves by ~0.01 in 40 steps.) The full-batch loss has no sampling noise:
    # each member is compared with its own init. Measured falls: >= 0.045 (GRU) to 0.47, 45x the
    # 1e-3 asked, and float32 rounding moves a mean of 2,000 losses by ~1e-6.
    evaluate = pop.make_evaluate(task, mesh)
    x, y = device_data.x_train[:2000], device_data.y_train[:2000]
    init = pop.init_population(task, seeds, hp, mesh)
    before, after = (np.asarray(evaluate(s, x, y)["loss"]) for s in (init, state))
    assert (after < before - 1e-3).all(), (before, after)
    solo = solo_run(task, member(seeds, 1), member(hp, 1), device_data, steps=40)
    assert_same_curve(losses[1], solo.losses, solo.later_losses)  # 40 amplifying steps of another program
    assert_within_a_step(member(state.params, 1), solo.state.params, solo.before.params)


def test_orthogonal_init_of_several_members_per_device_finishes():
    """Regression: a vmapped QR (orthogonal init) on two CPU devices at once deadlocked in
    jaxlib's LAPACK thread pool. Init now maps over members; run it in a subprocess so that
    a hang fails this test instead of the suite."""
    import subprocess
    import sys

    code = """
import jaxdyn, jax, numpy as np
from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.study import expand
(c,) = expand(load_config({"study": {"seeds": 8}, "model": {"kind": "rnn", "cell": "gru", "hidden_size": 8}}))
mesh = pop.make_mesh()
layout = pop.plan_layout(8, mesh.size, 0, "cpu")
seeds, hp = c.member_arrays(lambda a: pop.pad_members(a, layout))
state = pop.init_population(c.task(), seeds, hp, mesh)
kernel = np.asarray(state.params["layer_0"]["cell"]["hr"]["kernel"])
solo = c.task().init(*jax.tree.map(lambda a: a[3], (seeds, hp)))
np.testing.assert_allclose(kernel[3], solo.params["layer_0"]["cell"]["hr"]["kernel"], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(kernel[0] @ kernel[0].T, np.eye(8), atol=1e-5)  # orthogonal
assert not np.allclose(kernel[0], kernel[1])
print("ok", mesh.size)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr
