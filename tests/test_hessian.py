"""The hessian probe's eigensolver (block Lanczos) against numpy's eigvalsh: repeated
eigenvalues of Kronecker-structured matrices, a near-degenerate pair, an exhausted Krylov
space, the NaN for an unconverged value, and the probe itself against the full jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdyn.models import Linear
from jaxdyn.optim import FAMILIES
from jaxdyn.probes import PROBES, ProbeContext
from jaxdyn.probes.hessian import GUARD, HessianOptions, top_eigenpairs, unconverged
from jaxdyn.tasks.supervised import Seeds, SupervisedTask

from conftest import member_arrays

TOL = HessianOptions().tol


def symmetric(eigenvalues, seed=0):
    """A symmetric matrix with these eigenvalues and random eigenvectors, float64."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    return (q * np.asarray(eigenvalues)) @ q.T


def solve(a, k, iters=HessianOptions().iters, tol=TOL, seed=1):
    """``top_eigenpairs`` of the explicit matrix ``a`` from a random start block of k + GUARD rows."""
    a = jnp.asarray(a, jnp.float32)
    start = jax.random.normal(jax.random.PRNGKey(seed), (k + GUARD, a.shape[0]), jnp.float32)
    values, residuals = jax.jit(top_eigenpairs, static_argnums=(0, 2, 3, 4))(
        lambda v: a @ v, start, iters, k, tol)
    return np.asarray(values, np.float64), np.asarray(residuals, np.float64)


@pytest.mark.parametrize("copies, k", [(2, 2), (3, 3), (10, 3), (10, 10)])
def test_every_copy_of_a_repeated_eigenvalue_is_found(copies, k):
    # I_m ⊗ B: each eigenvalue of B is m-fold, as with a C-class squared-loss head.
    g = np.random.default_rng(copies).normal(size=(40, 40))
    a = np.kron(np.eye(copies), g @ g.T / 40)
    exact = np.linalg.eigvalsh(a)[::-1][:k]
    np.testing.assert_allclose(exact, exact[0], rtol=1e-12)  # k copies of the top
    values, residuals = solve(a, k)
    np.testing.assert_allclose(values, exact, rtol=0, atol=1e-5 * exact[0])
    assert (residuals < 1e-5 * exact[0]).all(), residuals


def test_a_near_degenerate_pair_is_resolved():
    spectrum = np.concatenate([[1.0, 1.0 - 1e-3], np.random.default_rng(3).uniform(-0.5, 0.8, 198)])
    values, residuals = solve(symmetric(spectrum), k=2)
    np.testing.assert_allclose(values, [1.0, 1.0 - 1e-3], rtol=0, atol=1e-5)
    assert (residuals < 1e-4).all(), residuals


def test_negative_eigenvalues_and_a_dominant_negative_end():
    # A saddle: the top eigenvalue is small beside the most negative one.
    spectrum = np.concatenate([[0.3, 0.2], np.linspace(-5.0, 0.0, 298)])
    values, residuals = solve(symmetric(spectrum, seed=4), k=2, iters=30)
    np.testing.assert_allclose(values, [0.3, 0.2], rtol=0, atol=1e-4)
    assert (residuals < TOL * 5.0).all(), residuals  # converged relative to ‖H‖ = 5, not to 0.3


@pytest.mark.parametrize("dim, k", [(7, 3), (3, 3), (12, 1)])
def test_a_krylov_space_past_the_dimension_is_capped_and_deflated(dim, k):
    # iters · (k + GUARD) >> dim (and for dim 3 the block alone is larger than the space):
    # the exhausted space must give the exact eigenvalues, no NaN from dividing by ~0.
    a = symmetric(np.random.default_rng(dim).uniform(-1, 2, dim), seed=dim)
    values, residuals = solve(a, k, iters=20)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(a)[::-1][:k], rtol=0, atol=1e-5)
    assert (residuals < 1e-5).all(), residuals


def test_an_exhausted_space_of_a_low_rank_operator():
    # Rank 2: the Krylov space of any start block stops growing after one step.
    u = np.random.default_rng(5).normal(size=(30, 2))
    a = u @ np.diag([3.0, 1.0]) @ u.T
    values, _ = solve(a, k=3)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(a)[::-1][:3], rtol=0, atol=1e-5 * values[0])


def test_an_unconverged_value_is_nan_and_its_residual_says_why():
    spectrum = np.linspace(0.0, 1.0, 200)  # no gap: one block step (k + GUARD vectors) cannot converge
    values, residuals = solve(symmetric(spectrum, seed=6), k=1, iters=1)
    assert np.isnan(values[0])
    assert residuals[0] > TOL * spectrum.max()
    # Enough steps converge it.
    values, residuals = solve(symmetric(spectrum, seed=6), k=1, iters=60)
    assert residuals[0] <= TOL * values[0] and abs(values[0] - 1.0) < TOL


def test_vmapped_over_members_equals_one_by_one():
    # The probe runner vmaps the probe over members; the small eigenproblem maps one by one inside.
    mats = jnp.asarray(np.stack([symmetric(np.linspace(-1, s, 50), seed=s) for s in (1, 2)]), jnp.float32)
    start = jax.random.normal(jax.random.PRNGKey(0), (2 + GUARD, 50), jnp.float32)
    run = lambda a: top_eigenpairs(lambda v: a @ v, start, 20, 2, TOL)
    batched = jax.jit(jax.vmap(run))(mats)
    for i in range(2):
        np.testing.assert_allclose(batched[0][i], jax.jit(run)(mats[i])[0], rtol=1e-5)
        np.testing.assert_allclose(batched[0][i], [float(i + 1), float(i + 1) - (i + 2) / 49], rtol=1e-4)


# The probe on issue 23's example: a linear model on 20 features, 10 classes and the squared
# loss. Its Hessian is I_10 ⊗ [X 1]ᵀ[X 1]/n, so every eigenvalue is 10-fold.
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(64, 20)), jnp.float32)
Y = jnp.asarray(RNG.integers(0, 10, 64), jnp.int32)


@pytest.fixture(scope="module")
def linear_mse():
    task = SupervisedTask(Linear(10), FAMILIES["sgd"], 8, (20,), loss="mse", n_classes=10)
    seeds, hp = member_arrays("sgd", [0], [0])
    state = task.init(Seeds(*(jnp.asarray(s[0]) for s in seeds)), {k: v[0] for k, v in hp.items()})
    flat, unravel = ravel_pytree(state.params)
    h = jax.jit(jax.hessian(lambda v: task.probe_loss(unravel(v), state, X, Y)))(flat)
    return task, state, np.linalg.eigvalsh(np.asarray(h, np.float64))[::-1]


def run_hessian(task, state, **options):
    ctx = ProbeContext(task, PROBES["hessian"].options(**options), None, "identity")
    out = jax.jit(lambda s, x, y: PROBES["hessian"].fn(ctx.bind(s, s.params, x, y)))(state, X, Y)
    return {name: float(v) for name, v in out.items()}


def test_the_probe_finds_the_tenfold_top_eigenvalue_three_times(linear_mse):
    task, state, exact = linear_mse
    np.testing.assert_allclose(exact[:10], exact[0], rtol=1e-6)  # the structure the test is about
    out = run_hessian(task, state, k=3)  # default iters
    got = [out["sharpness"], out["hessian_eig_2"], out["hessian_eig_3"]]
    np.testing.assert_allclose(got, exact[:3], rtol=1e-5)
    for i in (1, 2, 3):
        assert out[f"hessian_eig_residual_{i}"] < 1e-5 * exact[0], out


def test_the_probe_reports_an_unconverged_eigenvalue_as_nan(linear_mse):
    task, state, exact = linear_mse
    out = run_hessian(task, state, k=1, iters=1)  # Rayleigh quotient of one random vector in 210 dimensions
    assert np.isnan(out["sharpness"])
    assert out["hessian_eig_residual_1"] > TOL * exact[0]
    # The host says so once, with the fix; a converged result says nothing.
    as_rows = lambda result: jax.tree.map(lambda a: np.asarray(a)[None], result)
    message = unconverged(as_rows(out), HessianOptions(k=1, iters=1))
    assert message.startswith("1 eigenvalue(s) did not converge") and "raise probes.hessian.iters (now 1)" in message
    assert unconverged(as_rows(run_hessian(task, state, k=1)), HessianOptions(k=1)) is None
