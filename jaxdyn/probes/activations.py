"""``activations``: per-layer statistics of the sown layer outputs on the probe batch.

Each model sows every layer's output under the layer's name (in evaluation mode:
running BatchNorm statistics, no dropout). For each layer:

- ``act_mean``, ``act_std``: over every example, position and unit.
- ``dead_frac`` (layers whose nonlinearity is of the ReLU family: relu, leaky_relu,
  elu, gelu, silu): the fraction of units (the last axis: features or channels) that
  are ≤ 0 for every example and position of the probe batch. For relu that is a unit
  that is exactly zero throughout: dead.
- ``saturated_frac`` (tanh and sigmoid layers, and every RNN layer, whose outputs
  are tanh-bounded): the fraction of outputs beyond the threshold: ``|h| > t`` for
  tanh, ``|2h − 1| > t`` for sigmoid (option ``saturation``, default 0.99: a tanh
  unit whose pre-activation exceeds 2.65 in size).
- ``act_hist``: a histogram of the outputs in ``bins`` equal bins over
  ``[-hist_range, hist_range]``, as fractions; values outside fall in the end bins.
  It goes to ``histograms.parquet``.

The output layer (the logits: the layer whose sown value is the model's output) is a
layer too; it has no nonlinearity.
"""

from dataclasses import dataclass

import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import HISTOGRAMS, Probe

RELU_FAMILY = ("relu", "leaky_relu", "elu", "gelu", "silu")
SATURATING = ("tanh", "sigmoid")


@dataclass(frozen=True)
class ActivationsOptions:
    every: int = 1
    saturation: float = 0.99  # |h| beyond this counts as saturated (tanh; 2h - 1 for sigmoid)
    bins: int = 40  # histogram bins
    hist_range: float = 5.0  # the histogram covers [-hist_range, hist_range]; the tails go to the end bins

    def check(self) -> None:
        if not 0 < self.saturation < 1:
            raise ConfigError(f"probes.activations.saturation = {self.saturation}: give a threshold in (0, 1)")
        if self.bins < 2:
            raise ConfigError(f"probes.activations.bins = {self.bins}: give at least 2 bins")
        if not self.hist_range > 0:
            raise ConfigError(f"probes.activations.hist_range = {self.hist_range}: must be > 0")


def histogram(h, bins: int, limit: float):
    """Fractions of ``h`` in ``bins`` equal bins over ``[-limit, limit]``; the tails go to the end bins."""
    idx = jnp.clip(jnp.floor((h.reshape(-1) + limit) / (2 * limit) * bins), 0, bins - 1).astype(jnp.int32)
    return jnp.zeros(bins, jnp.float32).at[idx].add(1.0) / h.size


def activations(ctx) -> dict:
    opts = ctx.options
    out = {"act_mean": {}, "act_std": {}, "dead_frac": {}, "saturated_frac": {}, HISTOGRAMS: {"act_hist": {}}}
    outputs, layers = ctx.outputs_and_layers()
    for name, h in layers.items():
        kind = "identity" if h is outputs else ctx.hidden_activation  # the output layer: logits or values
        out["act_mean"][name] = h.mean()
        out["act_std"][name] = h.std()
        if kind in RELU_FAMILY:
            units = h.reshape(-1, h.shape[-1])
            out["dead_frac"][name] = jnp.all(units <= 0, axis=0).mean()
        if kind in SATURATING:
            centred = h if kind == "tanh" else 2 * h - 1
            out["saturated_frac"][name] = (jnp.abs(centred) > opts.saturation).mean()
        out[HISTOGRAMS]["act_hist"][name] = histogram(h, opts.bins, opts.hist_range)
    return {k: v for k, v in out.items() if v and (k != HISTOGRAMS or v["act_hist"])}


PROBE = Probe("activations", ActivationsOptions, activations,
              "per-layer act_mean, act_std, dead_frac, saturated_frac and act_hist of the sown outputs",
              "cheap", default_on=True)
