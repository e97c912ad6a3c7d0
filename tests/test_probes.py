"""Probes against independent references on tiny models: jax.hessian and numpy, explicit norms
and forward passes, and a population member against its solo state."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxdyn
from jaxdyn import population as pop
from jaxdyn import streams
from jaxdyn.config import load_config
from jaxdyn.data import Dataset
from jaxdyn.models import MLP
from jaxdyn.optim import FAMILIES
from jaxdyn.probes import PROBES, ProbeContext, ProbesConfig
from jaxdyn.probes.activations import ActivationsOptions, histogram
from jaxdyn.probes.base import HISTOGRAMS, ProbeView
from jaxdyn.probes.hessian import HessianOptions
from jaxdyn.probes.run import ProbeSet
from jaxdyn.streams import Stream
from jaxdyn.study import expand
from jaxdyn.tasks.supervised import Seeds, SupervisedTask

from conftest import member_arrays

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(32, 5)), jnp.float32)
Y = jnp.asarray(RNG.integers(0, 3, 32), jnp.int32)


def tiny(activation="tanh", family="adam", hidden=(4,), track=False):
    return SupervisedTask(MLP(hidden, 3, activation), FAMILIES[family], 8, (5,), n_classes=3, track_updates=track)


def solo(task, family="adam", seed=0, **hp):
    seeds, hparams = member_arrays(family, [seed], [seed], **hp)
    return task.init(Seeds(*(jnp.asarray(s[0]) for s in seeds)), {k: v[0] for k, v in hparams.items()})


def run_probe(name, task, state, params0=None, **options):
    opts = PROBES[name].options(**options)
    ctx = ProbeContext(task, opts, None, task.model.activation)
    run = jax.jit(lambda s, p0, x, y: PROBES[name].fn(ctx.bind(s, p0, x, y)))
    return run(state, state.params if params0 is None else params0, X, Y)


def trained(task, steps=3, seed=0):
    state = solo(task, seed=seed)
    data = Dataset(X, Y, X, Y)
    for _ in range(steps):
        state, _ = task.step(state, data)
    return state


def full_hessian(task, state):
    flat, unravel = ravel_pytree(state.params)
    f = lambda v: task.probe_loss(unravel(v), state, X, Y)
    return np.asarray(jax.jit(jax.hessian(f))(flat), np.float64)


def test_top_eigenvalues_match_the_full_hessian():
    task = tiny()
    state = trained(task)
    h = full_hessian(task, state)
    exact = np.sort(np.linalg.eigvalsh(h))[::-1]
    out = run_probe("hessian", task, state, k=3, iters=h.shape[0], preconditioned=False)
    got = [out["sharpness"], out["hessian_eig_2"], out["hessian_eig_3"]]
    np.testing.assert_allclose(got, exact[:3], rtol=1e-3)
    # A short run already pins the top one down.
    np.testing.assert_allclose(run_probe("hessian", task, state, iters=20)["sharpness"], exact[0], rtol=1e-3)


def test_hutchinson_trace_is_within_its_standard_error():
    task = tiny()
    state = trained(task)
    exact = np.trace(full_hessian(task, state))
    out = run_probe("hessian", task, state, trace_samples=400, preconditioned=False)
    assert out["hessian_trace_stderr"] > 0
    assert abs(out["hessian_trace"] - exact) < 3 * out["hessian_trace_stderr"], (out["hessian_trace"], exact)


def test_preconditioned_sharpness_is_the_top_eigenvalue_of_p_inverse_h():
    task = tiny()
    state = trained(task, steps=5)
    h = full_hessian(task, state)
    adam = state.opt_state.inner_state[0]
    nu = np.asarray(ravel_pytree(adam.nu)[0], np.float64) / (1 - 0.999 ** int(adam.count))
    p = np.sqrt(nu) + 1e-8
    exact = np.max(np.linalg.eigvals(np.diag(1 / p) @ h).real)
    out = run_probe("hessian", task, state, iters=h.shape[0])
    np.testing.assert_allclose(out["preconditioned_sharpness"], exact, rtol=1e-3)
    assert "preconditioned_sharpness" not in run_probe("hessian", tiny(family="sgd"), solo(tiny(family="sgd"), "sgd"))


def test_layer_blocks_are_the_top_eigenvalues_of_the_diagonal_blocks():
    task = tiny()
    state = trained(task)
    h = full_hessian(task, state)
    out = run_probe("hessian", task, state, iters=h.shape[0], blocks=True, preconditioned=False)
    for layer in state.params:
        mask = ravel_pytree({n: jax.tree.map(lambda a, on=(n == layer): jnp.full_like(a, on), sub)
                             for n, sub in state.params.items()})[0]
        idx = np.flatnonzero(np.asarray(mask))
        np.testing.assert_allclose(out["sharpness"][layer], np.linalg.eigvalsh(h[np.ix_(idx, idx)])[-1], rtol=1e-3)
    np.testing.assert_allclose(out["sharpness"][""], np.linalg.eigvalsh(h)[-1], rtol=1e-3)


def test_norms_match_explicit_computations():
    task = tiny(activation="relu")
    state = trained(task)
    params0 = solo(task).params
    out = run_probe("norms", task, state, params0)

    def explicit_loss(params):  # cross-entropy written out, not through the task
        h = jnp.maximum(X @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"], 0)
        logits = h @ params["head"]["kernel"] + params["head"]["bias"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), Y])

    grads = jax.grad(explicit_loss)(state.params)
    flat = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)]).astype(np.float64)
    for layer in ("hidden_0", "head"):
        w, w0, g = flat(state.params[layer]), flat(params0[layer]), flat(grads[layer])
        np.testing.assert_allclose(out["weight_norm"][layer], np.linalg.norm(w), rtol=1e-5)
        np.testing.assert_allclose(out["grad_norm"][layer], np.linalg.norm(g), rtol=1e-4)
        np.testing.assert_allclose(out["dist_from_init"][layer], np.linalg.norm(w - w0), rtol=1e-4)
        np.testing.assert_allclose(out["rel_dist_from_init"][layer], np.linalg.norm(w - w0) / np.linalg.norm(w0),
                                   rtol=1e-4)
    np.testing.assert_allclose(out["weight_norm"][""], np.linalg.norm(flat(state.params)), rtol=1e-5)


def test_update_norms_come_from_the_step_itself():
    task = tiny(track=True)
    state = trained(task, steps=2)
    new, metrics = task.step(state, Dataset(X, Y, X, Y))
    for layer in ("hidden_0", "head"):
        delta = ravel_pytree(jax.tree.map(lambda a, b: a - b, new.params[layer], state.params[layer]))[0]
        np.testing.assert_allclose(metrics["update_norm"][layer], np.linalg.norm(delta), rtol=1e-4)
        np.testing.assert_allclose(metrics["update_ratio"][layer],
                                   np.linalg.norm(delta) / np.linalg.norm(ravel_pytree(state.params[layer])[0]),
                                   rtol=1e-4)
    assert "update_norm" not in tiny().step(state, Dataset(X, Y, X, Y))[1]  # only while the probe is on


def test_dead_units_and_histograms_on_constructed_values():
    task = tiny(activation="relu", hidden=(3,))
    state = solo(task)
    params = jax.tree.map(lambda a: a, state.params)
    params["hidden_0"] = {"kernel": jnp.array([[1.0, -1.0, 0.5]] * 5), "bias": jnp.array([0.0, -100.0, 0.0])}
    state = state._replace(params=params)
    out = run_probe("activations", task, state, bins=10, hist_range=2.0)
    h = np.maximum(np.asarray(X) @ np.asarray(params["hidden_0"]["kernel"]) + np.asarray(params["hidden_0"]["bias"]), 0)
    assert (h[:, 1] == 0).all() and (h[:, 0] > 0).any() and (h[:, 2] > 0).any()
    np.testing.assert_allclose(out["dead_frac"]["hidden_0"], 1 / 3)  # unit 1 never fires
    np.testing.assert_allclose(out["act_mean"]["hidden_0"], h.mean(), rtol=1e-5)
    np.testing.assert_allclose(out["act_std"]["hidden_0"], h.std(), rtol=1e-5)
    expected = np.histogram(np.clip(h, -2, 2 - 1e-6), bins=10, range=(-2, 2))[0] / h.size
    np.testing.assert_allclose(out[HISTOGRAMS]["act_hist"]["hidden_0"], expected, atol=1e-7)
    assert "saturated_frac" not in out  # relu layers have no saturation; the head has no nonlinearity
    np.testing.assert_allclose(histogram(jnp.array([-9.0, 0.1, 9.0]), 4, 1.0), [1 / 3, 0, 1 / 3, 1 / 3])


def test_saturated_fraction_of_tanh_units():
    task = tiny(activation="tanh", hidden=(6,))
    state = solo(task, init_scale=8.0)
    out = run_probe("activations", task, state, saturation=0.95)
    p = state.params["hidden_0"]
    h = np.tanh(np.asarray(X) @ np.asarray(p["kernel"]) + np.asarray(p["bias"]))
    expected = (np.abs(h) > 0.95).mean()
    assert 0.1 < expected < 1
    np.testing.assert_allclose(out["saturated_frac"]["hidden_0"], expected, rtol=1e-5)
    assert "dead_frac" not in out


def test_a_population_member_equals_its_solo_probe(mesh):
    task = tiny(track=True)
    seeds, hp = member_arrays("adam", [0, 1, 2, 3], [0, 1, 2, 3], learning_rate=[1e-3, 3e-3, 1e-2, 3e-2])
    data = pop.replicate(Dataset(X, Y, X, Y), mesh)
    state = pop.make_train_chunk(task, 4, 2, 2, mesh)(pop.init_population(task, seeds, hp, mesh), data)[0]
    params0 = pop.init_population(task, seeds, hp, mesh).params
    cfg = ProbesConfig(batch_size=32, tables=(("norms", PROBES["norms"].options()),
                                              ("activations", PROBES["activations"].options()),
                                              ("hessian", HessianOptions(k=2, trace_samples=4)),
                                              ("gradient_noise", PROBES["gradient_noise"].options()),
                                              ("weights", PROBES["weights"].options())))
    rows, hist, _ = ProbeSet(cfg, (ProbeView(task, None, "tanh"),), mesh).measure(state, params0, data, 1, True, 4, 0, np.arange(4))
    names = ("norms", "activations", "hessian", "gradient_noise", "weights")
    contexts = {name: ProbeContext(task, dict(cfg.tables)[name], None, "tanh") for name in names}
    solo = {name: jax.jit(lambda s, p0, x, y, name=name: PROBES[name].fn(contexts[name].bind(s, p0, x, y)))
            for name in names}  # one compile per probe, reused for every member
    for i in range(4):
        member = jax.tree.map(lambda a: a[i], state)
        for name in names:
            ref = solo[name](member, jax.tree.map(lambda a: a[i], params0), X, Y)
            ref.pop(HISTOGRAMS, None)
            for metric, value in ref.items():
                for layer, v in (value.items() if isinstance(value, dict) else [("", value)]):
                    if metric == "grad_noise_scale_ema":
                        continue
                    got = rows[(rows.member == i) & (rows.metric == metric) & (rows.layer == layer)].value
                    # A converged residual ||Hv - λv|| is rounding noise (1e-7 .. 5e-6 here): the two
                    # programs agree on its size, not its digits.
                    tol = {"rtol": 0, "atol": 1e-5} if "residual" in metric else {"rtol": 2e-4, "atol": 1e-6}
                    np.testing.assert_allclose(got.to_numpy(), [v], **tol, err_msg=f"{metric} {layer}")
    assert set(hist.member) == {0, 1, 2, 3} and np.allclose(hist.groupby(["member", "layer"]).value.sum(), 1)


def test_probe_rows_in_a_run_and_turning_probes_off(tmp_path):
    base = {"study": {"seeds": 2}, "model": {"hidden": [16]},
            "train": {"steps": 40, "batch_size": 32, "chunk_steps": 20, "log_every": 20}}
    res = jaxdyn.run({**base, "probes": {"batch_size": 64, "hessian": {"every": 2}}}, out=tmp_path / "a",
                     progress=False, summary=False)
    m = res.metrics
    assert set(m[m.metric == "weight_norm"].layer) == {"", "hidden_0", "head"}
    assert sorted(m[m.metric == "sharpness"].step.unique()) == [0, 40]  # the initial state, then every 2 chunks
    assert sorted(m[m.metric == "grad_norm"].step.unique()) == [0, 20, 40]
    assert (m[m.metric == "train_loss"].layer == "").all()
    assert (tmp_path / "a" / "histograms.parquet").exists()
    off = jaxdyn.run({**base, "probes": {"norms": {"every": 0}, "activations": {"every": 0}}}, out=tmp_path / "b",
                     progress=False, summary=False)
    assert set(off.metrics.metric) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert not (tmp_path / "b" / "histograms.parquet").exists()


@pytest.mark.parametrize("probes, message", [
    ({"hesian": {}}, "unknown probe [probes.hesian]; did you mean 'hessian'?"),
    ({"hessian": {"kk": 2}}, "probes.hessian.kk is not an option of probe 'hessian'; it takes: every=1, k=1"),
    ({"hessian": {"k": 0}}, "probes.hessian.k = 0: ask for at least the top eigenvalue"),
    ({"hessian": {"k": 5, "iters": 3}}, "probes.hessian.iters = 3: Lanczos needs at least k = 5"),
    ({"norms": {"every": -1}}, "probes.norms.every = -1"),
    ({"batch_size": -1}, "probes.batch_size = -1: must be >= 1"),
    ({"batch_size": 4001}, "probes.batch_size = 4001 is larger than the training set (4000 examples); use at most "
                           "4000, or 0 for the default"),
    ({"activations": {"saturation": 1.5}}, "probes.activations.saturation = 1.5"),
])
def test_bad_probe_settings(probes, message):
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({"probes": probes}))
    assert message in str(err.value)


def test_options_dataclasses_cover_the_registry():
    assert {"norms", "activations", "hessian"} <= set(PROBES)
    assert ActivationsOptions().every == 1 and PROBES["hessian"].cost == "expensive"


def test_gradient_noise_scale_and_gsnr_match_explicit_per_example_gradients():
    task = tiny()
    state = trained(task)
    out = run_probe("gradient_noise", task, state)

    def example_loss(params, xi, yi):  # cross-entropy of one example, written out
        h = jnp.tanh(xi @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"])
        logits = h @ params["head"]["kernel"] + params["head"]["bias"]
        return -jax.nn.log_softmax(logits)[yi]

    g = jax.vmap(lambda xi, yi: ravel_pytree(jax.grad(example_loss)(state.params, xi, yi))[0])(X, Y)
    g = np.asarray(g, np.float64)
    mean, var = g.mean(0), g.var(0, ddof=1)
    np.testing.assert_allclose(out["grad_noise_trace"], var.sum(), rtol=1e-4)
    sq_norm = (mean ** 2).sum() - var.sum() / 32  # unbiased |G|² (McCandlish et al. 2018, App. A.1)
    np.testing.assert_allclose(out["grad_sq_norm"], sq_norm, rtol=1e-4)
    # On 32 examples the unbiased |G|² can be <= 0; the scale is then +inf, not a negative number.
    np.testing.assert_allclose(out["grad_noise_scale"], var.sum() / sq_norm if sq_norm > 0 else np.inf, rtol=1e-4)
    varies = var > 0
    np.testing.assert_allclose(out["gsnr"], np.mean(mean[varies] ** 2 / var[varies] - 1 / 32), rtol=1e-3)


def test_gradient_noise_ema_over_evaluations_and_after_a_resume(tmp_path, mesh):
    cfg = {"study": {"seeds": 2}, "model": {"hidden": [16]},
           "train": {"steps": 60, "batch_size": 32, "chunk_steps": 20, "log_every": 20},
           "probes": {"batch_size": 64, "gradient_noise": {"ema": 0.5}}}
    m = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False).metrics
    wide = m[m.layer == ""].pivot_table(index=["member", "step"], columns="metric", values="value")
    for _, member in wide.groupby(level="member"):
        num = den = None
        for (_, _), row in member.iterrows():
            num = row.grad_noise_trace if num is None else 0.5 * num + 0.5 * row.grad_noise_trace
            den = row.grad_sq_norm if den is None else 0.5 * den + 0.5 * row.grad_sq_norm
            np.testing.assert_allclose(row.grad_noise_scale_ema, num / den, rtol=1e-5)
    # A resumed ProbeSet rebuilds the averages from the rows already written.
    cohort = expand(load_config(cfg))[0]
    task = cohort.task()
    fresh, resumed = cohort.probes(task, mesh), cohort.probes(task, mesh)
    first = m[m.step <= 40]
    resumed.resume(first)
    members = np.array([0, 1])
    last = wide.xs(60, level="step")
    args = ("grad_noise_scale_ema", members, last.grad_noise_trace.to_numpy(), last.grad_sq_norm.to_numpy(), 0.5)
    np.testing.assert_allclose(resumed._smooth(*args), last.grad_noise_scale_ema.to_numpy(), rtol=1e-5)
    assert not np.allclose(fresh._smooth(*args), last.grad_noise_scale_ema.to_numpy())


def test_weight_spectra_match_numpy():
    task = tiny(hidden=(7,))
    state = trained(task)
    out = run_probe("weights", task, state, min_tail=2)
    for layer in ("hidden_0", "head"):
        w = np.asarray(state.params[layer]["kernel"], np.float64)
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(out["spectral_norm"][layer], s[0], rtol=1e-4)
        np.testing.assert_allclose(out["stable_rank"][layer], (s ** 2).sum() / s[0] ** 2, rtol=1e-4)
        np.testing.assert_allclose(out["esd_alpha"][layer], reference_alpha(s ** 2, 2), rtol=1e-3)


def reference_alpha(lam: np.ndarray, min_tail: int) -> float:
    """Clauset et al.'s fit written as loops: every candidate xmin, its MLE alpha and KS distance."""
    lam = np.sort(lam)
    best = (np.inf, np.nan)
    for j in range(len(lam)):
        tail = lam[j:]
        if len(tail) < min_tail or lam[j] <= 0:
            continue
        alpha = 1 + len(tail) / np.sum(np.log(tail / lam[j]))
        fit = 1 - (tail / lam[j]) ** (1 - alpha)
        emp_lo, emp_hi = np.arange(len(tail)) / len(tail), np.arange(1, len(tail) + 1) / len(tail)
        ks = max(np.abs(fit - emp_lo).max(), np.abs(fit - emp_hi).max())
        if ks < best[0]:
            best = (ks, alpha)
    return best[1]


def test_power_law_exponent_recovers_a_pareto_tail():
    from jaxdyn.probes.weights import power_law_alpha

    rng = np.random.default_rng(3)
    for true_alpha in (2.5, 4.0):
        lam = (1 - rng.uniform(size=400)) ** (-1 / (true_alpha - 1))  # Pareto with density ∝ λ^-α, λ >= 1
        got = float(power_law_alpha(jnp.asarray(lam, jnp.float32), 5))
        np.testing.assert_allclose(got, reference_alpha(lam, 5), rtol=1e-3)
        assert abs(got - true_alpha) < 0.35, (got, true_alpha)


def test_ntk_matches_j_jt_from_explicit_jacobians():
    task = tiny()
    state, params0 = trained(task, steps=4), solo(task).params
    full = run_probe("ntk", task, state, params0, examples=6)

    def explicit(params):
        flat, unravel = ravel_pytree(params)
        f = lambda v: task.model.apply({"params": unravel(v)}, X[:6], train=False).reshape(-1)  # [6 * 3]
        jac = np.asarray(jax.jacfwd(f)(flat), np.float64).reshape(6, 3, -1)
        return np.einsum("icp,jcp->ij", jac, jac)

    theta, theta0 = explicit(state.params), explicit(params0)
    onehot = np.eye(3)[np.asarray(Y[:6])]
    cos = lambda a, b: (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(full["ntk_trace"], np.trace(theta), rtol=1e-4)
    np.testing.assert_allclose(full["ntk_distance"], 1 - cos(theta, theta0), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(full["ntk_alignment"], cos(theta, onehot @ onehot.T), rtol=1e-4)
    assert full["ntk_distance"] > 0
    chunked = run_probe("ntk", task, state, params0, examples=6, mode="chunked")
    for key in full:
        np.testing.assert_allclose(chunked[key], full[key], rtol=1e-4, atol=1e-6)
    trace = run_probe("ntk", task, state, params0, examples=6, mode="trace")
    assert set(trace) == {"ntk_trace"}
    np.testing.assert_allclose(trace["ntk_trace"], np.trace(theta), rtol=1e-4)


def feature_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s linear CKA in feature space: ‖YᵀX‖² / (‖XᵀX‖ ‖YᵀY‖) on centred columns."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_cka_matches_the_feature_space_formula_and_its_invariances():
    from jaxdyn.probes.similarity import cka_from_grams

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 12))
    b[:, :8] += 2 * a  # related representations of different widths
    gram = lambda f: f @ f.T
    np.testing.assert_allclose(cka_from_grams(gram(a), gram(b)), feature_cka(a, b), rtol=1e-10)
    q = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    for debiased in (False, True):
        assert abs(cka_from_grams(gram(a), gram(a), debiased) - 1) < 1e-10
        base = cka_from_grams(gram(a), gram(b), debiased)
        np.testing.assert_allclose(cka_from_grams(gram(a @ q), gram(b), debiased), base, rtol=1e-8)  # rotation
        np.testing.assert_allclose(cka_from_grams(gram(3.5 * a), gram(b), debiased), base, rtol=1e-8)  # scale
    noise = rng.normal(size=(50, 8))
    assert cka_from_grams(gram(a), gram(noise), True) < cka_from_grams(gram(a), gram(noise))  # debiasing


def test_lmc_barrier_is_zero_between_identical_members_and_matches_hand_losses():
    from jaxdyn.probes.similarity import LMCOptions, lmc_pairs

    task = tiny(activation="relu")
    states = [trained(task, steps=3), trained(task, steps=3, seed=1)]
    stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(v) for v in leaves]), states[0], states[0], states[1])
    ctx = ProbeContext(task, LMCOptions(alphas=5), None, "relu")
    rows = lmc_pairs(ctx, None, stacked, X, Y, [(0, 1), (0, 2)], LMCOptions(alphas=5))
    barriers = {(a, b): v for a, b, metric, _, v in rows if metric == "lmc_barrier"}
    assert barriers[(0, 1)] == 0.0
    pa, pb = states[0].params, states[1].params

    def hand_loss(params):
        h = jnp.maximum(X @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"], 0)
        logits = h @ params["head"]["kernel"] + params["head"]["bias"]
        return float(-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), Y]))

    alphas = np.linspace(0, 1, 5)
    losses = [hand_loss(jax.tree.map(lambda a, b, t=t: (1 - t) * a + t * b, pa, pb)) for t in alphas]
    path = [v for a, b, metric, layer, v in rows if (a, b) == (0, 2) and metric == "lmc_path_loss"]
    np.testing.assert_allclose(path, losses, rtol=1e-4)
    np.testing.assert_allclose(barriers[(0, 2)], max(np.array(losses) - ((1 - alphas) * losses[0] + alphas * losses[-1])),
                               rtol=1e-4, atol=1e-6)


def test_pairs_within_settings_and_against_a_reference(tmp_path):
    from jaxdyn.probes.similarity import choose_pairs

    cfg = {"study": {"seeds": 3}, "model": {"hidden": [16]},
           "train": {"steps": 20, "batch_size": 32, "chunk_steps": 20, "log_every": 20},
           "probes": {"batch_size": 64, "cka": {}, "lmc_barrier": {"pairs": "reference", "alphas": 3}},
           "grid": {"optim.learning_rate": [1e-3, 1e-2]}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    pairs = __import__("pandas").read_parquet(tmp_path / "run" / "pairs.parquet")
    assert sorted(pairs.step.unique()) == [0, 20]  # the initial state and the end: the same pairs
    for _, at_step in pairs.groupby("step"):
        cka = at_step[(at_step.metric == "cka") & (at_step.layer == "hidden_0")]
        assert sorted(zip(cka.member_a, cka.member_b)) == [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]
        lmc = at_step[at_step.metric == "lmc_barrier"]
        assert sorted(zip(lmc.member_a, lmc.member_b)) == [(0, 1), (0, 2), (3, 4), (3, 5)]
    assert list(pairs.columns) == ["cohort", "member_a", "member_b", "step", "metric", "layer", "value"]
    assert choose_pairs(res.members[["member", "cohort", "init_seed", "data_seed", "dropout_seed", "learning_rate"]],
                        "reference") == [(0, 1), (0, 2), (3, 4), (3, 5)]


def test_loss_slices_along_filter_normalised_directions():
    from jaxdyn.probes.loss_slices import DIRECTION_TAG, filter_normalised

    task = tiny(activation="relu")
    state = trained(task)
    out = run_probe("loss_slices", task, state, points=5, span=0.5, dims=2)
    key = streams.key(state.data_key, Stream.PROBE, DIRECTION_TAG)
    d1 = filter_normalised(state.params, jax.random.fold_in(key, 1))
    d2 = filter_normalised(state.params, jax.random.fold_in(key, 2))
    for layer in ("hidden_0", "head"):  # each filter (output unit) has its weight's norm; biases are not moved
        np.testing.assert_allclose(np.linalg.norm(d1[layer]["kernel"], axis=0),
                                   np.linalg.norm(state.params[layer]["kernel"], axis=0), rtol=1e-5)
        assert not np.any(d1[layer]["bias"])

    def hand(a, b):
        p = jax.tree.map(lambda w, u, v: w + a * u + b * v, state.params, d1, d2)
        h = jnp.maximum(X @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"], 0)
        logits = h @ p["head"]["kernel"] + p["head"]["bias"]
        return float(-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), Y]))

    np.testing.assert_allclose(out["loss_slice_1d"]["0"], hand(0, 0), rtol=1e-5)
    np.testing.assert_allclose(out["loss_slice_1d"]["-0.5"], hand(-0.5, 0), rtol=1e-5)
    np.testing.assert_allclose(out["loss_slice_2d"]["0.25,-0.5"], hand(0.25, -0.5), rtol=1e-5)
    assert len(out["loss_slice_2d"]) == 25


def test_cka_rows_from_member_grams_equal_the_feature_formula():
    from jaxdyn.probes.similarity import CKAOptions, cka_pairs, grams

    def layer_outputs(task, s, x):  # the model's own sown outputs, read with plain flax
        _, sown = task.model.apply({"params": s.params}, x, train=False, mutable=["intermediates"])
        return {name: values[-1] for name, values in sown["intermediates"].items()}

    task = tiny(activation="relu", hidden=(6,))
    states = [trained(task, seed=s) for s in (0, 1, 2)]
    for debiased in (False, True):
        ctx = ProbeContext(task, CKAOptions(debiased=debiased), None, "relu")
        pieces = [jax.jit(lambda s: grams(ctx.bind(s, s.params, X, Y)))(s) for s in states]
        stacked = jax.tree.map(lambda *g: np.stack([np.asarray(v) for v in g]), *pieces)
        rows = cka_pairs(ctx, stacked, None, X, Y, [(0, 1), (1, 2)], ctx.options)
        feats = [{k: np.asarray(v, np.float64) for k, v in layer_outputs(task, s, X).items()} for s in states]
        for a, b, metric, layer, value in rows:
            if not debiased:
                np.testing.assert_allclose(value, feature_cka(feats[a][layer], feats[b][layer]), rtol=1e-4)
            else:
                from jaxdyn.probes.similarity import cka_from_grams
                fa, fb = feats[a][layer], feats[b][layer]
                np.testing.assert_allclose(value, cka_from_grams(fa @ fa.T, fb @ fb.T, True), rtol=1e-3)


EVERY_PROBE = {"batch_size": 32, "hessian": {"k": 2, "iters": 8, "trace_samples": 2, "blocks": True},
               "gradient_noise": {}, "ntk": {"examples": 4, "mode": "chunked"}, "weights": {"min_tail": 2},
               "loss_slices": {"points": 3}, "cka": {"pairs": "reference"}, "lmc_barrier": {"alphas": 3}}


@pytest.mark.parametrize("model", [
    {"kind": "cnn", "channels": [4, 4], "kernels": [3, 3], "strides": [2, 2], "padding": [1, 1], "norm": "batch"},
    {"kind": "rnn", "cell": "lstm", "hidden_size": 8},
], ids=["cnn_batchnorm", "lstm"])
def test_every_probe_runs_on_every_family(tmp_path, model):
    cfg = {"study": {"seeds": 2}, "model": model, "data": {"n_train": 200},
           "train": {"steps": 10, "batch_size": 16, "chunk_steps": 10, "log_every": 10}, "probes": EVERY_PROBE}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    m = res.metrics
    for metric in ("weight_norm", "update_ratio", "act_mean", "sharpness", "hessian_trace", "grad_noise_scale",
                   "ntk_alignment", "spectral_norm", "esd_alpha", "loss_slice_1d"):
        values = m[m.metric == metric].value
        assert len(values) and np.isfinite(values).any(), metric
    kernels = set(m[m.metric == "spectral_norm"].layer)
    assert ("conv_0" in kernels) if model["kind"] == "cnn" else any(k.startswith("layer_0/") for k in kernels)
    pairs = __import__("pandas").read_parquet(tmp_path / "run" / "pairs.parquet")
    assert {"cka", "lmc_barrier"} <= set(pairs.metric)
