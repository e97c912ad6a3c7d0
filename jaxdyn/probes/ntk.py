"""``ntk``: the empirical neural tangent kernel on a small fixed subset of the probe batch.

On the first ``examples`` probe examples, with f the model's outputs in evaluation
mode (BatchNorm's running statistics, so an example's output does not depend on
the others in the subset; no dropout), the kernel is summed over outputs:
``Θ_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩``, an ``[n, n]`` matrix.

- ``ntk_trace``: tr Θ = Σ_i Σ_c ‖∂f_c(x_i)/∂θ‖².
- ``ntk_distance``: ``1 − ⟨Θ, Θ₀⟩ / (‖Θ‖ ‖Θ₀‖)`` (Frobenius), the kernel distance of
  Fort et al. (2020) from the member's own NTK at initialisation Θ₀.
- ``ntk_alignment``: kernel-target alignment ``⟨Θ, YYᵀ⟩ / (‖Θ‖ ‖YYᵀ‖)`` (Cristianini et
  al. 2002), Y the one-hot labels (or the regression targets), uncentred. Views
  without targets (a GAN's players) have no alignment row.

Both cosines are NaN when a kernel is 0 (0/0), e.g. all-zero regression targets, or a
model whose outputs do not depend on its parameters at those points.

Memory is the common complaint about the empirical NTK (neural-tangents #30,
#100); ``mode`` chooses how much is held at once:

- ``full``: the whole Jacobian ``[n, outputs, parameters]``;
- ``chunked``: one layer's Jacobian at a time, Θ = Σ_layers J_l J_lᵀ (the same kernel);
- ``trace``: one example's Jacobian at a time, and only ``ntk_trace``.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe

MODES = ("full", "chunked", "trace")


@dataclass(frozen=True)
class NTKOptions:
    every: int = 1
    examples: int = 32  # the first N probe examples
    mode: str = "full"  # full | chunked (a layer at a time) | trace (ntk_trace only)

    def check(self) -> None:
        if self.examples < 2:
            raise ConfigError(f"probes.ntk.examples = {self.examples}: a kernel needs at least 2 examples")
        if self.mode not in MODES:
            raise ConfigError(f"probes.ntk.mode = {self.mode!r}: use one of {', '.join(MODES)}")


def outputs(task, state, params, x):
    hp = {**state.hparams, "dropout": jnp.zeros((), jnp.float32)}
    return task.model.apply({"params": params, **state.model_state}, x, train=False, hparams=hp)


def kernel(task, state, params, x, mode: str) -> jax.Array:
    """Θ ``[n, n]`` of ``params`` on ``x``, summed over outputs."""
    if mode == "full":
        jac = jax.jacrev(lambda p: outputs(task, state, p, x))(params)
        flat = jnp.concatenate([j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jac)], axis=-1)
        return jnp.einsum("icp,jcp->ij", flat, flat)
    theta = jnp.zeros((x.shape[0], x.shape[0]))
    for name in params:  # chunked: one layer's Jacobian at a time
        jac = jax.jacrev(lambda sub, name=name: outputs(task, state, {**params, name: sub}, x))(params[name])
        flat = jnp.concatenate([j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jac)], axis=-1)
        theta = theta + jnp.einsum("icp,jcp->ij", flat, flat)
    return theta


def trace_only(task, state, params, x) -> jax.Array:
    def one(xi):
        jac = jax.jacrev(lambda p: outputs(task, state, p, xi[None])[0])(params)
        return sum(jnp.sum(jnp.square(j)) for j in jax.tree.leaves(jac))
    return jax.lax.map(one, x).sum()


def cosine(a, b):
    """``⟨a, b⟩ / (‖a‖ ‖b‖)``; NaN when either is 0 (0/0: a zero kernel has no direction; ⟨a, b⟩ is
    then 0 too, so there is no x/0 case)."""
    den = jnp.linalg.norm(a) * jnp.linalg.norm(b)
    return jnp.where(den > 0, jnp.sum(a * b) / jnp.where(den > 0, den, 1.0), jnp.nan)


def ntk(ctx) -> dict:
    state, init_params, x, y = ctx.state, ctx.init_params, ctx.x, ctx.y
    opts, task = ctx.options, ctx.task
    n = min(opts.examples, x.shape[0])
    x, y = x[:n], y[:n]
    if opts.mode == "trace":
        return {"ntk_trace": trace_only(task, state, state.params, x)}
    theta = kernel(task, state, state.params, x, opts.mode)
    theta0 = kernel(task, state, init_params, x, opts.mode)
    out = {"ntk_trace": jnp.trace(theta), "ntk_distance": 1 - cosine(theta, theta0)}
    if getattr(task, "has_targets", True):
        target = jax.nn.one_hot(y, task.n_classes).reshape(n, -1) if task.n_classes else y.reshape(n, -1)
        out["ntk_alignment"] = cosine(theta, target @ target.T)
    return out


PROBE = Probe("ntk", NTKOptions, ntk,
              "empirical NTK on a fixed subset: ntk_trace, ntk_distance from init, ntk_alignment (full, chunked, trace)",
              "expensive", needs_init=True)
