"""A convolutional generator (DCGAN-style, with resize-convolutions): a vector -> an image or a sequence.

The latent vector is projected by a dense layer onto ``channels[0]`` feature maps
of the output's size divided by ``2^len(channels)``; each of ``len(channels)``
upsampling layers then doubles every spatial axis (nearest neighbour) and applies a
stride-1 "same" convolution: to ``channels[i + 1]`` maps, and the last (``head``)
to the example's channels. This is the resize-convolution of Odena et al. (2016),
which avoids the checkerboard artefacts of strided transposed convolutions, and it
reuses the CNN's conv layer, so ``conv_impl`` picks the fast form on each device
(``models/conv.py``). As in DCGAN (Radford et al. 2016), every layer but the last
is normalised (``norm``, BatchNorm by default) and activated; the output goes
through ``out_activation`` (``sigmoid`` for data in [0, 1], ``tanh`` for [-1, 1],
``none`` otherwise).

It generates: built with the shape of one example (``output_shape``), it returns
``[B, prod(output_shape)]``. ``[L]``/``[L, C]`` outputs are 1D, ``[H, W, C]`` 2D (and
``[H, W]`` with ``conv_dims = 2``), as the CNN reads them.
"""

import math
from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.models.cnn import ConvLayer, conv_layout
from jaxdyn.models.common import DEFAULT_HPARAMS, check_layer_options, check_widths, choice
from jaxdyn.models.conv import CONV_IMPLS
from jaxdyn.models.layers import ACTIVATIONS, activate, kernel_initializer, normalize, sow_layer

OUT_ACTIVATIONS = ("none", "sigmoid", "tanh")


@dataclass(frozen=True)
class UpConvConfig:
    """``kind = "upconv"`` (a generator: ``[gan.generator]``)."""

    kind: str = "upconv"
    channels: tuple[int, ...] = (64, 32)  # feature maps after the projection, then after each upsampling but the last
    kernel: int = 3  # window of every conv layer
    activation: str = "relu"
    out_activation: str = "none"  # none | sigmoid | tanh
    init: str = "lecun_normal"
    init_scale: float = 1.0  # member hyperparameter
    norm: str = "batch"  # none | batch | layer, after the projection and each upsampling conv but the last
    leaky_slope: float = 0.01  # member hyperparameter: for activation = "leaky_relu"
    conv_impl: str = "auto"  # einsum | lax | auto: see the cnn kind
    conv_dims: int = 0  # 0 = from the output's rank, as the CNN reads inputs; 2 makes [H, W] an image

    def check(self, input_shape, output_shape=None) -> None:
        check_layer_options(self)
        choice("model.out_activation", self.out_activation, OUT_ACTIVATIONS)
        choice("model.conv_impl", self.conv_impl, CONV_IMPLS)
        check_widths("model.channels", self.channels, allow_empty=False)
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or self.kernel < 1:
            raise ConfigError(f"model.kernel = {self.kernel!r}: give a positive odd integer, e.g. 3")
        if output_shape is None:
            raise ConfigError("model.kind = \"upconv\" generates examples: use it as [gan.generator]")
        start_shape(self, output_shape)


def spatial(output_shape, conv_dims: int = 0) -> tuple[tuple[int, ...], int]:
    """``(spatial sizes, channels)`` of one example, laid out as the CNN reads its inputs
    (``conv_layout``): ``[L]`` and ``[H, W]`` (with ``conv_dims = 2``) have one channel."""
    shape = tuple(output_shape)
    dims = conv_layout(shape, conv_dims)
    return (shape, 1) if len(shape) == dims else (shape[:-1], shape[-1])


def start_shape(cfg: UpConvConfig, output_shape) -> tuple[int, ...]:
    """The projected maps' spatial size: the output's divided by ``2^len(channels)``."""
    sizes, _ = spatial(output_shape, cfg.conv_dims)
    factor = 2 ** len(cfg.channels)
    if any(n % factor for n in sizes):
        fits = [c for c in range(1, 6) if all(n % 2 ** c == 0 for n in sizes)]
        raise ConfigError(
            f"model.channels = {list(cfg.channels)}: {len(cfg.channels)} upsamplings need every output size "
            f"{list(sizes)} divisible by {factor}; use {max(fits) if fits else 0} entries or fewer"
            + ("" if fits else " (an odd size cannot be reached by doubling)"))
    return tuple(n // factor for n in sizes)


class UpConv(nn.Module):
    """Dense ``project`` onto small maps, then upsample-and-convolve ``up_0`` … and a conv ``head``."""

    channels: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel: int = 3
    activation: str = "relu"
    out_activation: str = "none"
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes
    norm: str = "batch"
    conv_impl: str = "auto"
    conv_dims: int = 0

    @classmethod
    def from_config(cls, cfg: UpConvConfig, input_shape, output_shape, use_dropout: bool):
        return cls(tuple(cfg.channels), tuple(output_shape), cfg.kernel, cfg.activation, cfg.out_activation,
                   cfg.init, cfg.norm, cfg.conv_impl, cfg.conv_dims)

    @nn.compact
    def __call__(self, z: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        hparams = DEFAULT_HPARAMS if hparams is None else hparams
        sizes, out_channels = spatial(self.output_shape, self.conv_dims)
        start = tuple(n // 2 ** len(self.channels) for n in sizes)
        init = lambda: kernel_initializer(self, self.kernel_init, hparams)
        h = nn.Dense(math.prod(start) * self.channels[0], use_bias=self.norm != "batch", kernel_init=init(),
                     name="project")(z.reshape(z.shape[0], -1))
        h = h.reshape(z.shape[0], *start, self.channels[0])
        h = activate(self.activation, normalize(self.norm, h, train, name="project_norm"), hparams)
        sow_layer(self, "project", h)
        widths = (*self.channels[1:], out_channels)
        for i, width in enumerate(widths):
            for axis in range(1, 1 + len(sizes)):  # nearest-neighbour doubling of each spatial axis
                h = jnp.repeat(h, 2, axis=axis)
            last = i == len(widths) - 1
            name = "head" if last else f"up_{i}"
            h = ConvLayer(width, (self.kernel,) * len(sizes), (1,) * len(sizes), "same", self.conv_impl,
                          init(), name=name)(h)
            if not last:
                h = activate(self.activation, normalize(self.norm, h, train, name=f"up_norm_{i}"), hparams)
            sow_layer(self, name, h)
        if self.out_activation != "none":
            h = ACTIVATIONS[self.out_activation](h)
        return h.reshape(z.shape[0], -1)
