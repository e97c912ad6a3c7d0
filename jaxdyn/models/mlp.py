"""Multilayer perceptron, with optional residual connections, normalisation and dropout."""

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.models.common import DEFAULT_HPARAMS, check_layer_options, check_widths
from jaxdyn.models.layers import activate, dropout, kernel_initializer, normalize, sow_layer


@dataclass(frozen=True)
class MLPConfig:
    """``[model] kind = "mlp"``."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init: str = "lecun_normal"
    init_scale: float = 1.0  # member hyperparameter
    residual: bool = False  # h + act(W h) wherever a layer keeps the width
    norm: str = "none"  # none | batch | layer, after each hidden Dense, before the activation
    dropout: float = 0.0  # member hyperparameter: after each hidden activation
    leaky_slope: float = 0.01  # member hyperparameter: for activation = "leaky_relu"

    def check(self, input_shape) -> None:
        check_layer_options(self)
        check_widths("model.hidden", self.hidden)


class MLP(nn.Module):
    """Dense layers hidden_0 .. hidden_{n-1}, then a linear head.

    Layer names are stable (``hidden_0``, ``hidden_1``, ..., ``head``) so that
    per-layer probes and saved params line up across runs; each layer's output is
    sown under its name. Inputs of any rank are flattened after the batch axis.
    """

    hidden: tuple[int, ...]
    n_out: int
    activation: str = "relu"
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes
    residual: bool = False
    norm: str = "none"
    use_dropout: bool = False

    @classmethod
    def from_config(cls, cfg: MLPConfig, input_shape, n_out: int, use_dropout: bool):
        return cls(tuple(cfg.hidden), n_out, cfg.activation, cfg.init, cfg.residual, cfg.norm, use_dropout)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        hparams = DEFAULT_HPARAMS if hparams is None else hparams
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            # BatchNorm removes a bias's effect, leaving it a gradient of pure rounding noise
            # that Adam would blow up to full-size steps: no bias before it.
            h = nn.Dense(width, use_bias=self.norm != "batch",
                         kernel_init=kernel_initializer(self, self.kernel_init, hparams), name=f"hidden_{i}")(x)
            h = normalize(self.norm, h, train, name=f"norm_{i}")
            h = activate(self.activation, h, hparams)
            if self.use_dropout:
                h = dropout(self, h, hparams["dropout"], train)
            x = x + h if self.residual and x.shape[-1] == width else h
            sow_layer(self, f"hidden_{i}", x)
        logits = nn.Dense(self.n_out, kernel_init=kernel_initializer(self, self.kernel_init, hparams), name="head")(x)
        sow_layer(self, "head", logits)
        return logits
