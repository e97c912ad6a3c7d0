"""Logistic (or linear) regression: the baseline every other model should beat."""

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.models.common import check_layer_options
from jaxdyn.models.layers import kernel_initializer, sow_layer


@dataclass(frozen=True)
class LinearConfig:
    """``[model] kind = "linear"``."""

    kind: str = "linear"
    init: str = "lecun_normal"
    init_scale: float = 1.0  # member hyperparameter

    def check(self, input_shape) -> None:
        check_layer_options(self)


class Linear(nn.Module):
    """One dense layer from the flattened input to the outputs (logistic regression with cross-entropy)."""

    n_out: int
    kernel_init: str | tuple[str, ...] = "lecun_normal"  # a name, or the names a cohort mixes

    @classmethod
    def from_config(cls, cfg: LinearConfig, input_shape, n_out: int, use_dropout: bool):
        return cls(n_out, cfg.init)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False, hparams=None) -> jnp.ndarray:
        logits = nn.Dense(self.n_out, kernel_init=kernel_initializer(self, self.kernel_init, hparams), name="head")(
            x.reshape(x.shape[0], -1))
        sow_layer(self, "head", logits)
        return logits
