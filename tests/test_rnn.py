"""The recurrent model against hand-written references on tiny shapes.

The references step flax's own cell (the same class, the params pulled out of the
model) through time in a Python loop, so they check the wiring (time axis, carry,
direction, stacking, readout, head) independently of ``nn.RNN``'s scan.
"""

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core before jax starts)

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdyn.errors import ConfigError
from jaxdyn.models.rnn import CELLS, RNN, RNNConfig

B, T, F, H, N_OUT = 3, 5, 2, 4, 7
ATOL = 1e-5


def make(input_shape=(T, F), use_dropout=False, **fields):
    cfg = RNNConfig(hidden_size=H, **fields)
    cfg.check(input_shape)
    model = RNN.from_config(cfg, input_shape, N_OUT, use_dropout)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, *input_shape))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    return model, params, x


def run_cell(cell_name, cell_params, x):
    """Outputs ``[B, T, H]`` of flax's cell stepped over ``x [B, T, F]`` from a zero carry."""
    cell = CELLS[cell_name](H)
    carry = cell.initialize_carry(jax.random.PRNGKey(0), x[:, 0].shape)
    ys = []
    for t in range(x.shape[1]):
        carry, y = cell.apply({"params": cell_params}, carry, x[:, t])
        ys.append(y)
    return jnp.stack(ys, axis=1)


def head(params, features):
    return features @ params["head"]["kernel"] + params["head"]["bias"]


def sown(model, params, x, **kwargs):
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"], **kwargs)
    return logits, {k: v[0] for k, v in state["intermediates"].items()}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_layer_last_equals_loop_over_flax_cell(cell):
    model, params, x = make(cell=cell)
    ys = run_cell(cell, params["layer_0"]["cell"], x)
    chex.assert_trees_all_close(model.apply({"params": params}, x), head(params, ys[:, -1]), atol=ATOL)


def test_elman_step_is_tanh_of_affine_maps():
    """Closed form for the simplest cell, so the loop reference itself is checked once."""
    model, params, x = make(cell="elman")
    p = params["layer_0"]["cell"]
    h = np.zeros((B, H), np.float32)
    for t in range(T):
        h = np.tanh(x[:, t] @ p["i"]["kernel"] + p["i"]["bias"] + h @ p["h"]["kernel"])
    chex.assert_trees_all_close(model.apply({"params": params}, x), head(params, h), atol=ATOL)


def test_scalar_steps_are_one_feature():
    """``[T]`` examples are T steps of one feature: the same as ``[T, 1]``."""
    model, params, x = make(input_shape=(T,))
    assert params["layer_0"]["cell"]["ir"]["kernel"].shape == (1, H)
    chex.assert_trees_all_close(model.apply({"params": params}, x),
                                model.apply({"params": params}, x[..., None]), atol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_backward_is_forward_loop_on_reversed_input(cell):
    model, params, x = make(cell=cell, bidirectional=True)
    logits, inter = sown(model, params, x)
    p = params["layer_0"]
    fwd = run_cell(cell, p["forward_rnn"]["cell"], x)
    bwd = run_cell(cell, p["backward_rnn"]["cell"], x[:, ::-1])[:, ::-1]  # back in input order
    # layout: [B, T, 2H], forward units first, both in input time order
    chex.assert_trees_all_close(inter["layer_0"], jnp.concatenate([fwd, bwd], -1), atol=ATOL)
    # "last": each direction's final state, forward at step T-1, backward at step 0
    chex.assert_trees_all_close(logits, head(params, jnp.concatenate([fwd[:, -1], bwd[:, 0]], -1)), atol=ATOL)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", ["last", "mean", "flatten"])
def test_readout_feeds_head(kind, bidirectional):
    model, params, x = make(readout=kind, bidirectional=bidirectional)
    logits, inter = sown(model, params, x)
    y, d = inter["layer_0"], H * (2 if bidirectional else 1)
    expected = {"last": (y[:, -1, :H] if not bidirectional else
                         jnp.concatenate([y[:, -1, :H], y[:, 0, H:]], -1)),
                "mean": y.mean(1), "flatten": y.reshape(B, T * d)}[kind]
    assert params["head"]["kernel"].shape == ((T * d if kind == "flatten" else d), N_OUT)
    chex.assert_trees_all_close(logits, head(params, expected), atol=ATOL)


def test_mnist1d_paper_gru_head():
    """Greydanus (2020): bidirectional GRU, 6 hidden, 40 steps -> 480 features -> 10 classes."""
    model = RNN.from_config(RNNConfig(cell="gru", hidden_size=6, bidirectional=True, readout="flatten"),
                            (40,), 10, False)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 40)))["params"]
    assert shapes["head"]["kernel"].shape == (480, 10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_layer_reads_previous_layer(bidirectional):
    model, params, x = make(layers=2, cell="gru", bidirectional=bidirectional)
    d = H * (2 if bidirectional else 1)
    p1 = params["layer_1"]["forward_rnn"] if bidirectional else params["layer_1"]
    assert params["layer_0"]["cell" if not bidirectional else "forward_rnn"] is not None
    for gate in ("ir", "iz", "in"):
        assert p1["cell"][gate]["kernel"].shape == (d, H)
        assert p1["cell"]["h" + gate[1]]["kernel"].shape == (H, H)
    _, inter = sown(model, params, x)
    # layer_1's forward units are the cell stepped over layer_0's whole output sequence
    chex.assert_trees_all_close(inter["layer_1"][..., :H], run_cell("gru", p1["cell"], inter["layer_0"]),
                                atol=ATOL)


def test_recurrent_kernels_keep_orthogonal_init():
    """``init`` sets the input kernels only; recurrent kernels stay orthogonal."""
    _, params, _ = make(cell="gru", init="zeros")
    p = params["layer_0"]["cell"]
    assert not np.any(p["ir"]["kernel"])
    chex.assert_trees_all_close(p["hr"]["kernel"].T @ p["hr"]["kernel"], jnp.eye(H), atol=1e-5)


def test_weight_leaves_are_kernels():
    """L1/L2 and init_scale act on leaves named ``kernel``: every matrix must be one."""
    _, params, _ = make(cell="lstm", layers=2, bidirectional=True)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        assert (path[-1].key == "kernel") == (leaf.ndim == 2), jax.tree_util.keystr(path)


def test_vmap_over_members_matches_each_member():
    model, _, x = make(cell="lstm", bidirectional=True)
    members = [model.init(jax.random.PRNGKey(seed), x)["params"] for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    apply = jax.jit(lambda p: model.apply({"params": p}, x))  # one compile serves every member
    batched = jax.jit(jax.vmap(apply))(stacked)
    for i, member in enumerate(members):
        chex.assert_trees_all_close(batched[i], apply(member), atol=ATOL)
    assert not np.allclose(batched[0], batched[1])


def test_intermediates_named_and_only_when_collected():
    model, params, x = make(layers=2, cell="elman")
    logits, inter = sown(model, params, x)
    assert sorted(inter) == ["head", "layer_0", "layer_1"]
    assert inter["layer_0"].shape == inter["layer_1"].shape == (B, T, H)
    chex.assert_trees_all_close(inter["head"], logits, atol=0)
    plain = model.apply({"params": params}, x)
    assert isinstance(plain, jax.Array)
    _, state = model.apply({"params": params}, x, mutable=["batch_stats"])
    assert "intermediates" not in state


@pytest.mark.parametrize("fields, shape, field", [
    ({"cell": "transformer"}, (T,), "model.cell"),
    ({"cell": "GRU"}, (T,), "model.cell"),
    ({"readout": "final"}, (T,), "model.readout"),
    ({"init": "lecun"}, (T,), "model.init"),
    ({"hidden_size": 0}, (T,), "model.hidden_size"),
    ({"hidden_size": -3}, (T,), "model.hidden_size"),
    ({"layers": 0}, (T,), "model.layers"),
    ({}, (), "model.kind"),
    ({}, (8, 8, 1), "model.kind"),
    ({}, (0,), "model.kind"),
])
def test_check_names_field_value_and_fix(fields, shape, field):
    cfg = RNNConfig(**fields)
    with pytest.raises(ConfigError) as err:
        cfg.check(shape)
    text = str(err.value)
    assert field in text
    bad = next(iter(fields.values())) if fields else list(shape)
    assert repr(bad) in text or str(bad) in text
    assert any(hint in text for hint in ("did you mean", "valid:", "e.g.", "use "))


@pytest.mark.parametrize("shape", [(T,), (T, F)])
def test_check_accepts_sequences(shape):
    RNNConfig().check(shape)


def test_dropout_masks_by_key_and_only_in_training():
    model, params, x = make(use_dropout=True, cell="elman", readout="mean")
    hp = {"dropout": jnp.float32(0.5), "leaky_slope": jnp.float32(0.01)}

    def train(seed):
        return sown(model, params, x, train=True, hparams=hp, rngs={"dropout": jax.random.PRNGKey(seed)})

    (a, inter), (b, _), (a_again, _) = train(1), train(2), train(1)
    assert not np.allclose(a, b)
    chex.assert_trees_all_close(a, a_again, atol=0)
    # tanh outputs are never exactly 0, so the zeros are the dropped units: about half
    assert 0.35 < float(jnp.mean(inter["layer_0"] == 0)) < 0.65
    plain, _, _ = make(use_dropout=False, cell="elman", readout="mean")
    chex.assert_trees_all_close(model.apply({"params": params}, x, train=False, hparams=hp),
                                plain.apply({"params": params}, x), atol=0)
