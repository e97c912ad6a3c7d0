"""``weights``: the spectrum of every weight matrix.

Each kernel is read as a matrix ``W [fan_in, fan_out]`` (a convolution's kernel
with its receptive field folded into fan_in); the layer column names the kernel's
place in the parameters (``hidden_0``, ``conv_1``, ``layer_0/cell/hi``, ...). With
λ the eigenvalues of WᵀW (the squared singular values):

- ``spectral_norm`` = σ_max = √λ_max (0 for a zero matrix);
- ``stable_rank`` = ‖W‖_F² / σ_max² = Σλ / λ_max; NaN for a zero matrix (0/0; σ_max
  is 0 only when W is, so no x/0 case exists), never a made-up 0 or 1;
- ``esd_alpha``: the exponent of a power law ``p(λ) ∝ λ^(−α)`` fitted to the tail of
  the empirical spectral density as WeightWatcher does (Martin & Mahoney 2021, with
  the ``powerlaw`` package's method of Clauset, Shalizi & Newman 2009): for each
  candidate λ_min the maximum-likelihood ``α = 1 + n / Σ ln(λ_i / λ_min)`` over the n
  eigenvalues ≥ λ_min, keeping the λ_min whose fit is closest to the data in
  Kolmogorov-Smirnov distance (tails of at least ``min_tail`` eigenvalues). Heavy-
  tailed layers (α ≈ 2-4) are the well-trained ones in that theory; a random
  matrix's spectrum gives a large α. A tail whose eigenvalues are all equal has
  Σ ln(λ_i / λ_min) = 0 and no power law to fit (the MLE α diverges): such a tail is
  not a candidate, and α is NaN, not inf, when no tail is a candidate (a zero
  matrix, or one whose tail eigenvalues are exactly equal): there is no fit whose
  exponent to report. (A multiple of an orthogonal matrix, its equal eigenvalues
  split by rounding, gives a very large α instead.)

The eigenvalues come from LAPACK, which must not run batched on two CPU devices at
once (it deadlocks in jaxlib's thread pool), so this probe steps through a
device's members one at a time (``Probe.sequential``).
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe


@dataclass(frozen=True)
class WeightsOptions:
    every: int = 1
    min_tail: int = 5  # the power-law fit considers tails of at least this many eigenvalues

    def check(self) -> None:
        if self.min_tail < 2:
            raise ConfigError(f"probes.weights.min_tail = {self.min_tail}: a power-law fit needs at least 2 "
                              "eigenvalues")


def power_law_alpha(lam: jax.Array, min_tail: int) -> jax.Array:
    """WeightWatcher's α for eigenvalues ``lam`` (any order); NaN if no tail is long enough."""
    lam = jnp.sort(jnp.maximum(lam, 0.0))
    m = lam.shape[0]
    logs = jnp.log(jnp.maximum(lam, jnp.finfo(jnp.float32).tiny))
    idx = jnp.arange(m)
    n = m - idx  # tail sizes for xmin = lam[j]
    suffix = jnp.cumsum(logs[::-1])[::-1]
    spread = suffix - n * logs
    alpha = 1 + n / jnp.where(spread > 0, spread, jnp.nan)
    # KS distance of each fit to its tail: the fitted CDF against the empirical one at each point.
    i, j = idx[None, :], idx[:, None]
    in_tail = i >= j
    fit = 1 - jnp.exp((1 - alpha[:, None]) * (logs[None, :] - logs[:, None]))
    below, above = (i - j) / n[:, None], (i - j + 1) / n[:, None]
    gap = jnp.maximum(jnp.abs(fit - below), jnp.abs(fit - above))
    ks = jnp.max(jnp.where(in_tail, gap, 0.0), axis=1)
    valid = (n >= min_tail) & (lam > 0) & jnp.isfinite(alpha)
    best = jnp.argmin(jnp.where(valid, ks, jnp.inf))
    return jnp.where(valid.any(), alpha[best], jnp.nan)


def weights(ctx) -> dict:
    state = ctx.state
    out = {"spectral_norm": {}, "stable_rank": {}, "esd_alpha": {}}
    for path, kernel in jax.tree_util.tree_leaves_with_path(state.params):
        if getattr(path[-1], "key", None) != "kernel":
            continue
        name = "/".join(str(getattr(p, "key", p)) for p in path[:-1])
        w = kernel.reshape(-1, kernel.shape[-1])
        gram = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T
        lam = jnp.linalg.eigvalsh(gram)
        top = jnp.maximum(lam[-1], 0.0)  # eigvalsh may round a zero matrix's to just below 0
        out["spectral_norm"][name] = jnp.sqrt(top)
        out["stable_rank"][name] = jnp.where(top > 0, jnp.sum(jnp.square(w)) / jnp.where(top > 0, top, 1.0), jnp.nan)
        out["esd_alpha"][name] = power_law_alpha(lam, ctx.options.min_tail)
    return out


PROBE = Probe("weights", WeightsOptions, weights,
              "per-kernel spectral_norm, stable_rank and the power-law exponent esd_alpha (WeightWatcher)",
              "moderate", sequential=True)
