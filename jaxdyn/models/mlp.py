"""Multilayer perceptron."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdyn.models.layers import ACTIVATIONS, INITIALIZERS


class MLP(nn.Module):
    """Dense layers ``hidden_0 .. hidden_{n-1}`` then a linear ``head``.

    Layer names are stable (``hidden_0``, ``hidden_1``, ..., ``head``) so that
    per-layer probes and saved params line up across runs. Inputs of any rank are
    flattened after the batch axis.
    """

    hidden: Sequence[int]
    n_out: int
    activation: str = "relu"
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=INITIALIZERS[self.kernel_init](), name=f"hidden_{i}")(x)
            x = act(x)
        return nn.Dense(self.n_out, kernel_init=INITIALIZERS[self.kernel_init](), name="head")(x)
