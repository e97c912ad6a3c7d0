"""Generators and schedules of GANs: the resize-conv generator's shapes and checks, BatchNorm
statistics moving in training, a scheduled learning rate per step, and conv GANs on digits and MNIST-1D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdyn
from jaxdyn.config import load_config
from jaxdyn.gan.task import GANTask
from jaxdyn.models import MLP, build_model
from jaxdyn.models.upconv import UpConvConfig
from jaxdyn.optim import FAMILIES
from jaxdyn.study import expand
from test_gan import hparams, one, seeds


@pytest.mark.parametrize("shape, channels, sown", [((8, 8, 1), (16, 8), ["project", "up_0", "head"]),
                                                   ((40,), (8, 8, 4), ["project", "up_0", "up_1", "head"])])
def test_the_upconv_generator_makes_examples_of_the_data_shape(shape, channels, sown):
    g = build_model(UpConvConfig(channels=channels), (5,), int(np.prod(shape)), output_shape=shape)
    variables = g.init(jax.random.PRNGKey(0), jnp.zeros((3, 5)))
    out, state = g.apply(variables, jnp.ones((3, 5)), train=True, mutable=["batch_stats", "intermediates"])
    assert out.shape == (3, int(np.prod(shape)))
    assert list(state["intermediates"]) == sown
    sizes = [state["intermediates"][n][0].shape[1:-1] for n in sown]
    assert sizes[-1] == shape[:len(sizes[-1])] and all(2 * a[0] == b[0] for a, b in zip(sizes, sizes[1:]))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], state["batch_stats"])
    assert all(jax.tree.leaves(moved))  # train mode updates the running statistics


GAN = {"task": {"kind": "gan"}, "data": {"name": "digits"}, "train": {"steps": 20, "chunk_steps": 10, "log_every": 10},
       "gan": {"latent_dim": 8, "generator": {"kind": "upconv", "channels": [16, 8]},
               "discriminator": {"kind": "cnn", "channels": [8, 8], "kernels": [3, 3], "strides": [2, 2],
                                 "padding": [1, 1], "activation": "leaky_relu"}}}


@pytest.mark.parametrize("change, message", [
    ({"generator": {"kind": "upconv", "channels": [8, 8, 8, 8]}},
     "gan.generator.channels = [8, 8, 8, 8]: 4 upsamplings need every output size [8, 8] divisible by 16; use 3 "
     "entries or fewer"),
    ({"discriminator": {"kind": "upconv"}}, "gan.discriminator.kind = 'upconv' generates examples"),
    ({"discriminator": {"kind": "cnn", "channels": [8, 8], "kernels": [3]}},
     "gan.discriminator.kernels = [3] has 1 entries but gan.discriminator.channels = [8, 8] has 2"),
    ({"generator": {"kind": "upconv", "out_activation": "softmax"}}, "gan.generator.out_activation = 'softmax' is not known"),
    ({"schedule": "cosin"}, "gan.schedule = 'cosin' is not known; did you mean 'cosine'?"),
    ({"schedule": "warmup_cosine", "warmup_steps": 50}, "gan.warmup_steps = 50 must be below the decay length"),
    ({"schedule": "cosine", "alpha": 2.0}, "gan.alpha = 2.0"),
])
def test_bad_generator_and_schedule_settings_fail_before_compiling(change, message):
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({**GAN, "gan": {**GAN["gan"], **change}}))
    assert message in str(err.value), str(err.value)


def test_upconv_is_refused_as_a_supervised_model():
    with pytest.raises(jaxdyn.ConfigError, match="use it as \\[gan.generator\\]"):
        expand(load_config({"data": {"name": "digits"}, "model": {"kind": "upconv"}}))


def test_a_schedule_scales_both_learning_rates_by_the_same_factor_each_step():
    total = 8
    cosine = lambda t: 0.5 * (1 + np.cos(np.pi * t / total))  # optax's cosine decay, alpha = 0
    task = GANTask(MLP((4,), 2), MLP((4,), 1), FAMILIES["adam"], FAMILIES["adam"], (2,), 2, 16,
                   schedule=lambda count, hp: 0.5 * (1 + jnp.cos(jnp.pi * count / total)))
    hp = one(hparams(1, g_learning_rate=1e-3, d_learning_rate=4e-3))
    state = task.init(one(seeds(1)), hp)
    data = jaxdyn.data.Dataset(np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32),
                               np.zeros(64, np.int32), np.zeros((4, 2), np.float32), np.zeros(4, np.int32))
    step = jax.jit(task.step)
    for t in range(5):
        state, _ = step(state, data)
        g, d = (float(s.hyperparams["learning_rate"]) for s in state.opt_state)
        np.testing.assert_allclose([g, d], [1e-3 * cosine(t), 4e-3 * cosine(t)], rtol=1e-5)


def test_conv_gans_train_on_digits_and_mnist1d(tmp_path):
    no_probes = {"norms": {"every": 0}, "activations": {"every": 0}}  # test_gan_probes runs them
    res = jaxdyn.run({**GAN, "study": {"seeds": 2}, "probes": no_probes}, out=tmp_path / "digits", progress=False,
                     summary=False)
    assert (res.members.diverged_at == -1).all()
    assert {"final_modes", "final_confidence"} <= set(res.members.columns)  # scored by the digits classifier
    one_d = {**GAN, "data": {"name": "mnist1d"}, "study": {"seeds": 1},
             "probes": no_probes,
             "gan": {**GAN["gan"], "generator": {"kind": "upconv", "channels": [8, 8, 8], "out_activation": "none"},
                     "discriminator": {"kind": "cnn"}}}
    res = jaxdyn.run(one_d, out=tmp_path / "mnist1d", progress=False, summary=False)
    assert (res.members.diverged_at == -1).all()
