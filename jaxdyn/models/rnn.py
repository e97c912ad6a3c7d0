"""Recurrent network: stacked flax cells (Elman, LSTM or GRU) over time, then a linear head.

An example ``[T]`` is read as T steps of one feature, ``[T, F]`` as T steps of F
features (MNIST-1D's 40 samples are a length-40 sequence). Each layer is flax's own
cell scanned by ``nn.RNN`` (``nn.Bidirectional`` of two for ``bidirectional``), so
its step is exactly the published cell: Elman (1990) ``h' = tanh(W_i x + b + W_h h)``
(``nn.SimpleCell``), LSTM (Hochreiter & Schmidhuber 1997; ``nn.OptimizedLSTMCell``,
the four gates as one matmul per side) and GRU (Cho et al. 2014; ``nn.GRUCell``).
Carries start at zero.

The head reads the top layer's output sequence ``y [B, T, D]`` (``D = H``, or ``2H``
bidirectional, forward units first) in one of three ways:

- ``last``: the final state of each direction, ``[B, D]``. Forward: ``y[:, T-1, :H]``;
  backward (which runs from step T-1 down to 0 and whose outputs ``nn.Bidirectional``
  puts back in input order): ``y[:, 0, H:]``. So ``[h_fwd(T-1), h_bwd(0)]``, each
  direction's summary of the whole sequence, not both halves of the step T-1.
- ``mean``: the mean over time, ``[B, D]``.
- ``flatten``: every step's output, ``[B, T * D]`` (time-major: step 0's D units
  first), as the GRU of the MNIST-1D paper (Greydanus 2020: bidirectional, H = 6,
  T = 40, so 480 features into a linear 10-way head).
"""

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.errors import ConfigError
from jaxdyn.models.common import DEFAULT_HPARAMS, check_layer_options, choice
from jaxdyn.models.layers import dropout, kernel_initializer, sow_layer

# Cells by name. OptimizedLSTMCell has LSTMCell's parameter names and shapes but one
# concatenated matmul per side instead of four, fewer and larger ops per time step.
CELLS = {"elman": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
READOUTS = ("last", "mean", "flatten")


@dataclass(frozen=True)
class RNNConfig:
    """``[model] kind = "rnn"``."""

    kind: str = "rnn"
    cell: str = "gru"  # elman | lstm | gru
    hidden_size: int = 64  # units per direction per layer
    layers: int = 1  # stacked: layer i + 1 reads layer i's output sequence
    bidirectional: bool = False  # each layer is a forward and a backward cell, outputs concatenated
    readout: str = "last"  # last | mean | flatten: what the head sees (see the module docstring)
    init: str = "lecun_normal"  # input kernels only; recurrent kernels keep flax's orthogonal init
    init_scale: float = 1.0  # member hyperparameter: multiplies every kernel, recurrent ones too
    dropout: float = 0.0  # member hyperparameter: on each layer's output sequence

    def check(self, input_shape) -> None:
        check_layer_options(self)
        choice("model.cell", self.cell, CELLS)
        choice("model.readout", self.readout, READOUTS)
        for name in ("hidden_size", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{name} = {value!r}: give a positive integer, e.g. "
                                  f"{RNNConfig.__dataclass_fields__[name].default}")
        shape = tuple(input_shape)
        if len(shape) not in (1, 2) or any(d <= 0 for d in shape):
            raise ConfigError(
                f"model.kind = 'rnn' reads each example as a sequence [T] or [T, F], but the dataset's "
                f"examples have shape {list(shape)}; use a dataset of 1-D signals or another model.kind "
                f"(e.g. 'mlp')")


def readout(y: jnp.ndarray, kind: str, bidirectional: bool) -> jnp.ndarray:
    """Features for the head from the top layer's outputs ``y [B, T, D]``.

    Returns ``[B, D]`` for ``last`` and ``mean``, ``[B, T * D]`` for ``flatten``;
    ``last`` takes each direction's final step (see the module docstring).
    """
    if kind == "mean":
        return y.mean(axis=1)
    if kind == "flatten":
        return y.reshape(y.shape[0], -1)
    if not bidirectional:
        return y[:, -1]
    h = y.shape[-1] // 2
    return jnp.concatenate([y[:, -1, :h], y[:, 0, h:]], axis=-1)


class RNN(nn.Module):
    """Stacked recurrent layers layer_0 .. layer_{n-1} (Elman, LSTM or GRU), then a linear head.

    Names are stable (``layer_0``, ..., ``head``); each layer's output sequence
    ``[B, T, D]`` (after dropout, as the MLP sows) and the logits are sown under
    them (``layers.sow_layer``). A layer's parameters are
    ``layer_i/cell/<gate>/kernel`` (flax's gate names, e.g. ``ir``, ``hr`` for the
    GRU: ``i*`` read the input, ``h*`` the state), or ``layer_i/forward_rnn/cell/...``
    and ``layer_i/backward_rnn/cell/...`` when bidirectional. Works on ONE member;
    vmap over members outside.
    """

    cell: str
    hidden_size: int
    layers: int
    n_out: int
    bidirectional: bool = False
    readout: str = "last"
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes
    use_dropout: bool = False

    @classmethod
    def from_config(cls, cfg: RNNConfig, input_shape, n_out: int, use_dropout: bool):
        return cls(cfg.cell, cfg.hidden_size, cfg.layers, n_out, cfg.bidirectional, cfg.readout,
                   cfg.init, use_dropout)

    def _layer(self, name: str, hparams) -> nn.Module:
        """One recurrent layer mapping ``[B, T, F]`` to ``[B, T, H or 2H]``.

        The inner modules are built with ``parent=None`` so that the layer adopts
        them (``layer_i/cell``, ``layer_i/forward_rnn``); built plainly inside this
        compact method they would bind to the RNN itself as ``GRUCell_0``, ...
        """
        def cell():
            return CELLS[self.cell](self.hidden_size, kernel_init=kernel_initializer(self, self.kernel_init, hparams),
                                    parent=None)

        if self.bidirectional:
            return nn.Bidirectional(nn.RNN(cell(), parent=None), nn.RNN(cell(), parent=None), name=name)
        return nn.RNN(cell(), name=name)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        """Logits ``[B, n_out]`` from ``x [B, T]`` or ``[B, T, F]``."""
        hparams = DEFAULT_HPARAMS if hparams is None else hparams
        h = x[..., None] if x.ndim == 2 else x
        for i in range(self.layers):
            h = self._layer(f"layer_{i}", hparams)(h)
            if self.use_dropout:
                h = dropout(self, h, hparams["dropout"], train)
            sow_layer(self, f"layer_{i}", h)
        features = readout(h, self.readout, self.bidirectional)
        logits = nn.Dense(self.n_out, kernel_init=kernel_initializer(self, self.kernel_init, hparams),
                          name="head")(features)
        return sow_layer(self, "head", logits)
