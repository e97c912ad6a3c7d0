"""``gradient_noise``: the gradient noise scale and signal-to-noise ratio from per-example gradients.

Per-example gradients g_i of the training objective on the probe batch (B examples;
BatchNorm with its running statistics, since one example has none of its own;
dropout off) are accumulated in chunks, so memory stays a few copies of the
parameters. With G = mean g_i and the per-parameter variance
``v_p = Σ_i (g_ip − G_p)² / (B − 1)``:

- ``grad_noise_trace`` = tr(Σ) = Σ_p v_p, and ``grad_sq_norm`` = |G|²;
- ``grad_noise_scale`` = B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, eq. 2.8),
  the batch size beyond which larger batches stop helping much;
- ``grad_noise_scale_ema``: the same ratio of exponential moving averages of tr(Σ)
  and |G|² over the probe's evaluations (option ``ema``, bias-corrected), as the
  paper recommends, because the raw ratio is noisy;
- ``gsnr``: the mean over parameters of ``G_p² / v_p`` (Liu et al. 2020), over the
  parameters whose gradient varies at all.
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


def gradient_noise(ctx) -> dict:
    state, x, y = ctx.state, ctx.x, ctx.y
    b = x.shape[0]
    chunk = min(CHUNK, b)
    n = b - b % chunk  # whole chunks only: the first n examples of the probe batch
    flat_grad = lambda xi, yi: ravel_pytree(jax.grad(ctx.task.probe_loss)(
        state.params, state, xi[None], yi[None], batch_stats=False))[0]

    def accumulate(sums, batch):
        g = jax.vmap(flat_grad)(*batch)
        return (sums[0] + g.sum(0), sums[1] + jnp.square(g).sum(0)), None

    dim = ravel_pytree(state.params)[0].shape[0]
    batches = (x[:n].reshape(n // chunk, chunk, *x.shape[1:]), y[:n].reshape(n // chunk, chunk, *y.shape[1:]))
    (total, squares), _ = jax.lax.scan(accumulate, (jnp.zeros(dim), jnp.zeros(dim)), batches)
    mean = total / n
    var = jnp.maximum(squares - n * jnp.square(mean), 0) / (n - 1)
    trace, sq_norm = var.sum(), jnp.square(mean).sum()
    varies = var > 0
    gsnr = jnp.sum(jnp.where(varies, jnp.square(mean) / jnp.where(varies, var, 1), 0)) / jnp.maximum(varies.sum(), 1)
    return {"grad_noise_trace": trace, "grad_sq_norm": sq_norm, "grad_noise_scale": trace / sq_norm, "gsnr": gsnr}


PROBE = Probe("gradient_noise", GradientNoiseOptions, gradient_noise,
              "gradient noise scale B_simple (raw and EMA) and GSNR from per-example gradients", "moderate",
              ema=(("grad_noise_scale_ema", "grad_noise_trace", "grad_sq_norm"),))
