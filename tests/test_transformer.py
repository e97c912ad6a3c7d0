"""The transformer against a plain numpy forward pass of the same weights, its causal mask,
and the attention probe's statistics against direct computations on constructed maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdyn
from jaxdyn.config import load_config
from jaxdyn.models import build_model
from jaxdyn.models.transformer import TransformerConfig, sinusoidal
from jaxdyn.probes.attention import attention_stats
from jaxdyn.study import expand


def layer_norm(x, p, eps=1e-6):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def reference(params, x, cfg: TransformerConfig, vocab: int):
    """The forward pass written out in numpy (float64), from the parameter tree alone."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if vocab:
        h = p["embed"]["embedding"][x.astype(int)]
    else:
        h = (x[..., None] if x.ndim == 2 else x) @ p["embed"]["kernel"] + p["embed"]["bias"]
    if cfg.readout == "cls":
        h = np.concatenate([np.broadcast_to(p["cls"], (h.shape[0], 1, cfg.d_model)), h], axis=1)
    t = h.shape[1]
    h = h + (p["pos"] if cfg.positions == "learned" else sinusoidal(t, cfg.d_model))
    norm = (lambda z, name: layer_norm(z, p[name])) if cfg.norm == "layer" else (lambda z, name: z)
    maps = []
    for i in range(cfg.layers):
        a = p[f"attn_{i}"]
        z = norm(h, f"ln_attn_{i}")
        q, k, v = (np.einsum("btd,dhe->bthe", z, a[n]["kernel"]) + a[n]["bias"] for n in ("query", "key", "value"))
        scores = np.einsum("bthe,bshe->bhts", q, k) / np.sqrt(cfg.d_model // cfg.heads)
        if cfg.causal:
            scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
        w = softmax(scores)
        maps.append(w)
        mixed = np.einsum("bhts,bshe->bthe", w, v)
        h = h + np.einsum("bthe,hed->btd", mixed, a["out"]["kernel"]) + a["out"]["bias"]
        z = norm(h, f"ln_mlp_{i}")
        inner = np.maximum(z @ p[f"mlp_in_{i}"]["kernel"] + p[f"mlp_in_{i}"]["bias"], 0)
        h = h + inner @ p[f"mlp_out_{i}"]["kernel"] + p[f"mlp_out_{i}"]["bias"]
    h = norm(h, "ln_final")
    pooled = {"last": h[:, -1], "mean": h.mean(1), "cls": h[:, 0]}[cfg.readout]
    return pooled @ p["head"]["kernel"] + p["head"]["bias"], maps


CASES = {
    "tokens-learned-last": (TransformerConfig(layers=2, d_model=16, heads=4), 11, (6,)),
    "tokens-causal-cls-sinusoidal": (TransformerConfig(layers=1, d_model=12, heads=3, causal=True, readout="cls",
                                                       positions="sinusoidal"), 5, (7,)),
    "continuous-mean-no-norm": (TransformerConfig(layers=2, d_model=8, heads=2, norm="none", readout="mean"), 0, (9, 3)),
    "continuous-scalar-per-position": (TransformerConfig(layers=1, d_model=8, heads=1, causal=True), 0, (10,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_pass_equals_a_numpy_reference(name):
    cfg, vocab, shape = CASES[name]
    model = build_model(cfg, shape, 4, vocab=vocab)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, vocab, (3, *shape)) if vocab else rng.normal(size=(3, *shape))).astype(np.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.asarray(x))["params"]
    # Away from init's zero biases and unit LayerNorm scales, so every term is checked.
    params = jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)
    out, sown = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=["attention"]))(params, jnp.asarray(x))
    want, maps = reference(params, x, cfg, vocab)
    np.testing.assert_allclose(np.asarray(out), want, rtol=2e-4, atol=2e-5)
    for i, w in enumerate(maps):
        np.testing.assert_allclose(np.asarray(sown["attention"][f"attn_{i}"]), w, atol=2e-5)


def test_a_causal_model_never_reads_later_tokens():
    cfg = TransformerConfig(layers=2, d_model=16, heads=2, causal=True)
    model = build_model(cfg, (8,), 3, vocab=10)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 10, (4, 8)), jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
    blocks = jax.jit(lambda inp: model.apply({"params": params}, inp, mutable=["intermediates"])[1]["intermediates"]
                     ["block_1"][0])
    base = blocks(x)
    for t in range(7):
        changed = blocks(x.at[:, t + 1:].set((x[:, t + 1:] + 3) % 10))
        np.testing.assert_array_equal(np.asarray(changed[:, : t + 1]), np.asarray(base[:, : t + 1]))
        assert not np.allclose(np.asarray(changed[:, t + 1:]), np.asarray(base[:, t + 1:]))
    # Without the mask, earlier positions do read later tokens.
    free = build_model(TransformerConfig(layers=2, d_model=16, heads=2), (8,), 3, vocab=10)
    out = jax.jit(lambda inp: free.apply({"params": params}, inp, mutable=["intermediates"])[1]["intermediates"]
                  ["block_1"][0])
    assert not np.allclose(np.asarray(out(x.at[:, 7].set((x[:, 7] + 3) % 10))[:, 0]), np.asarray(out(x)[:, 0]))


def test_attention_statistics_on_constructed_maps():
    t = 6
    uniform = jnp.full((2, 3, t, t), 1.0 / t)
    one_hot = jnp.broadcast_to(jax.nn.one_hot(jnp.zeros(t, int), t), (2, 3, t, t))  # every query on key 0
    diagonal = jnp.broadcast_to(jnp.eye(t), (2, 3, t, t))
    stats = {name: attention_stats(w) for name, w in (("uniform", uniform), ("first", one_hot), ("self", diagonal))}
    np.testing.assert_allclose(stats["uniform"]["attn_entropy"], np.log(t), rtol=1e-6)
    np.testing.assert_allclose(stats["uniform"]["attn_self"], 1 / t, rtol=1e-6)
    np.testing.assert_allclose(stats["first"]["attn_entropy"], 0.0, atol=1e-7)
    np.testing.assert_allclose(stats["first"]["attn_first"], 1.0)
    np.testing.assert_allclose(stats["first"]["attn_self"], 1 / t)  # only query 0 sits on its own key
    np.testing.assert_allclose(stats["self"]["attn_self"], 1.0)
    causal = jnp.tril(jnp.ones((t, t))) / jnp.arange(1, t + 1)[:, None]  # uniform over the allowed keys
    np.testing.assert_allclose(attention_stats(causal[None, None])["attn_entropy"],
                               np.mean(np.log(np.arange(1, t + 1))), rtol=1e-6)


def test_the_attention_probe_in_a_run(tmp_path):
    res = jaxdyn.run({"study": {"seeds": 2}, "data": {"name": "mnist1d", "n_train": 512},
                      "model": {"kind": "transformer", "d_model": 16, "heads": 2, "readout": "mean"},
                      "train": {"steps": 40, "chunk_steps": 20, "log_every": 20},
                      "probes": {"attention": {"every": 1, "maps": 2}, "norms": {"every": 0},
                                 "activations": {"every": 0}}},
                     out=tmp_path / "run", progress=False, summary=False)
    entropy = res.frame("attn_entropy", layer="attn_0/h1").value.to_numpy()
    # 2 members at steps 0, 20 and 40
    assert entropy.shape == (6,) and np.all((entropy >= 0) & (entropy <= np.log(40) + 1e-5))
    import pandas as pd

    maps = pd.read_parquet(res.run_dir / "histograms.parquet").query("metric == 'attn_map'")
    assert set(maps.layer) == {"attn_0/example_0", "attn_0/example_1"}
    rows = maps[(maps.member == 0) & (maps.step == 40) & (maps.layer == "attn_0/example_0")].value.to_numpy()
    np.testing.assert_allclose(rows.reshape(2, 40, 40).sum(-1), 1.0, rtol=1e-5)  # each query's weights sum to 1


@pytest.mark.parametrize("model, message", [
    ({"d_model": 10, "heads": 4}, "model.d_model = 10 does not divide into model.heads = 4"),
    ({"readout": "first"}, "model.readout = 'first' is not known"),
    ({"norm": "batch"}, "model.norm = 'batch' is not known"),
])
def test_bad_transformer_fields_name_the_field(model, message):
    with pytest.raises(jaxdyn.ConfigError, match=message):
        expand(load_config({"model": {"kind": "transformer", **model}}))


def test_images_are_refused_and_so_is_the_attention_probe_without_attention(tmp_path):
    with pytest.raises(jaxdyn.ConfigError, match="reads sequences"):
        jaxdyn.run({"data": {"name": "digits"}, "model": {"kind": "transformer"}}, out=tmp_path / "a",
                   progress=False, summary=False)
    with pytest.raises(jaxdyn.ConfigError, match="this model sows no attention weights"):
        jaxdyn.run({"probes": {"attention": {"every": 1}}}, out=tmp_path / "b", progress=False, summary=False)
