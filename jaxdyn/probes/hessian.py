"""``hessian``: curvature of the training objective on the probe batch, from
Hessian-vector products only (the full Hessian is never formed).

The objective is ``SupervisedTask.probe_loss``: BatchNorm with the probe batch's
own statistics (as training sees it), dropout off. A Hessian-vector product is
``jax.jvp`` of ``jax.grad`` (forward over reverse).

- ``sharpness``, ``hessian_eig_2`` … ``hessian_eig_k``: the top-k eigenvalues, by
  ``iters`` steps of Lanczos with full reorthogonalisation from a fixed start
  vector; the tridiagonal matrix's eigenvalues come from ``eigh_tridiagonal``.
- ``hessian_trace``, ``hessian_trace_stderr``: Hutchinson's estimate
  ``mean zᵀHz`` over ``trace_samples`` Rademacher vectors z, and its standard
  error (sample std / √samples). ``trace_samples = 0`` turns it off.
- ``preconditioned_sharpness`` (optimizers that keep Adam's second moment ν: adam,
  adamw, rmsprop): the top eigenvalue of P⁻¹H with ``P = diag(√ν̂ + ε)``, ν̂ the
  bias-corrected second moment, as in the adaptive edge of stability of Cohen et
  al. (2022); it is found as that of the symmetric ``P^{-1/2} H P^{-1/2}``.
- ``blocks = true``: the top eigenvalue of each layer's diagonal block of H, as
  ``sharpness`` rows with the layer's name (PyHessian's most asked-for view).
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import eigh_tridiagonal

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe

START_SEED = 0x4E55  # the Lanczos start vector's key: the same for every member and chunk


@dataclass(frozen=True)
class HessianOptions:
    every: int = 1
    k: int = 1  # top eigenvalues: sharpness, hessian_eig_2 ...
    iters: int = 20  # Lanczos iterations
    trace_samples: int = 0  # Hutchinson probes for the trace; 0 = no trace
    preconditioned: bool = True  # also the top eigenvalue of P^-1 H under Adam's second moment
    blocks: bool = False  # also each layer's diagonal block

    def check(self) -> None:
        if self.k < 1:
            raise ConfigError(f"probes.hessian.k = {self.k}: ask for at least the top eigenvalue (k = 1)")
        if self.iters < self.k:
            raise ConfigError(f"probes.hessian.iters = {self.iters}: Lanczos needs at least k = {self.k} "
                              "iterations; 20 is plenty for the top few")
        if self.trace_samples < 0:
            raise ConfigError(f"probes.hessian.trace_samples = {self.trace_samples}: must be >= 0 (0 = no trace)")


def lanczos_top(matvec, dim: int, iters: int, k: int, key) -> jax.Array:
    """The ``k`` largest eigenvalues (descending) of a symmetric operator on R^dim.

    ``iters`` is capped at ``dim``: a Krylov space cannot be larger. Each new vector
    is orthogonalised against all earlier ones, twice, so no ghost copies of the
    top eigenvalue appear.
    """
    m = min(iters, dim)
    v0 = jax.random.normal(key, (dim,), jnp.float32)
    basis = jnp.zeros((m + 1, dim), jnp.float32).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(i, carry):
        basis, alphas, betas = carry
        v = basis[i]
        w = matvec(v)
        alpha = w @ v
        w = w - basis.T @ (basis @ w)  # rows past i are still zero
        w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        nxt = jnp.where(beta > 1e-6 * (jnp.abs(alpha) + 1e-30), w / beta, jnp.zeros_like(w))
        return basis.at[i + 1].set(nxt), alphas.at[i].set(alpha), betas.at[i].set(beta)

    _, alphas, betas = jax.lax.fori_loop(0, m, body, (basis, jnp.zeros(m), jnp.zeros(m)))
    eigs = eigh_tridiagonal(alphas, betas[:-1], eigvals_only=True) if m > 1 else alphas
    return jnp.sort(eigs)[::-1][:k]


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
    out = {}
    top = lanczos_top(hvp, dim, opts.iters, opts.k, key)
    out["sharpness"] = top[0]
    for i in range(1, opts.k):
        out[f"hessian_eig_{i + 1}"] = top[i] if i < top.shape[0] else jnp.float32(jnp.nan)
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
        out["preconditioned_sharpness"] = lanczos_top(lambda v: scale * hvp(scale * v), dim, opts.iters, 1,
                                                      jax.random.fold_in(key, 2))[0]
    if opts.blocks:
        blocks = {}
        for name in state.params:
            mask = ravel_pytree({n: jax.tree.map(lambda a, on=(n == name): jnp.full_like(a, on), sub)
                                 for n, sub in state.params.items()})[0]
            size = sum(a.size for a in jax.tree.leaves(state.params[name]))
            blocks[name] = lanczos_top(lambda v, m=mask: m * hvp(m * v), dim, min(opts.iters, size), 1,
                                       jax.random.fold_in(key, 3))[0]
        out["sharpness"] = {"": out["sharpness"], **blocks}
    return out


PROBE = Probe("hessian", HessianOptions, hessian,
              "top-k Hessian eigenvalues (Lanczos), Hutchinson trace, preconditioned sharpness, per-layer blocks",
              "expensive")
