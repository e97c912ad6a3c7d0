"""``loss_slices``: the training loss along filter-normalised random directions (Li et al. 2018).

Two random directions d₁, d₂ with the parameters' shapes are drawn from the
member's data key (the same directions at every evaluation, so the slices show the
landscape moving under the member). Each is filter-normalised: for every kernel,
each output unit's (filter's) slice of d is scaled to the norm of that filter in
θ; biases and normalisation parameters get 0, as in the paper. The probe writes
the training objective on the probe batch (batch statistics, dropout off) at

- ``loss_slice_1d``: θ + α d₁ for ``points`` values of α on [−span, span];
- ``loss_slice_2d`` (``dims = 2``): θ + α d₁ + β d₂ on the ``points × points`` grid.

In these rows the ``layer`` column holds the coordinates: ``"α"`` or ``"α,β"``.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn import streams
from jaxdyn.errors import ConfigError
from jaxdyn.losses import is_weight
from jaxdyn.probes.base import Probe
from jaxdyn.streams import Stream

DIRECTION_TAG = 0x511CE  # the directions' index in the member's Stream.PROBE keys


@dataclass(frozen=True)
class LossSlicesOptions:
    every: int = 1
    points: int = 11  # points per direction
    span: float = 1.0  # the slice covers [-span, span] filter-normalised steps
    dims: int = 1  # 1 (a line) or 2 (a plane)

    def check(self) -> None:
        if self.points < 2:
            raise ConfigError(f"probes.loss_slices.points = {self.points}: give at least 2 points per axis")
        if not self.span > 0:
            raise ConfigError(f"probes.loss_slices.span = {self.span}: must be > 0")
        if self.dims not in (1, 2):
            raise ConfigError(f"probes.loss_slices.dims = {self.dims}: 1 (a line) or 2 (a plane)")


def filter_normalised(params, key):
    """A random direction shaped like ``params``: each kernel filter (output unit) scaled
    to that filter's norm in ``params``; zero for biases and norm parameters."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, w), k in zip(leaves, keys):
        if not is_weight(path):
            out.append(jnp.zeros_like(w))
            continue
        d = jax.random.normal(k, w.shape, w.dtype)
        axes = tuple(range(w.ndim - 1))  # every axis but the output units'
        # A Gaussian filter is nonzero with probability one: no guard; a zero filter of θ gets 0.
        scale = jnp.linalg.norm(w, axis=axes, keepdims=True) / jnp.linalg.norm(d, axis=axes, keepdims=True)
        out.append(d * scale)
    return jax.tree_util.tree_unflatten(treedef, out)


def coordinates(opts) -> np.ndarray:
    return np.linspace(-opts.span, opts.span, opts.points)


def loss_slices(ctx) -> dict:
    state, x, y = ctx.state, ctx.x, ctx.y
    opts = ctx.options
    key = streams.key(state.data_key, Stream.PROBE, DIRECTION_TAG)
    d1 = filter_normalised(state.params, jax.random.fold_in(key, 1))
    grid = coordinates(opts)
    loss = lambda p: ctx.task.probe_loss(p, state, x, y)
    move = lambda a, b, d2: jax.tree.map(lambda w, u, v: w + a * u + b * v, state.params, d1, d2)
    zero = jax.tree.map(jnp.zeros_like, state.params)
    line = jax.lax.map(lambda a: loss(move(a, 0.0, zero)), jnp.asarray(grid, jnp.float32))
    out = {"loss_slice_1d": {f"{a:.4g}": line[i] for i, a in enumerate(grid)}}
    if opts.dims == 2:
        d2 = filter_normalised(state.params, jax.random.fold_in(key, 2))
        aa, bb = np.meshgrid(grid, grid, indexing="ij")
        plane = jax.lax.map(lambda ab: loss(move(ab[0], ab[1], d2)),
                            jnp.asarray(np.stack([aa.ravel(), bb.ravel()], 1), jnp.float32))
        out["loss_slice_2d"] = {f"{a:.4g},{b:.4g}": plane[i] for i, (a, b) in enumerate(zip(aa.ravel(), bb.ravel()))}
    return out


PROBE = Probe("loss_slices", LossSlicesOptions, loss_slices,
              "1D/2D slices of the loss along filter-normalised random directions (Li et al. 2018)", "moderate")
