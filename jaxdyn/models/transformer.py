"""A small transformer encoder (or decoder, with ``causal``) over token or continuous sequences.

The attention is written as einsums in the model (scores ``bthd,bshd->bhts``, the
weighted sum ``bhts,bshd->bthd``), so that a vmapped population runs it as batched
matrix products; ``benchmarks/attention_forms.py`` measures it against
``flax.linen.MultiHeadDotProductAttention`` under vmap.

Layer names are stable: ``embed``, ``pos`` (learned positions), ``cls`` (the readout
token), per block ``l``: ``ln_attn_l``, ``attn_l`` (``query``, ``key``, ``value``,
``out`` inside), ``ln_mlp_l``, ``mlp_in_l``, ``mlp_out_l``; then ``ln_final`` and
``head``. Each block sows its MLP's hidden activations as ``mlp_l`` and its output
(the residual stream) as ``block_l`` in ``intermediates``, the logits as ``head``, and
its attention weights ``[B, heads, T, T]`` as ``attn_l`` in the ``attention``
collection (the ``attention`` probe reads them; the other probes see the layers).
"""

import math
from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxdyn.errors import ConfigError, choice
from jaxdyn.models.common import DEFAULT_HPARAMS, check_layer_options
from jaxdyn.models.layers import ATTENTION, activate, dropout, kernel_initializer, sow_layer

POSITIONS = ("learned", "sinusoidal")
READOUTS = ("last", "mean", "cls")
TRANSFORMER_NORMS = ("layer", "none")


@dataclass(frozen=True)
class TransformerConfig:
    """``[model] kind = "transformer"``."""

    kind: str = "transformer"
    layers: int = 1  # blocks
    d_model: int = 128  # width of the residual stream
    heads: int = 4  # attention heads (d_model must divide by it)
    mlp_ratio: int = 4  # each block's MLP is d_model -> mlp_ratio * d_model -> d_model
    norm: str = "layer"  # layer: pre-LayerNorm in each block and before the readout | none
    causal: bool = False  # each position attends to itself and earlier positions only
    positions: str = "learned"  # learned | sinusoidal (Vaswani et al. 2017)
    readout: str = "last"  # last position | mean over positions | cls (a learned token put first)
    activation: str = "relu"  # of the blocks' MLPs
    init: str = "lecun_normal"  # the kernels' initialiser
    init_scale: float = 1.0  # member hyperparameter
    dropout: float = 0.0  # member hyperparameter: on the attention and MLP outputs before each residual add
    leaky_slope: float = 0.01  # member hyperparameter: for activation = "leaky_relu"

    def check(self, input_shape) -> None:
        check_layer_options(self)
        choice("model.norm", self.norm, TRANSFORMER_NORMS)
        choice("model.positions", self.positions, POSITIONS)
        choice("model.readout", self.readout, READOUTS)
        for name in ("layers", "d_model", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} = {getattr(self, name)}: must be >= 1")
        if self.d_model % self.heads:
            raise ConfigError(f"model.d_model = {self.d_model} does not divide into model.heads = {self.heads}; "
                              f"make d_model a multiple of heads, e.g. {self.heads * max(1, self.d_model // self.heads)}")
        if len(input_shape) not in (1, 2):
            raise ConfigError(f"model.kind = \"transformer\" reads sequences [T] (tokens or one value per "
                              f"position) or [T, F]; this dataset's examples are {list(input_shape)}; "
                              "use a cnn or mlp for images")


def sinusoidal(length: int, width: int) -> np.ndarray:
    """Fixed positions ``[length, width]``: sin on even, cos on odd features (Vaswani et al. 2017, 3.5)."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-math.log(10000.0) * (np.arange(0, width, 2) / width))
    table = np.zeros((length, width), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : width // 2]
    return table


class SelfAttention(nn.Module):
    """Multi-head self-attention of ``x [B, T, d]``; returns ``(out [B, T, d], weights [B, H, T, T])``."""

    heads: int
    causal: bool
    kernel_init: str | tuple[str, ...]  # a name, or the names a cohort mixes (``layers.kernel_initializer``)

    @nn.compact
    def __call__(self, x, hparams=None):
        d = x.shape[-1]
        head_dim = d // self.heads
        init = lambda: kernel_initializer(self, self.kernel_init, hparams)
        project = lambda name: nn.DenseGeneral((self.heads, head_dim), kernel_init=init(), name=name)(x)
        q, k, v = project("query"), project("key"), project("value")  # [B, T, H, dh]
        scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(head_dim)
        if self.causal:
            t = x.shape[1]
            scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.finfo(scores.dtype).min)
        weights = nn.softmax(scores, axis=-1)
        mixed = jnp.einsum("bhts,bshd->bthd", weights, v)
        out = nn.DenseGeneral(d, axis=(-2, -1), kernel_init=init(), name="out")(mixed)
        return out, weights


class Transformer(nn.Module):
    """Transformer blocks (pre-LayerNorm self-attention and MLP) over a sequence, then a linear head.

    Token inputs ``[B, T]`` (integer ids in ``[0, vocab)`` stored as float32) go through an
    embedding table; continuous inputs ``[B, T]`` or ``[B, T, F]`` through a linear embedding.
    """

    n_out: int
    vocab: int = 0
    layers: int = 1
    d_model: int = 128
    heads: int = 4
    mlp_ratio: int = 4
    norm: str = "layer"
    causal: bool = False
    positions: str = "learned"
    readout: str = "last"
    activation: str = "relu"
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes
    use_dropout: bool = False

    @classmethod
    def from_config(cls, cfg: TransformerConfig, input_shape, n_out: int, use_dropout: bool, vocab: int = 0):
        return cls(n_out, vocab, cfg.layers, cfg.d_model, cfg.heads, cfg.mlp_ratio, cfg.norm, cfg.causal,
                   cfg.positions, cfg.readout, cfg.activation, cfg.init, use_dropout)

    def _norm(self, x, name: str):
        return nn.LayerNorm(name=name)(x) if self.norm == "layer" else x

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        hparams = DEFAULT_HPARAMS if hparams is None else hparams
        init = lambda: kernel_initializer(self, self.kernel_init, hparams)
        if self.vocab:
            h = nn.Embed(self.vocab, self.d_model, embedding_init=nn.initializers.normal(1.0),
                         name="embed")(x.astype(jnp.int32))
        else:
            h = nn.Dense(self.d_model, kernel_init=init(), name="embed")(x if x.ndim == 3 else x[..., None])
        if self.readout == "cls":
            cls = self.param("cls", nn.initializers.normal(0.02), (self.d_model,))
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.d_model)), h], axis=1)
        t = h.shape[1]
        if self.positions == "learned":
            h = h + self.param("pos", nn.initializers.normal(0.02), (t, self.d_model))
        else:
            h = h + sinusoidal(t, self.d_model)
        for i in range(self.layers):
            attended, weights = SelfAttention(self.heads, self.causal, self.kernel_init,
                                              name=f"attn_{i}")(self._norm(h, f"ln_attn_{i}"), hparams)
            if self.is_mutable_collection(ATTENTION):  # put_variable: "attn_i" also names the submodule
                self.put_variable(ATTENTION, f"attn_{i}", weights)
            if self.use_dropout:
                attended = dropout(self, attended, hparams["dropout"], train)
            h = h + attended
            inner = nn.Dense(self.mlp_ratio * self.d_model, kernel_init=init(),
                             name=f"mlp_in_{i}")(self._norm(h, f"ln_mlp_{i}"))
            inner = sow_layer(self, f"mlp_{i}", activate(self.activation, inner, hparams))
            out = nn.Dense(self.d_model, kernel_init=init(), name=f"mlp_out_{i}")(inner)
            if self.use_dropout:
                out = dropout(self, out, hparams["dropout"], train)
            h = sow_layer(self, f"block_{i}", h + out)
        h = self._norm(h, "ln_final")
        pooled = {"last": lambda: h[:, -1], "mean": lambda: h.mean(axis=1), "cls": lambda: h[:, 0]}[self.readout]()
        logits = nn.Dense(self.n_out, kernel_init=init(), name="head")(pooled)
        sow_layer(self, "head", logits)
        return logits
