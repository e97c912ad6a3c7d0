"""Probe numbers against closed forms and numpy, and the degenerate cases that must come out
NaN or inf rather than a made-up 0 or 1.

The gradient noise scale is checked on McCandlish et al.'s setting reduced to one line:
linear regression at w = 0, b = 0 with x ~ N(0, I_d), y = a x₀ + N(0, s²). The
per-example gradient of ½(w·x + b − y)² there is −y (x, 1), so G = −a e₀,
|G|² = a², and tr Σ = E[y²|x|²] + E[y²] − |G|² = (3a² + s²) + d (a² + s²) − a²
(x₀ contributes E[y² x₀²] = 3a² + s², the other d − 1 inputs and the bias E[y²] each).
With a = 0.1, s = 1, d = 20: tr Σ = 21.22 and B_simple = 2122; the plain |ḡ|² of a
batch of 256 has mean a² + tr Σ / 256, which gives ≈ 228 instead.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdyn.data import Dataset
from jaxdyn.models import MLP
from jaxdyn.models.linear import Linear
from jaxdyn.optim import FAMILIES
from jaxdyn.probes import PROBES, ProbeContext
from jaxdyn.probes.gradient_noise import GradientNoiseOptions, gradient_moments, noise_statistics
from jaxdyn.probes.loss_slices import filter_normalised
from jaxdyn.probes.ntk import cosine
from jaxdyn.probes.similarity import CKAOptions, cka_from_grams, cka_pairs, grams
from jaxdyn.tasks.supervised import Seeds, SupervisedTask

from conftest import member_arrays

A, S, D, BATCH = 0.1, 1.0, 20, 256
TRACE = (3 * A**2 + S**2) + D * (A**2 + S**2) - A**2
B_SIMPLE = TRACE / A**2  # 2122


def solo(task, family="sgd", seed=0, **hp):
    seeds, hparams = member_arrays(family, [seed], [seed], **hp)
    return task.init(Seeds(*(jnp.asarray(s[0]) for s in seeds)), {k: v[0] for k, v in hparams.items()})


def regression_task():
    """The issue's linear regression, its weights and bias at zero (sgd, learning rate 0)."""
    task = SupervisedTask(Linear(1, "zeros"), FAMILIES["sgd"], 8, (D,), loss="mse", n_classes=0)
    return task, solo(task, learning_rate=0.0)


def issue_batches(m: int, seed: int = 0):
    """``m`` independent probe batches: x ``[m, 256, D]``, y ``[m, 256]`` (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, BATCH, D)).astype(np.float32)
    return x, (A * x[..., 0] + S * rng.normal(size=(m, BATCH))).astype(np.float32)


def probe_fn(name, task, state, params0=None, **options):
    """``(x, y) -> metrics`` of probe ``name`` for ONE member ``state``."""
    ctx = ProbeContext(task, PROBES[name].options(**options), None, "identity")
    return lambda x, y: PROBES[name].fn(ctx.bind(state, state.params if params0 is None else params0, x, y))


estimate = jax.jit(jax.vmap(lambda g: noise_statistics(*gradient_moments(lambda c: c, g))))


def ratio_of_means(trace: np.ndarray, sq_norm: np.ndarray) -> tuple[float, float]:
    """mean(tr Σ̂) / mean(|G|²̂) and its standard error (delta method). Each is unbiased, so the
    ratio of their means is consistent; the mean of per-batch ratios is not even defined, since
    a batch's |G|²̂ can be ≤ 0 (its ratio is then inf)."""
    t, q = np.asarray(trace, np.float64), np.asarray(sq_norm, np.float64)
    r = t.mean() / q.mean()
    rel_var = (np.var(t, ddof=1) / t.mean()**2 + np.var(q, ddof=1) / q.mean()**2
               - 2 * np.cov(t, q)[0, 1] / (t.mean() * q.mean())) / len(t)
    return r, r * np.sqrt(rel_var)


def test_noise_scale_recovers_the_closed_form_from_numpy_gradients():
    x, y = issue_batches(2048)
    g = -y[..., None] * np.concatenate([x, np.ones_like(x[..., :1])], -1)  # per-example gradients at 0
    out = {k: np.asarray(v, np.float64) for k, v in estimate(jnp.asarray(g)).items()}
    g64 = g[:4].astype(np.float64)  # the estimates themselves, batch by batch
    var = g64.var(1, ddof=1).sum(-1)
    np.testing.assert_allclose(out["grad_noise_trace"][:4], var, rtol=1e-5)
    np.testing.assert_allclose(out["grad_sq_norm"][:4], (g64.mean(1)**2).sum(-1) - var / BATCH, rtol=1e-4, atol=1e-7)
    ratio, se = ratio_of_means(out["grad_noise_trace"], out["grad_sq_norm"])
    assert se < 0.12 * B_SIMPLE and abs(ratio - B_SIMPLE) < 4 * se, (ratio, se)
    biased = out["grad_noise_trace"].mean() / (g.astype(np.float64).mean(1)**2).sum(-1).mean()
    np.testing.assert_allclose(biased, TRACE / (A**2 + TRACE / BATCH), rtol=0.05)  # ≈ 228: what the fix removes
    # Some batches cannot resolve G at all: their raw scale is inf, as documented.
    low = out["grad_sq_norm"] <= 0
    assert low.any() and np.all(np.isposinf(out["grad_noise_scale"][low]))
    assert np.all(np.isfinite(out["grad_noise_scale"][~low]))


def test_the_probe_on_a_linear_model_matches_numpy_gradients_and_the_closed_form():
    task, state = regression_task()
    x, y = issue_batches(1024, seed=1)
    out = jax.jit(jax.vmap(probe_fn("gradient_noise", task, state)))(x, y)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    g = -y[..., None] * np.concatenate([x, np.ones_like(x[..., :1])], -1)
    want = {k: np.asarray(v, np.float64) for k, v in estimate(jnp.asarray(g[:8])).items()}
    for key in ("grad_noise_trace", "grad_sq_norm", "gsnr"):
        np.testing.assert_allclose(out[key][:8], want[key], rtol=1e-4, atol=1e-8)
    ratio, se = ratio_of_means(out["grad_noise_trace"], out["grad_sq_norm"])
    assert se < 0.2 * B_SIMPLE and abs(ratio - B_SIMPLE) < 4 * se, (ratio, se)
    # GSNR: only w₀ carries signal, a² / Var(y x₀) = a² / (3a² + s² − a²), averaged over D + 1 parameters.
    gsnr = A**2 / (2 * A**2 + S**2) / (D + 1)
    assert abs(out["gsnr"].mean() - gsnr) < 0.25 * gsnr  # the old mean of ḡ² / v: ≈ 9x this (1/256 too much)


def test_a_zero_mean_gradient_gives_inf_and_no_gradient_gives_nan():
    task, state = regression_task()
    x, y = issue_batches(1)
    run = jax.jit(probe_fn("gradient_noise", task, state))
    # Each example twice, with opposite targets: the per-example gradients cancel exactly in pairs.
    sym = run(np.concatenate([x[0], x[0]]), np.concatenate([y[0], -y[0]]))
    assert float(sym["grad_sq_norm"]) < 0 and float(sym["grad_noise_trace"]) > 0
    assert np.isposinf(sym["grad_noise_scale"])
    np.testing.assert_allclose(sym["gsnr"], -1 / (2 * BATCH), rtol=1e-3)  # ḡ = 0: all that is left is −1/B
    # Zero targets at zero weights: every per-example gradient is 0: 0/0 everywhere.
    none = run(x[0], np.zeros_like(y[0]))
    assert float(none["grad_noise_trace"]) == 0 and float(none["grad_sq_norm"]) == 0
    assert np.isnan(none["grad_noise_scale"]) and np.isnan(none["gsnr"])
    # A gradient without noise: B_simple = 0, and no parameter varies, so GSNR is undefined.
    same = estimate(jnp.full((1, 10, 3), 0.5, jnp.float32))
    assert float(same["grad_noise_scale"][0]) == 0 and np.isnan(same["gsnr"][0])


@pytest.mark.parametrize("chunk", [1, 7, 16, 300])
def test_variance_is_stable_under_a_large_common_offset(chunk):
    rng = np.random.default_rng(3)
    g = (1e4 + rng.normal(size=(300, 8))).astype(np.float32)  # 300: chunks of 7 and 16 leave a tail
    n, mean, m2 = jax.jit(lambda a: gradient_moments(lambda c: c, a, chunk))(jnp.asarray(g))
    g64 = g.astype(np.float64)
    assert float(n) == 300
    np.testing.assert_allclose(np.asarray(m2) / 299, g64.var(0, ddof=1), rtol=2e-4)
    np.testing.assert_allclose(mean, g64.mean(0), rtol=1e-7)
    naive = (np.square(g).sum(0) - 300 * np.square(g.mean(0))) / 299  # float32: cancels to noise
    assert np.max(np.abs(naive / g64.var(0, ddof=1) - 1)) > 0.1


def test_gradient_noise_matches_numpy_on_a_tiny_mlp():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(40, 5)), jnp.float32)  # 40: two chunks of 16 and a tail of 8
    y = jnp.asarray(np.where(rng.uniform(size=40) < 0.8, 0, rng.integers(1, 3, 40)), jnp.int32)  # mostly class 0: |G| ≫ 0
    task = SupervisedTask(MLP((4,), 3, "tanh"), FAMILIES["adam"], 8, (5,), n_classes=3)
    state = solo(task, "adam")
    out = jax.jit(probe_fn("gradient_noise", task, state))(x, y)

    def example_loss(params, xi, yi):  # cross-entropy of one example, written out
        logits = jnp.tanh(xi @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"]) @ params["head"]["kernel"]
        return -jax.nn.log_softmax(logits + params["head"]["bias"])[yi]

    g = jax.jit(jax.vmap(lambda xi, yi: ravel_pytree(jax.grad(example_loss)(state.params, xi, yi))[0]))(x, y)
    g = np.asarray(g, np.float64)
    mean, var = g.mean(0), g.var(0, ddof=1)
    sq_norm = (mean**2).sum() - var.sum() / 40
    assert sq_norm > 0.1 * (mean**2).sum()  # a finite scale to compare
    np.testing.assert_allclose(out["grad_noise_trace"], var.sum(), rtol=1e-4)
    np.testing.assert_allclose(out["grad_sq_norm"], sq_norm, rtol=1e-3)
    np.testing.assert_allclose(out["grad_noise_scale"], var.sum() / sq_norm, rtol=1e-3)
    varies = var > 0
    np.testing.assert_allclose(out["gsnr"], np.mean(mean[varies]**2 / var[varies] - 1 / 40), rtol=1e-3)
    assert GradientNoiseOptions().min_batch()[0] == 2


# -- undefined ratios: NaN (0/0) or inf (x/0), never a made-up 0 or 1 ------------------------

X = jnp.asarray(np.random.default_rng(1).normal(size=(16, 5)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(2).integers(0, 3, 16), jnp.int32)


def zero_mlp(head_bias=None):
    """An MLP with ``init = "zeros"``: hidden features exactly 0, logits the head's bias for every example."""
    task = SupervisedTask(MLP((6,), 3, "relu", "zeros"), FAMILIES["sgd"], 8, (5,), n_classes=3)
    states = [solo(task, seed=s) for s in (0, 1)]
    if head_bias is not None:
        states = [s._replace(params={**s.params, "head": {**s.params["head"], "bias": jnp.asarray(head_bias)}})
                  for s in states]
    return task, states


@pytest.mark.parametrize("head_bias", [None, [0.3, -1.7, 2.1]], ids=["zero_logits", "constant_logits"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_layers_constant_over_the_batch_is_nan(debiased, head_bias):
    task, states = zero_mlp(head_bias)
    ctx = ProbeContext(task, CKAOptions(debiased=debiased), None, "relu")
    pieces = [jax.jit(lambda s: grams(ctx.bind(s, s.params, X, Y)))(s) for s in states]
    stacked = jax.tree.map(lambda *g: np.stack([np.asarray(v) for v in g]), *pieces)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy 0/0 on the host either
        rows = cka_pairs(ctx, stacked, None, X, Y, [(0, 1)], ctx.options)
    assert {layer for *_, layer, _ in rows} == {"hidden_0", "head"}
    assert all(np.isnan(value) for *_, value in rows), rows


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_from_grams_is_nan_when_either_gram_centres_to_zero(debiased):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(12, 3))
    constant = np.full((12, 3), 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(cka_from_grams(a @ a.T, constant @ constant.T, debiased))
        assert np.isnan(cka_from_grams(np.zeros((12, 12)), np.zeros((12, 12)), debiased))
        assert abs(cka_from_grams(a @ a.T, a @ a.T, debiased) - 1) < 1e-12


def test_weight_spectra_of_a_zero_kernel():
    task, states = zero_mlp()
    out = jax.jit(probe_fn("weights", task, states[0], min_tail=2))(X, Y)
    for layer in ("hidden_0", "head"):
        assert float(out["spectral_norm"][layer]) == 0.0
        assert np.isnan(out["stable_rank"][layer]) and np.isnan(out["esd_alpha"][layer])


def test_distance_and_update_ratios_from_a_zero_start():
    task, states = zero_mlp()
    state = states[0]
    out = jax.jit(probe_fn("norms", task, state, state.params))(X, Y)
    assert all(np.isnan(out["rel_dist_from_init"][k]) for k in ("hidden_0", "head", ""))  # 0 / 0
    moved = state._replace(params=jax.tree.map(lambda w: w + 0.1, state.params))
    out = jax.jit(probe_fn("norms", task, moved, state.params))(X, Y)
    assert all(np.isposinf(out["rel_dist_from_init"][k]) for k in ("hidden_0", "head", ""))  # x / 0
    # The step's update ratio: no update of zero weights is 0/0; a first step away from them is x/0.
    tracked = SupervisedTask(task.model, task.optimizer, 8, (5,), n_classes=3, track_updates=True)
    step = jax.jit(lambda s: tracked.step(s, Dataset(X, Y, X, Y))[1])
    still, first = step(solo(tracked, learning_rate=0.0)), step(solo(tracked, learning_rate=0.1))
    assert np.isnan(still["update_ratio"]["head"]) and np.isposinf(first["update_ratio"]["head"])
    assert np.isnan(still["update_ratio"]["hidden_0"])  # relu(0) = 0 passes no gradient: it never moves


def test_ntk_cosines_of_a_zero_kernel_are_nan():
    assert np.isnan(cosine(jnp.zeros((3, 3)), jnp.eye(3)))
    np.testing.assert_allclose(cosine(jnp.eye(3), 2 * jnp.eye(3)), 1.0, rtol=1e-6)
    task, state = regression_task()
    x, y = issue_batches(1)
    run = jax.jit(probe_fn("ntk", task, state, examples=6))
    out = run(x[0], np.zeros_like(y[0]))  # zero targets: YYᵀ = 0
    assert np.isnan(out["ntk_alignment"]) and np.isfinite(out["ntk_distance"])
    # A linear model's NTK is (x xᵀ + 1) whatever its weights: alignment with y against numpy.
    out = run(x[0], y[0])
    theta = x[0, :6].astype(np.float64) @ x[0, :6].T.astype(np.float64) + 1
    yy = np.outer(y[0, :6], y[0, :6])
    np.testing.assert_allclose(out["ntk_alignment"], (theta * yy).sum() / np.linalg.norm(theta) / np.linalg.norm(yy),
                               rtol=1e-5)
    np.testing.assert_allclose(out["ntk_distance"], 0.0, atol=1e-6)


def test_filter_normalised_direction_of_a_zero_filter_is_zero():
    w = jnp.asarray(np.random.default_rng(5).normal(size=(4, 3)), jnp.float32).at[:, 1].set(0.0)
    d = filter_normalised({"dense": {"kernel": w}}, jax.random.PRNGKey(0))["dense"]["kernel"]
    assert np.all(np.isfinite(d)) and not np.any(d[:, 1])
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), np.linalg.norm(w, axis=0), rtol=1e-6)
