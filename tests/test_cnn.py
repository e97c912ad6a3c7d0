"""CNN model kind: the two convolution forms against each other and against nn.Conv,
shapes (the MNIST-1D ConvBase), pooling against NumPy, sown intermediates, config
errors, BatchNorm and member dropout."""

import dataclasses

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdyn.errors import ConfigError
from jaxdyn.models.cnn import CNN, CNNConfig, ConvLayer, conv_sizes
from jaxdyn.models.conv import conv_einsum, conv_lax, pads, patches, resolve_impl

ATOL = 1e-5
B = 4


def build(input_shape, n_out=3, use_dropout=False, **fields):
    cfg = CNNConfig(**fields)
    cfg.check(input_shape)
    return CNN.from_config(cfg, input_shape, n_out, use_dropout)


def init(model, input_shape, seed=0):
    """Variables of ``model`` with NumPy-drawn params: the shapes of ``model.init`` without compiling it."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), jnp.zeros((B, *input_shape)))
    params = jax.tree.map(lambda a: a[0], random_params(shapes["params"], members=1, seed=seed))
    return {**shapes, "params": params}


def inputs(input_shape, seed=1, batch=B):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, *input_shape))


def random_params(shapes, members, seed=0):
    """NumPy draws for a params tree of ``shapes``, leaves ``[members, ...]``: no init to compile."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal((members, *s.shape)), jnp.float32), shapes)


# (input shape, fields): 1D and 2D, with and without a channel axis, strides,
# symmetric/"same"/"valid" padding, even kernels (asymmetric "same" pads).
GEOMETRIES = [
    ((40,), dict(channels=(5, 6, 4), kernels=(5, 3, 3), strides=(2, 2, 2), padding=(1, 1, 1))),
    ((17, 3), dict(channels=(4, 5), kernels=(4, 3), strides=(3, 1), padding="same")),
    ((17, 3), dict(channels=(4, 5), kernels=(2, 5), strides=(1, 2), padding="valid")),
    ((9, 8, 2), dict(channels=(3, 4), kernels=(3, 2), strides=(2, 1), padding=(0, 2))),
    ((9, 8, 2), dict(channels=(3, 4), kernels=(4, 3), strides=(2, 3), padding="same")),
    ((7, 6), dict(channels=(3,), kernels=(3,), strides=(1,), padding="valid", conv_dims=2)),
    ((12, 10, 2), dict(channels=(3, 4), kernels=(3, 3), strides=(1, 1), padding="same", pool="avg",
                       norm="layer", activation="leaky_relu", global_pool="max")),
]


@pytest.mark.parametrize("input_shape, fields", GEOMETRIES)
def test_einsum_and_lax_forms_agree_on_the_same_params(input_shape, fields):
    lax_model = build(input_shape, conv_impl="lax", hidden=(6,), **fields)
    einsum_model = build(input_shape, conv_impl="einsum", hidden=(6,), **fields)
    x = inputs(input_shape)
    shapes = jax.eval_shape(lax_model.init, jax.random.PRNGKey(0), x)["params"]
    assert jax.eval_shape(einsum_model.init, jax.random.PRNGKey(0), x)["params"] == shapes
    stacked = random_params(shapes, members=3)

    @jax.jit
    def outputs(stacked):
        member = jax.tree.map(lambda a: a[1], stacked)
        solo = [model.apply({"params": member}, x) for model in (lax_model, einsum_model)]
        population = [jax.vmap(lambda p, m=model: m.apply({"params": p}, x))(stacked)
                      for model in (lax_model, einsum_model)]
        return solo, population

    (solo_lax, solo_einsum), (by_lax, by_einsum) = outputs(stacked)
    chex.assert_trees_all_close(solo_einsum, solo_lax, atol=ATOL)
    chex.assert_trees_all_close(by_einsum, by_lax, atol=ATOL)
    chex.assert_trees_all_close(by_lax[1], solo_lax, atol=ATOL)
    assert not np.allclose(by_lax[0], by_lax[1])


@pytest.mark.parametrize("shape, window, strides, padding", [
    ((B, 11, 3), (3,), (2,), "same"),
    ((B, 11, 3), (4,), (3,), 1),
    ((B, 7, 6, 2), (2, 3), (1, 2), "valid"),
    ((B, 7, 6, 2), (4, 4), (2, 2), "same"),
    ((B, 7, 6, 2), (3, 3), (3, 1), 2),
])
def test_both_forms_match_flax_conv(shape, window, strides, padding):
    """nn.Conv, an independent reference, with the kernel our layer drew."""
    x = inputs(shape[1:])
    ours = ConvLayer(5, window, strides, padding, impl="lax")
    shapes = jax.eval_shape(ours.init, jax.random.PRNGKey(3), x)["params"]
    params = jax.tree.map(lambda a: a[0], random_params(shapes, members=1))
    variables = {"params": {**params, "bias": jnp.arange(5.0)}}
    flax_padding = padding.upper() if isinstance(padding, str) else [(padding, padding)] * len(window)
    reference = nn.Conv(5, window, strides, flax_padding).apply(variables, x)
    chex.assert_trees_all_close(ours.apply(variables, x), reference, atol=ATOL)
    einsum = ConvLayer(5, window, strides, padding, impl="einsum")
    chex.assert_trees_all_close(einsum.apply(variables, x), reference, atol=ATOL)


def test_patches_are_conv_general_dilated_patches_reordered():
    """lax's patches are channel-major ([C, *window]); ours window-major ([*window, C])."""
    x = inputs((6, 5, 3))
    window, strides, padding = (3, 2), (2, 1), ((1, 1), (0, 1))
    ours = patches(x, window, strides, padding)
    theirs = jax.lax.conv_general_dilated_patches(x, window, strides, padding,
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    theirs = theirs.reshape(*theirs.shape[:-1], 3, 6).swapaxes(-1, -2).reshape(theirs.shape)
    chex.assert_trees_all_close(ours, theirs, atol=0)


def test_conv_functions_agree_under_vmap_over_kernels():
    x = inputs((12, 4))
    kernels = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 4, 5))
    padding = (pads("same", 12, 3, 2),)
    by_lax = jax.vmap(lambda k: conv_lax(x, k, (2,), padding))(kernels)
    by_einsum = jax.vmap(lambda k: conv_einsum(x, k, (2,), padding))(kernels)
    chex.assert_trees_all_close(by_einsum, by_lax, atol=ATOL)
    assert by_lax.shape == (3, B, 6, 5)


def test_auto_picks_einsum_on_cpu():
    assert resolve_impl("auto") == "einsum"  # on every backend: measured on CPU and on an H200
    assert resolve_impl("lax") == "lax"


def test_mnist1d_convbase_shapes():
    model = build((40,), n_out=10)  # the defaults are the ConvBase
    params = init(model, (40,))["params"]
    assert params["head"]["kernel"].shape == (125, 10)
    assert [params[f"conv_{i}"]["kernel"].shape for i in range(3)] == [(5, 1, 25), (3, 25, 25), (3, 25, 25)]
    assert conv_sizes(CNNConfig(), (40,)) == [(19,), (10,), (5,)]
    assert model.apply({"params": params}, inputs((40,))).shape == (B, 10)


@pytest.mark.parametrize("pool, global_pool", [("max", "mean"), ("avg", "max"), ("max", "none")])
def test_2d_pooling_shapes(pool, global_pool):
    model = build((8, 8, 1), n_out=7, channels=(4, 6), kernels=(3, 3), strides=(1, 1), padding="same",
                  pool=pool, global_pool=global_pool, hidden=(5,))
    variables = init(model, (8, 8, 1))
    logits, state = model.apply(variables, inputs((8, 8, 1)), mutable=["intermediates"])
    assert logits.shape == (B, 7)
    assert state["intermediates"]["conv_0"][0].shape == (B, 4, 4, 4)
    assert state["intermediates"]["conv_1"][0].shape == (B, 2, 2, 6)
    features = 6 if global_pool != "none" else 2 * 2 * 6
    assert variables["params"]["hidden_0"]["kernel"].shape == (features, 5)


NUMPY_POOLS = {"max": np.max, "avg": np.mean, "mean": np.mean}


def identity_conv_params(model, input_shape):
    """Params that make a 1x1 conv_0 the identity and the head read its features as they are."""
    params = init(model, input_shape)["params"]
    kernel, head = params["conv_0"]["kernel"], params["head"]["kernel"]
    return {"conv_0": {"kernel": jnp.eye(kernel.shape[-1]).reshape(kernel.shape),
                       "bias": jnp.zeros(kernel.shape[-1])},
            "head": {"kernel": jnp.eye(head.shape[0]), "bias": jnp.zeros(head.shape[0])}}


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("global_pool", ["mean", "max"])
def test_pool_values_match_numpy(pool, global_pool):
    """A 1x1 identity conv with identity activation leaves the pools alone: 5x4 -> 2x2 (floor)."""
    shape = (5, 4, 2)
    model = build(shape, n_out=2, channels=(2,), kernels=(1,), strides=(1,), padding=(0,),
                  activation="identity", pool=pool, global_pool=global_pool)
    params = identity_conv_params(model, shape)
    x = np.asarray(inputs(shape))
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
    windows = x[:, :4, :4].reshape(B, 2, 2, 2, 2, 2)  # [B, i, di, j, dj, C]
    pooled = NUMPY_POOLS[pool](windows, axis=(2, 4))
    np.testing.assert_allclose(state["intermediates"]["conv_0"][0], pooled, atol=ATOL)
    np.testing.assert_allclose(logits, NUMPY_POOLS[global_pool](pooled, axis=(1, 2)), atol=ATOL)


def test_1d_pool_values_match_numpy():
    model = build((7,), n_out=2, channels=(1,), kernels=(1,), strides=(1,), padding=(0,),
                  activation="identity", pool="max", pool_size=3, global_pool="none")
    params = identity_conv_params(model, (7,))
    x = np.asarray(inputs((7,)))
    logits = model.apply({"params": params}, x)
    np.testing.assert_allclose(logits.reshape(B, 2), x[:, :6].reshape(B, 2, 3).max(-1), atol=ATOL)


def test_intermediates_named_and_only_when_collected():
    model = build((20, 2), n_out=3, channels=(4, 5), kernels=(3, 3), strides=(2, 1), padding="same",
                  hidden=(6, 7))
    variables = init(model, (20, 2))
    x = inputs((20, 2))
    logits, state = model.apply(variables, x, mutable=["intermediates"])
    inter = {name: value[0] for name, value in state["intermediates"].items()}
    shapes = {name: value.shape for name, value in inter.items()}
    assert shapes == {"conv_0": (B, 10, 4), "conv_1": (B, 10, 5), "hidden_0": (B, 6), "hidden_1": (B, 7),
                      "head": (B, 3)}
    chex.assert_trees_all_close(inter["head"], logits, atol=0)
    assert isinstance(model.apply(variables, x), jax.Array)
    _, state = model.apply(variables, x, mutable=["batch_stats"])
    assert "intermediates" not in state
    assert "intermediates" not in variables
    # Under vmap over members (as probes run), each name gains the member axis.
    stacked = random_params(variables["params"], members=3)
    _, state = jax.vmap(lambda p: model.apply({"params": p}, x, mutable=["intermediates"]))(stacked)
    assert state["intermediates"]["conv_1"][0].shape == (3, B, 10, 5)


CHECK_CASES = [
    (dict(kernels=(5, 3)), (40,), ["model.kernels", "model.channels", "[5, 3]"]),
    (dict(strides=(2, 2, 2, 2)), (40,), ["model.strides"]),
    (dict(padding=(1, 1)), (40,), ["model.padding"]),
    (dict(kernels=(5, 3, 7)), (12,), ["model.kernels", "conv layer 2", "kernel 7", "length 3 into length 0"]),
    (dict(kernels=(3,), channels=(4,), strides=(1,), padding="valid"), (4, 2, 1),
     ["conv layer 0", "size 4x2 into size 2x0"]),
    (dict(pool="max", pool_size=4), (40,), ["model.pool_size", "conv layer 1", "length 2 into length 0"]),
    (dict(pool="maximum"), (40,), ["model.pool", "'maximum'"]),
    (dict(global_pool="avg"), (40,), ["model.global_pool", "'avg'"]),
    (dict(padding="full"), (40,), ["model.padding", "'full'"]),
    (dict(padding=1.5), (40,), ["model.padding"]),
    (dict(kernels=(5, 0, 3)), (40,), ["model.kernels"]),
    (dict(channels=()), (40,), ["model.channels"]),
    (dict(conv_dims=2), (40,), ["model.conv_dims", "[40]"]),
    (dict(conv_dims=1), (8, 8, 1), ["model.conv_dims", "[8, 8, 1]"]),
    (dict(), (2, 8, 8, 1), ["model.conv_dims", "rank 4"]),
    (dict(conv_dims=3), (40,), ["model.conv_dims"]),
    (dict(conv_impl="cudnn"), (40,), ["model.conv_impl"]),
    (dict(norm="group"), (40,), ["model.norm"]),
    (dict(pool_size=0, pool="avg"), (40,), ["model.pool_size"]),
]


@pytest.mark.parametrize("fields, input_shape, words", CHECK_CASES)
def test_check_names_the_field(fields, input_shape, words):
    with pytest.raises(ConfigError) as err:
        CNNConfig(**fields).check(input_shape)
    for word in words:
        assert word in str(err.value)


def test_check_accepts_lists_from_toml():
    cfg = CNNConfig(channels=[4, 4], kernels=[3, 3], strides=[1, 2], padding=[1, 0])
    cfg.check((10,))
    assert CNN.from_config(cfg, (10,), 2, False).padding == (1, 0)


def test_batchnorm_eval_output_does_not_depend_on_the_batch():
    shape = (12, 2)
    model = build(shape, norm="batch", channels=(4,), kernels=(3,), strides=(1,), padding=(1,), hidden=(5,))
    variables = init(model, shape)
    assert set(variables["batch_stats"]) == {"conv_norm_0", "norm_0"}
    variables["batch_stats"] = jax.tree.map(  # nn.BatchNorm's initial statistics
        lambda s: jnp.zeros(s.shape), variables["batch_stats"])
    evaluate = jax.jit(lambda v, x: model.apply(v, x))
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    # One training call moves the running statistics away from their initial values.
    _, state = train(variables, inputs(shape, seed=5) * 3 + 1)
    variables = {**variables, **state}
    one, others = inputs(shape, seed=6, batch=1), inputs(shape, seed=7, batch=B - 1)
    batch_a = jnp.concatenate([one, others])
    batch_b = jnp.concatenate([one, others * 10 - 4])
    eval_a, eval_b = evaluate(variables, batch_a), evaluate(variables, batch_b)
    chex.assert_trees_all_close(eval_a[0], eval_b[0], atol=ATOL)
    chex.assert_trees_all_close(eval_a[0], evaluate(variables, one)[0], atol=ATOL)
    train_a, train_b = train(variables, batch_a)[0], train(variables, batch_b)[0]
    assert not np.allclose(train_a[0], train_b[0], atol=1e-3)  # the check above has teeth


def test_member_dropout():
    shape = (16,)
    fields = dict(channels=(8, 8), kernels=(3, 3), strides=(1, 2), padding="same", hidden=(6,))
    model, plain = build(shape, use_dropout=True, **fields), build(shape, use_dropout=False, **fields)
    variables, x = init(model, shape), inputs(shape)
    hparams = {"dropout": jnp.float32(0.5), "leaky_slope": jnp.float32(0.01)}

    @jax.jit
    def run(key):
        return model.apply(variables, x, train=True, hparams=hparams, rngs={"dropout": key})

    assert not np.allclose(run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1)))
    chex.assert_trees_all_equal(run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(0)))
    evaluated = jax.jit(lambda: model.apply(variables, x, hparams=hparams))()
    chex.assert_trees_all_close(evaluated, plain.apply(variables, x), atol=ATOL)


def test_config_is_hashable_and_frozen():
    cfg = CNNConfig()
    hash(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.pool = "max"
