"""``gradient_noise``: the gradient noise scale and signal-to-noise ratio from per-example gradients.

Per-example gradients g_i of the training objective on the probe batch (B examples;
BatchNorm with its running statistics, since one example has none of its own;
dropout off) are accumulated in chunks, so memory stays a few copies of the
parameters. With ḡ = mean g_i and the unbiased per-parameter variance
``v_p = Σ_i (g_ip − ḡ_p)² / (B − 1)``:

- ``grad_noise_trace`` = tr Σ̂ = Σ_p v_p, an unbiased estimate of tr Σ;
- ``grad_sq_norm`` = |G|²̂ = |ḡ|² − tr Σ̂ / B, an unbiased estimate of |G|² (the plain
  |ḡ|² is not: its mean is |G|² + tr Σ / B, which caps |ḡ|²'s ratio near B). It is
  McCandlish et al. (2018, App. A.1)'s estimate from two batch sizes with B_small = 1
  (each example alone) and B_big = B: with m = mean_i |g_i|²,
  ``(B|ḡ|² − m) / (B − 1) = |ḡ|² − (m − |ḡ|²) / (B − 1) = |ḡ|² − tr Σ̂ / B`` because
  ``tr Σ̂ = B (m − |ḡ|²) / (B − 1)``, which is also their S estimate
  ``(m − |ḡ|²) / (1 − 1/B)``. It is negative when the batch cannot tell G from zero;
  it is written signed, so that averages of it stay unbiased;
- ``grad_noise_scale`` = B_simple = tr Σ̂ / |G|²̂ (their eq. 2.8), the batch size beyond
  which larger batches stop helping much. +inf when |G|²̂ ≤ 0 < tr Σ̂ (the signal is
  below what this batch resolves, so the noise scale has no finite estimate; a finite
  number here would be made up), 0 without noise, NaN when both are 0 (0/0);
- ``grad_noise_scale_ema``: the ratio of exponential moving averages of tr Σ̂ and |G|²̂
  over the probe's evaluations (option ``ema``), as the paper recommends: a ratio of
  two unbiased averages, where the raw ratio is a ratio of two noisy estimates;
- ``gsnr``: the mean over parameters of ``G_p² / σ_p²`` (Liu et al. 2020) with the
  unbiased ``G_p²̂ = ḡ_p² − v_p / B``, i.e. ``ḡ_p² / v_p − 1/B``, over the parameters
  whose gradient varies over the probe batch (v_p > 0); a parameter whose gradient is
  the same on every example has no noise to compare with (0/0 if that gradient is 0,
  as for a dead unit; ∞ if not) and is left out. NaN when no parameter varies. It is
  negative (down to −1/B) where the mean gradient is below what the batch resolves.
  Subtracting 1/B removes the bias of ḡ_p² (+σ_p²/B); what remains is the smaller
  bias of dividing by an estimated variance (E[1/v_p] > 1/σ_p², by O(1/B) relatively).

The variances are computed stably in float32: the gradients are shifted by the first
example's (constant parameters then give exactly zero deviations), each chunk's mean
and squared deviations are taken in two passes, and chunks are merged with Chan,
Golub & LeVeque (1983)'s pairwise update, never as ``Σ g² − B ḡ²``, which cancels
catastrophically when the mean is large against the spread.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe

CHUNK = 16  # examples whose gradients are held at once


@dataclass(frozen=True)
class GradientNoiseOptions:
    every: int = 1
    ema: float = 0.9  # decay of the moving averages behind grad_noise_scale_ema

    def check(self) -> None:
        if not 0 <= self.ema < 1:
            raise ConfigError(f"probes.gradient_noise.ema = {self.ema}: give a decay in [0, 1) (0: no smoothing)")

    def min_batch(self) -> tuple[int, str]:
        """The smallest probe batch the estimates are defined on, and why."""
        return 2, "a variance over examples needs at least 2 of them"


def _chunk_moments(d):
    """``(count, mean [P], Σ (d − mean)² [P])`` of one chunk ``d [c, P]``, in two passes; the
    second pass subtracts the rounding of the mean (the corrected two-pass algorithm)."""
    mean = d.mean(0)
    dev = d - mean
    m2 = jnp.square(dev).sum(0) - jnp.square(dev.sum(0)) / d.shape[0]
    return jnp.float32(d.shape[0]), mean, jnp.maximum(m2, 0.0)


def _merge(a, b):
    """Chan et al.'s pairwise update: the moments of two disjoint sets from each set's."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + jnp.square(delta) * (na * nb / n)


def gradient_moments(per_example, batch, chunk: int = CHUNK):
    """Count, mean and summed squared deviations of per-example gradients, a chunk at a time.

    Args:
      per_example: maps a chunk of ``batch`` (leaves ``[c, ...]``) to its flat gradients ``[c, P]``.
      batch: pytree, leaves ``[n, ...]`` with n >= 2.
      chunk: examples per call of ``per_example``.

    Returns:
      ``(n, mean [P], m2 [P])`` with ``m2 = Σ_i (g_i − mean)²``.
    """
    n = jax.tree.leaves(batch)[0].shape[0]
    chunk = min(chunk, n)
    whole = n - n % chunk
    part = lambda lo, hi: jax.tree.map(lambda a: a[lo:hi], batch)
    first = per_example(part(0, chunk))
    shift = first[0]  # deviations from a typical gradient keep every sum small
    moments = _chunk_moments(first - shift)
    if whole > chunk:
        rest = jax.tree.map(lambda a: a[chunk:whole].reshape(whole // chunk - 1, chunk, *a.shape[1:]), batch)
        moments, _ = jax.lax.scan(lambda m, b: (_merge(m, _chunk_moments(per_example(b) - shift)), None),
                                  moments, rest)
    if whole < n:
        moments = _merge(moments, _chunk_moments(per_example(part(whole, n)) - shift))
    count, mean, m2 = moments
    return count, shift + mean, m2


def noise_statistics(count, mean, m2) -> dict:
    """The probe's metrics from ``gradient_moments``' ``(n, mean [P], m2 [P])`` (see the module doc)."""
    var = m2 / (count - 1)
    trace = var.sum()
    sq_mean = jnp.square(mean)
    sq_norm = sq_mean.sum() - trace / count
    # sq_norm <= 0 with trace = 0 means ḡ = 0 too (then sq_norm = |ḡ|²): 0/0.
    scale = jnp.where(sq_norm > 0, trace / sq_norm, jnp.where(trace > 0, jnp.inf, jnp.nan))
    varies = var > 0
    # The inner wheres only keep the discarded branches free of 0/0; no value is made up.
    ratios = jnp.where(varies, sq_mean / jnp.where(varies, var, 1.0) - 1 / count, 0.0)
    n_varies = varies.sum()
    gsnr = jnp.where(n_varies > 0, ratios.sum() / jnp.maximum(n_varies, 1), jnp.nan)
    return {"grad_noise_trace": trace, "grad_sq_norm": sq_norm, "grad_noise_scale": scale, "gsnr": gsnr}


def gradient_noise(ctx) -> dict:
    state = ctx.state
    one = lambda xi, yi: ravel_pytree(jax.grad(ctx.task.probe_loss)(
        state.params, state, xi[None], yi[None], batch_stats=False))[0]
    per_example = lambda b: jax.vmap(one)(*b)
    return noise_statistics(*gradient_moments(per_example, (ctx.x, ctx.y)))


PROBE = Probe("gradient_noise", GradientNoiseOptions, gradient_noise,
              "gradient noise scale B_simple (raw and EMA) and GSNR from per-example gradients", "moderate",
              ema=(("grad_noise_scale_ema", "grad_noise_trace", "grad_sq_norm"),))
