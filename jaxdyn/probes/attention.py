"""``attention``: what each attention head looks at, on the probe batch.

A model with attention sows its weights ``[B, heads, T, T]`` (query t, key s; each row
sums to 1) per layer in the ``attention`` collection (``models/transformer.py``). For
each layer and head (layer ``attn_0/h1``; the mean over heads under ``attn_0``):

- ``attn_entropy``: the mean over examples and query positions of the row entropy
  ``−Σ_s w_ts log w_ts`` in nats: log T for uniform attention (log(t + 1) at query t
  under a causal mask), 0 for attention on one key (collapse).
- ``attn_self``: the mean weight on the diagonal ``w_tt`` (a query attending to itself).
- ``attn_first``: the mean weight on the first key ``w_t0`` (an attention sink, Xiao et
  al. 2024: heads that park their weight on the first token).
- ``attn_map``: the weights of the first ``maps`` probe examples, for the report, in
  ``histograms.parquet`` (layer ``attn_0/example_0``, ``bin`` = h T² + t T + s, ``value``
  the weight; the bin edges carry no meaning here).

A model without attention has nothing to measure: the probe is refused before compiling.
"""

from dataclasses import dataclass

import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.models.layers import ATTENTION
from jaxdyn.probes.base import HISTOGRAMS, Probe


@dataclass(frozen=True)
class AttentionOptions:
    every: int = 1
    maps: int = 1  # probe examples whose attention maps are kept for the report (0: none)
    hist_range = 1.0  # not an option: the map rows' bin edges, which mean nothing here

    def check(self) -> None:
        if self.maps < 0:
            raise ConfigError(f"probes.attention.maps = {self.maps}: the number of examples whose maps are "
                              "kept, >= 0")


def entropy(weights):
    """Row entropies ``−Σ_s w log w`` of ``[..., T, T]`` weights in nats (0 log 0 = 0)."""
    return -jnp.sum(jnp.where(weights > 0, weights * jnp.log(jnp.where(weights > 0, weights, 1.0)), 0.0), axis=-1)


def attention_stats(weights) -> dict:
    """``{metric: [heads]}`` of one layer's weights ``[B, heads, T, T]``."""
    diagonal = jnp.diagonal(weights, axis1=-2, axis2=-1)  # [B, H, T]
    return {"attn_entropy": entropy(weights).mean(axis=(0, 2)), "attn_self": diagonal.mean(axis=(0, 2)),
            "attn_first": weights[..., 0].mean(axis=(0, 2))}


def attention(ctx) -> dict:
    _, sown = ctx.task.model.apply({"params": ctx.state.params, **ctx.state.model_state}, ctx.x, train=False,
                                   hparams=ctx.state.hparams, mutable=[ATTENTION])
    layers = sown.get(ATTENTION, {})
    if not layers:
        raise ConfigError("probes.attention: this model sows no attention weights; turn the probe off "
                          "(every = 0) or use model.kind = \"transformer\"")
    out = {"attn_entropy": {}, "attn_self": {}, "attn_first": {}}
    maps = {}
    for layer, weights in layers.items():
        for metric, per_head in attention_stats(weights).items():
            out[metric][layer] = per_head.mean()
            for h in range(per_head.shape[0]):
                out[metric][f"{layer}/h{h}"] = per_head[h]
        for e in range(min(ctx.options.maps, weights.shape[0])):
            maps[f"{layer}/example_{e}"] = weights[e].reshape(-1)
    if maps:
        out[HISTOGRAMS] = {"attn_map": maps}
    return out


PROBE = Probe("attention", AttentionOptions, attention,
              "per layer and head: attn_entropy (nats), attn_self, attn_first, and attention maps for the report",
              "cheap")
