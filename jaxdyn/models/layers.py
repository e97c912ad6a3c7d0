"""Name -> function registries for activations and weight initialisers."""

import flax.linen as nn

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}

# Each entry is a zero-argument factory so that every module gets a fresh initialiser.
INITIALIZERS = {
    "lecun_normal": nn.initializers.lecun_normal,
    "lecun_uniform": nn.initializers.lecun_uniform,
    "he_normal": nn.initializers.he_normal,
    "he_uniform": nn.initializers.he_uniform,
    "glorot_normal": nn.initializers.glorot_normal,
    "glorot_uniform": nn.initializers.glorot_uniform,
    "normal": lambda: nn.initializers.normal(stddev=0.01),
    "orthogonal": nn.initializers.orthogonal,
}
