"""Convolutional network: 1D or 2D conv layers, optional pooling, then dense layers and a head.

The default is the MNIST-1D "ConvBase" (Greydanus 2020): three 1D conv layers of 25
channels, kernels 5, 3, 3, stride 2, padding 1, flattened into a linear head.
Inputs are channels-last: ``[L]``, ``[L, C]``, ``[H, W]`` or ``[H, W, C]`` per example.
Each conv layer's kernel has ``nn.Conv``'s layout ``[*window, C_in, C_out]``; how it is
applied (``conv_impl``) does not change the parameters, so the two forms in
``models/conv.py`` can be swapped on one checkpoint.
"""

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.models.common import DEFAULT_HPARAMS, check_layer_options, check_widths, choice
from jaxdyn.models.conv import CONV_FORMS, CONV_IMPLS, out_size, pads, resolve_impl
from jaxdyn.models.layers import INITIALIZERS, activate, dropout, kernel_initializer, normalize, sow_layer

POOLS = {"none": None, "max": nn.max_pool, "avg": nn.avg_pool}
GLOBAL_POOLS = {"none": None, "mean": jnp.mean, "max": jnp.max}
PADDINGS = ("same", "valid")


@dataclass(frozen=True)
class CNNConfig:
    """``[model] kind = "cnn"``."""

    kind: str = "cnn"
    channels: tuple[int, ...] = (25, 25, 25)  # one entry per conv layer: output channels
    kernels: tuple[int, ...] = (5, 3, 3)  # window length (square window in 2D)
    strides: tuple[int, ...] = (2, 2, 2)  # one per conv layer
    padding: Any = (1, 1, 1)  # one int per layer (symmetric, every spatial axis), or "same" | "valid"
    pool: str = "none"  # none | max | avg, window = stride = pool_size, after each conv activation
    pool_size: int = 2  # window and stride of the pooling
    global_pool: str = "none"  # none (flatten) | mean | max over the spatial axes after the convs
    hidden: tuple[int, ...] = ()  # dense widths after the convs, before the linear head
    activation: str = "relu"
    init: str = "lecun_normal"
    init_scale: float = 1.0  # member hyperparameter
    # none | batch | layer, after each conv and hidden Dense, before the activation. BatchNorm
    # averages over batch and positions per channel; LayerNorm over the channels at each position.
    norm: str = "none"
    dropout: float = 0.0  # member hyperparameter: after each conv and hidden layer's output
    leaky_slope: float = 0.01  # member hyperparameter: for activation = "leaky_relu"
    conv_dims: int = 0  # 0 = from the input rank ([L], [L, C] -> 1D; [H, W, C] -> 2D), or 1 | 2
    conv_impl: str = "auto"  # einsum | lax | auto (= einsum, measured faster on CPU and GPU): see models/conv.py

    def check(self, input_shape) -> None:
        check_layer_options(self)
        choice("model.pool", self.pool, POOLS)
        choice("model.global_pool", self.global_pool, GLOBAL_POOLS)
        choice("model.conv_impl", self.conv_impl, CONV_IMPLS)
        check_widths("model.channels", self.channels, allow_empty=False)
        check_widths("model.hidden", self.hidden)
        _check_conv_lists(self)
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < 1:
            raise ConfigError(f"model.pool_size = {self.pool_size!r}: give a positive integer, e.g. 2")
        conv_sizes(self, input_shape)


def _check_conv_lists(cfg: CNNConfig) -> None:
    """kernels, strides and a padding list: positive (pads non-negative) ints, one per conv layer."""
    n = len(cfg.channels)
    lists = {"kernels": (cfg.kernels, 1), "strides": (cfg.strides, 1)}
    if isinstance(cfg.padding, str):
        if cfg.padding not in PADDINGS:
            choice("model.padding", cfg.padding, PADDINGS)
    elif isinstance(cfg.padding, (list, tuple)):
        lists["padding"] = (cfg.padding, 0)
    else:
        raise ConfigError(f"model.padding = {cfg.padding!r}: give one int per conv layer, "
                          f"e.g. {[1] * n}, or \"same\" or \"valid\"")
    for name, (values, low) in lists.items():
        if len(values) != n:
            one = "pad" if name == "padding" else name[:-1]
            raise ConfigError(f"model.{name} = {list(values)} has {len(values)} entries but model.channels "
                              f"= {list(cfg.channels)} has {n}: give one {one} per conv layer")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
            least = "positive" if low else "non-negative"
            raise ConfigError(f"model.{name} = {list(values)}: give one {least} integer per conv layer")


def conv_layout(input_shape, conv_dims: int) -> int:
    """1 or 2: the convolution's spatial rank for inputs ``input_shape`` (which may lack a channel axis).

    Raises ConfigError naming ``model.conv_dims`` when it does not fit the input rank.
    """
    rank = len(input_shape)
    if conv_dims not in (0, 1, 2):
        raise ConfigError(f"model.conv_dims = {conv_dims!r}: give 0 (from the input rank), 1 or 2")
    dims = conv_dims or {1: 1, 2: 1, 3: 2}.get(rank, 0)
    if dims == 0 or rank not in (dims, dims + 1):
        fits = {0: "[L], [L, C] or [H, W, C]", 1: "[L] or [L, C]", 2: "[H, W] or [H, W, C]"}
        raise ConfigError(f"model.conv_dims = {conv_dims!r} does not fit input shape {list(input_shape)} "
                          f"(rank {rank}): conv_dims = {conv_dims} takes inputs {fits[conv_dims]}; "
                          f"set conv_dims to match the data")
    return dims


def _size(sizes) -> str:
    return f"length {sizes[0]}" if len(sizes) == 1 else "size " + "x".join(map(str, sizes))


def conv_sizes(cfg: CNNConfig, input_shape) -> list[tuple[int, ...]]:
    """Spatial sizes after each conv layer (and its pooling); raises ConfigError where one reaches 0."""
    dims = conv_layout(input_shape, cfg.conv_dims)
    sizes, out = tuple(input_shape[:dims]), []
    for i, (k, s) in enumerate(zip(cfg.kernels, cfg.strides)):
        p = cfg.padding if isinstance(cfg.padding, str) else cfg.padding[i]
        new = tuple(out_size(n, k, s, pads(p, n, k, s)) for n in sizes)
        if min(new) <= 0:
            raise ConfigError(f"model.kernels: conv layer {i} (conv_{i}: kernel {k}, stride {s}, padding {p!r}) "
                              f"turns {_size(sizes)} into {_size(new)}; use a smaller kernel or stride, "
                              f"more padding, or fewer layers")
        if cfg.pool != "none" and min(n // cfg.pool_size for n in new) <= 0:
            raise ConfigError(f"model.pool_size: {cfg.pool} pool {cfg.pool_size} after conv layer {i} turns "
                              f"{_size(new)} into {_size([n // cfg.pool_size for n in new])}; use a smaller "
                              f"pool_size, pool = \"none\", or fewer layers")
        sizes = new if cfg.pool == "none" else tuple(n // cfg.pool_size for n in new)
        out.append(sizes)
    return out


class ConvLayer(nn.Module):
    """One conv layer's ``kernel [*window, C_in, features]`` and ``bias [features]``, applied by either form.

    ``padding`` is an int (symmetric) or ``"same"`` / ``"valid"``; it is turned into
    explicit pads from the input's static size, so both forms see the same geometry.
    """

    features: int
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any
    impl: str = "auto"
    kernel_init: Any = "lecun_normal"  # an initialiser's name, or an initialiser (``layers.kernel_initializer``)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """``x [B, *spatial, C_in]`` -> ``[B, *out, features]``."""
        shape = (*self.window, x.shape[-1], self.features)
        init = INITIALIZERS[self.kernel_init]() if isinstance(self.kernel_init, str) else self.kernel_init
        kernel = self.param("kernel", init, shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        geometry = zip(x.shape[1:-1], self.window, self.strides)
        padding = tuple(pads(self.padding, n, k, s) for n, k, s in geometry)
        return CONV_FORMS[resolve_impl(self.impl)](x, kernel, self.strides, padding) + bias


class CNN(nn.Module):
    """Conv layers conv_0 .. conv_{n-1} (1D or 2D), then dense hidden_0 .. and a linear head.

    Each conv layer is conv -> norm -> activation -> pool -> dropout; its output is
    sown as ``conv_i``; dense layers and the head are sown as in the MLP. Dropout
    follows the pool so that, as in the dense layers, it drops units the next layer
    reads (and draws the smaller mask).
    """

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any  # tuple of ints, one per layer, or "same" | "valid"
    n_out: int
    dims: int = 1
    pool: str = "none"
    pool_size: int = 2
    global_pool: str = "none"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes
    norm: str = "none"
    use_dropout: bool = False
    conv_impl: str = "auto"

    @classmethod
    def from_config(cls, cfg: CNNConfig, input_shape, n_out: int, use_dropout: bool):
        dims = conv_layout(input_shape, cfg.conv_dims)
        padding = cfg.padding if isinstance(cfg.padding, str) else tuple(cfg.padding)
        return cls(tuple(cfg.channels), tuple(cfg.kernels), tuple(cfg.strides), padding, n_out, dims, cfg.pool,
                   cfg.pool_size, cfg.global_pool, tuple(cfg.hidden), cfg.activation, cfg.init, cfg.norm,
                   use_dropout, cfg.conv_impl)

    def _finish(self, h, name: str, train: bool, hparams, pool: bool) -> jnp.ndarray:
        """Activation, then pooling (conv layers), then this member's dropout; sown as ``name``."""
        h = activate(self.activation, h, hparams)
        if pool and self.pool != "none":
            h = POOLS[self.pool](h, (self.pool_size,) * self.dims, strides=(self.pool_size,) * self.dims)
        if self.use_dropout:
            h = dropout(self, h, hparams["dropout"], train)
        sow_layer(self, name, h)
        return h

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        """``x [B, *input_shape]`` (one member) -> logits ``[B, n_out]``."""
        hparams = DEFAULT_HPARAMS if hparams is None else hparams
        if x.ndim == self.dims + 1:  # no channel axis: one channel
            x = x[..., None]
        for i, (width, k, s) in enumerate(zip(self.channels, self.kernels, self.strides)):
            p = self.padding if isinstance(self.padding, str) else self.padding[i]
            x = ConvLayer(width, (k,) * self.dims, (s,) * self.dims, p, self.conv_impl,
                          kernel_initializer(self, self.kernel_init, hparams), name=f"conv_{i}")(x)
            x = normalize(self.norm, x, train, name=f"conv_norm_{i}")
            x = self._finish(x, f"conv_{i}", train, hparams, pool=True)
        spatial = tuple(range(1, 1 + self.dims))
        x = x.reshape(x.shape[0], -1) if self.global_pool == "none" else GLOBAL_POOLS[self.global_pool](x, spatial)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=kernel_initializer(self, self.kernel_init, hparams), name=f"hidden_{i}")(x)
            x = normalize(self.norm, x, train, name=f"norm_{i}")
            x = self._finish(x, f"hidden_{i}", train, hparams, pool=False)
        logits = nn.Dense(self.n_out, kernel_init=kernel_initializer(self, self.kernel_init, hparams), name="head")(x)
        sow_layer(self, "head", logits)
        return logits
