"""``hessian``: curvature of the training objective on the probe batch, from
Hessian-vector products only (the full Hessian is never formed).

The objective is ``SupervisedTask.probe_loss``: BatchNorm with the probe batch's
own statistics (as training sees it), dropout off. A Hessian-vector product is
``jax.jvp`` of ``jax.grad`` (forward over reverse).

- ``sharpness``, ``hessian_eig_2`` … ``hessian_eig_k``: the top-k eigenvalues, by
  block Lanczos (Golub & Underwood 1977) with a block of ``k + 1`` vectors from a
  fixed random start, ``iters`` block steps (a Krylov space of ``iters · (k + 1)``
  vectors, capped at the parameter count) with full reorthogonalisation, then
  Rayleigh-Ritz on that space. A block of b vectors finds up to b copies of a
  repeated eigenvalue, which single-vector Lanczos cannot: a squared-loss or softmax
  head with C classes makes most of the spectrum C-fold. The guard vector past k
  speeds up the k-th value when λ_k ≈ λ_{k+1}; more guards cost more products per
  step than they save in steps. For k = 1 the block is one vector (plain Lanczos):
  the top Ritz value converges to λ₁ whatever its multiplicity, and a second vector
  would double the probe's cost (measured 2.4× training alone against 1.3×).
- ``hessian_eig_residual_1`` … ``hessian_eig_residual_k``: ‖Hv − λv‖ for each
  eigenvalue's unit Ritz vector v, from one more (true) Hessian-vector product each.
  Some eigenvalue of H lies within the residual of the reported value.
  A value whose residual exceeds ``tol · max|θ|`` (θ the Ritz values of the Krylov
  space, max|θ| a lower bound on ‖H‖₂) has not converged and is reported as NaN,
  its residual still reported; raise ``iters`` to converge it.
- ``hessian_trace``, ``hessian_trace_stderr``: Hutchinson's estimate
  ``mean zᵀHz`` over ``trace_samples`` Rademacher vectors z, and its standard
  error (sample std / √samples). ``trace_samples = 0`` turns it off.
- ``preconditioned_sharpness`` and its ``preconditioned_sharpness_residual``
  (optimizers that keep Adam's second moment ν: adam, adamw, rmsprop): the top
  eigenvalue of P⁻¹H with ``P = diag(√ν̂ + ε)``, ν̂ the bias-corrected second moment,
  as in the adaptive edge of stability of Cohen et al. (2022); it is found as that of
  the symmetric ``P^{-1/2} H P^{-1/2}``, by the same solver and test (k = 1). NaN while
  ν is all zero (at step 0, before the optimizer has seen a gradient).
- ``blocks = true``: the top eigenvalue of each layer's diagonal block of H, as
  ``sharpness`` rows (and ``hessian_eig_residual_1`` rows) with the layer's name
  (PyHessian's most asked-for view); same solver and test, k = 1.
"""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe

START_SEED = 0x4E55  # the Lanczos start block's key: the same for every member and chunk
GUARD = 1  # block vectors past k, for k > 1


def block_size(k: int) -> int:
    """Start vectors for the top ``k`` eigenvalues: one for k = 1, else k + GUARD."""
    return 1 if k == 1 else k + GUARD
# A new Krylov vector left with less than this fraction of its norm after
# orthogonalisation lies in the space already built (it is exhausted): it is
# dropped (zeroed) instead of blowing rounding noise up to unit length.
DEFLATE = 1e-5


@dataclass(frozen=True)
class HessianOptions:
    every: int = 1
    k: int = 1  # top eigenvalues: sharpness, hessian_eig_2 ...
    iters: int = 20  # block Lanczos steps, each of k + 1 Hessian-vector products (1 for k = 1)
    trace_samples: int = 0  # Hutchinson probes for the trace; 0 = no trace
    preconditioned: bool = True  # also the top eigenvalue of P^-1 H under Adam's second moment
    blocks: bool = False  # also each layer's diagonal block
    tol: float = 1e-3  # an eigenvalue whose residual exceeds tol * max|Ritz value| is reported as NaN

    def check(self) -> None:
        if self.k < 1:
            raise ConfigError(f"probes.hessian.k = {self.k}: ask for at least the top eigenvalue (k = 1)")
        if self.iters < self.k:
            raise ConfigError(f"probes.hessian.iters = {self.iters}: Lanczos needs at least k = {self.k} "
                              "iterations; 20 is plenty for the top few")
        if self.trace_samples < 0:
            raise ConfigError(f"probes.hessian.trace_samples = {self.trace_samples}: must be >= 0 (0 = no trace)")
        if not 0 < self.tol < 1:
            raise ConfigError(f"probes.hessian.tol = {self.tol}: the relative residual tolerance must be in "
                              "(0, 1); 1e-3 is the default")


@jax.custom_batching.custom_vmap
def _eigh(t):
    return tuple(jnp.linalg.eigh(t))


@_eigh.def_vmap
def _eigh_one_by_one(axis_size, in_batched, t):
    # LAPACK run batched on two CPU devices at once deadlocks in jaxlib's thread pool
    # (see probes/weights.py), so the members' small eigenproblems go one at a time.
    if not in_batched[0]:
        return _eigh(t), (False, False)
    return jax.lax.map(_eigh, t), (True, True)


def _orthonormalise_into(basis, w, row):
    """``basis`` with ``w``, orthogonalised against its rows (twice: "twice is enough",
    Giraud et al. 2005) and normalised, written at ``row``; a zero row when nothing is left."""
    norm0 = jnp.linalg.norm(w)
    w = w - basis.T @ (basis @ w)
    w = w - basis.T @ (basis @ w)
    norm = jnp.linalg.norm(w)
    keep = norm > DEFLATE * norm0
    return basis.at[row].set(jnp.where(keep, w / jnp.where(keep, norm, 1.0), 0.0))


def block_krylov(matvec, start, steps: int):
    """An orthonormal basis of the block Krylov space of ``start`` and the projection of the operator on it.

    Args:
      matvec: ``v [dim] -> Hv [dim]``, H symmetric (one member's).
      start: ``[b, dim]`` start block.
      steps: block steps s; the space is span{S, HS, …, H^{s-1}S}.

    Returns:
      ``(basis [s·b, dim], projected [s·b, s·b])``: orthonormal rows, zero where the space
      was exhausted (deflated), and ``basisᵀ H basis`` from the products made on the way.
    """
    b, dim = start.shape
    n = steps * b
    fill = lambda basis, block, first: jax.lax.fori_loop(
        0, b, lambda c, q: _orthonormalise_into(q, block[c], first + c), basis)
    basis = fill(jnp.zeros((n, dim), jnp.float32), start.astype(jnp.float32), 0)

    def product(basis, j):  # H times block j, and its inner products with every basis row
        hv = jax.vmap(matvec)(jax.lax.dynamic_slice_in_dim(basis, j * b, b))
        return hv, basis @ hv.T

    def step(basis, j):
        hv, column = product(basis, j)
        return fill(basis, hv, (j + 1) * b), column

    basis, columns = jax.lax.scan(step, basis, jnp.arange(steps - 1))
    columns = jnp.concatenate([columns, product(basis, steps - 1)[1][None]])  # [s, n, b]
    # Column block j holds V_iᵀ H V_j for i <= j (later blocks were still zero); the rest is its transpose.
    upper = columns.transpose(1, 0, 2).reshape(n, n)
    blocks = jnp.arange(n) // b
    projected = jnp.where(blocks[:, None] <= blocks[None, :], upper, upper.T)
    return basis, (projected + projected.T) / 2


def top_eigenpairs(matvec, start, iters: int, k: int, tol: float, space: int | None = None):
    """The ``k`` largest eigenvalues of a symmetric operator and their residuals, by block Lanczos.

    Args:
      matvec: ``v [dim] -> Hv [dim]`` (one member's).
      start: ``[b, dim]`` start block, ``b >= k`` (rows in the subspace H acts on).
      iters: block steps, capped at ``ceil(space / b)``: the Krylov space cannot outgrow it.
      k: eigenvalues wanted.
      tol: a value whose residual exceeds ``tol · max|θ|`` is NaN.
      space: dimension of the subspace H acts on (default ``dim``).

    Returns:
      ``(values [k], residuals [k])``: values descending, NaN where not converged;
      ``residuals[i] = ‖H v_i − θ_i v_i‖`` for the unit Ritz vector v_i, from a fresh product.
    """
    b, dim = start.shape
    steps = max(1, min(iters, math.ceil((dim if space is None else space) / b)))
    basis, projected = block_krylov(matvec, start, steps)
    # A deflated (zero) row leaves a zero row and column: pin its Ritz value below the
    # whole spectrum (|θ| <= ‖T‖_F) so that it is never among the top k.
    alive = jnp.sum(basis * basis, axis=1) > 0.5
    floor = -2.0 * (jnp.linalg.norm(projected) + 1.0)
    thetas, coords = _eigh(projected + jnp.diag(jnp.where(alive, 0.0, floor)))
    real = thetas > floor / 2
    scale = jnp.maximum(jnp.max(jnp.where(real, jnp.abs(thetas), 0.0)), jnp.finfo(jnp.float32).tiny)
    theta, coords = thetas[::-1][:k], coords[:, ::-1][:, :k]
    vectors = coords.T @ basis  # [k, dim]
    norms = jnp.linalg.norm(vectors, axis=1)
    vectors = vectors / jnp.where(norms > 0.5, norms, 1.0)[:, None]
    residuals = jnp.linalg.norm(jax.vmap(matvec)(vectors) - theta[:, None] * vectors, axis=1)
    converged = real[::-1][:k] & (norms > 0.5) & (residuals <= tol * scale)
    return jnp.where(converged, theta, jnp.nan), residuals


def adam_second_moment(opt_state):
    """``(nu, count)`` of Adam's (or RMSProp's) state inside ``opt_state``, or None.

    ``count`` is the step count kept beside ``nu`` in the same state (None for RMSProp,
    which keeps none), not the one ``inject_hyperparams`` keeps.
    """
    # Only NamedTuple fields: a parameter may itself be called "nu" or "count".
    is_field = lambda path, _: isinstance(path[-1], otu.NamedTupleKey)
    found = otu.tree_get_all_with_path(opt_state, "nu", is_field)
    if not found:
        return None
    nu_path, nu = found[0]
    counts = [c for path, c in otu.tree_get_all_with_path(opt_state, "count", is_field) if path[:-1] == nu_path[:-1]]
    return nu, counts[0] if counts else None


def hessian(ctx) -> dict:
    state, x, y = ctx.state, ctx.x, ctx.y
    opts = ctx.options
    flat, unravel = ravel_pytree(state.params)
    dim = flat.shape[0]
    loss = lambda p: ctx.task.probe_loss(p, state, x, y)
    grad = jax.grad(loss)

    def hvp(v):
        return ravel_pytree(jax.jvp(grad, (state.params,), (unravel(v),))[1])[0]

    key = jax.random.PRNGKey(START_SEED)
    start = lambda k, seed: jax.random.normal(jax.random.fold_in(key, seed), (block_size(k), dim), jnp.float32)
    out = {}
    top, residuals = top_eigenpairs(hvp, start(opts.k, 0), opts.iters, opts.k, opts.tol)
    out["sharpness"] = top[0]
    for i in range(1, opts.k):
        out[f"hessian_eig_{i + 1}"] = top[i]
    for i in range(opts.k):
        out[f"hessian_eig_residual_{i + 1}"] = residuals[i]
    if opts.trace_samples:
        zs = jax.random.rademacher(jax.random.fold_in(key, 1), (opts.trace_samples, dim), jnp.float32)
        quad = jax.lax.map(lambda z: z @ hvp(z), zs)
        out["hessian_trace"] = quad.mean()
        out["hessian_trace_stderr"] = quad.std(ddof=1) / jnp.sqrt(opts.trace_samples) if opts.trace_samples > 1 \
            else jnp.float32(jnp.nan)
    moments = adam_second_moment(state.opt_state) if opts.preconditioned else None
    if moments is not None:
        nu, count = moments
        nu = ravel_pytree(nu)[0]
        if count is not None and "b2" in state.hparams:
            nu = nu / (1 - state.hparams["b2"] ** jnp.maximum(count, 1).astype(jnp.float32))
        scale = 1 / jnp.sqrt(jnp.sqrt(nu) + state.hparams.get("eps", jnp.float32(1e-8)))  # P^{-1/2}
        value, residual = top_eigenpairs(lambda v: scale * hvp(scale * v), start(1, 2), opts.iters, 1, opts.tol)
        # Before the first step (step 0) ν holds no gradient yet: P would be ε alone, and λ/ε no curvature.
        seen = jnp.any(nu != 0)
        out["preconditioned_sharpness"] = jnp.where(seen, value[0], jnp.nan)
        out["preconditioned_sharpness_residual"] = jnp.where(seen, residual[0], jnp.nan)
    if opts.blocks:
        values, residuals = {}, {}
        for name in state.params:
            mask = ravel_pytree({n: jax.tree.map(lambda a, on=(n == name): jnp.full_like(a, on), sub)
                                 for n, sub in state.params.items()})[0]
            size = sum(a.size for a in jax.tree.leaves(state.params[name]))
            # Started inside the layer, the Krylov space stays there: its size caps the steps.
            value, residual = top_eigenpairs(lambda v, m=mask: m * hvp(m * v), mask * start(1, 3), opts.iters, 1,
                                             opts.tol, size)
            values[name], residuals[name] = value[0], residual[0]
        out["sharpness"] = {"": out["sharpness"], **values}
        out["hessian_eig_residual_1"] = {"": out["hessian_eig_residual_1"], **residuals}
    return out


def unconverged(result: dict, options: HessianOptions) -> str | None:
    """The host's warning when eigenvalues came back NaN for want of convergence (their residual
    finite, above the tolerance), or None; ``result``: ``{metric: [K] or {layer: [K]}}``."""
    whole = lambda v: v[""] if isinstance(v, dict) else v
    pairs = [("sharpness", "hessian_eig_residual_1"),
             *((f"hessian_eig_{i}", f"hessian_eig_residual_{i}") for i in range(2, options.k + 1)),
             ("preconditioned_sharpness", "preconditioned_sharpness_residual")]
    missed = sum(int(np.sum(np.isnan(whole(result[v])) & np.isfinite(whole(result[r]))))
                 for v, r in pairs if v in result and r in result)
    if not missed:
        return None
    return (f"{missed} eigenvalue(s) did not converge (residual above tol = {options.tol:g} times the largest "
            f"Ritz value) and are written as NaN, with their residuals; raise probes.hessian.iters "
            f"(now {options.iters})")


PROBE = Probe("hessian", HessianOptions, hessian,
              "top-k Hessian eigenvalues (block Lanczos) with residuals, Hutchinson trace, preconditioned "
              "sharpness, per-layer blocks", "expensive", warn=unconverged)
