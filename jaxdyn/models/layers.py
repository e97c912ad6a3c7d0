"""The layer catalogue every model draws on: activations, initialisers, norms, member dropout.

Model modules follow one contract (see ``models/__init__.py``): ``__call__(x, *,
train, hparams)`` where ``hparams`` maps a member hyperparameter's bare name to
this member's scalar. Numbers that differ per member (dropout rate, leaky slope)
are read from ``hparams`` at call time, never baked into the module, so a new
value never recompiles.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": None,  # takes the member's slope: see activate()
    "softplus": nn.softplus,
    "identity": lambda x: x,
}
# For the activation probes of a later issue: units that can be dead or saturated.
RELU_FAMILY = ("relu", "leaky_relu", "gelu", "silu", "elu")
SATURATING = ("tanh", "sigmoid")


def activate(name: str, x: jax.Array, hparams) -> jax.Array:
    """Apply activation ``name``; ``leaky_relu`` uses this member's ``leaky_slope``."""
    if name == "leaky_relu":
        return jnp.where(x >= 0, x, hparams["leaky_slope"] * x)
    return ACTIVATIONS[name](x)


def _uniform(scale: float = 0.05):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


# Each entry is a zero-argument factory, so every layer gets a fresh initialiser.
# Variances (fan_in/fan_out as in Glorot & Bengio 2010, He et al. 2015, LeCun 1998):
# lecun 1/fan_in, he 2/fan_in, glorot 2/(fan_in + fan_out); uniform forms have the
# same variance. "normal" and "uniform" are fixed-scale (std 0.01, range ±0.05).
INITIALIZERS = {
    "zeros": lambda: nn.initializers.zeros,
    "normal": lambda: nn.initializers.normal(stddev=0.01),
    "uniform": _uniform,
    "lecun_normal": nn.initializers.lecun_normal,
    "lecun_uniform": nn.initializers.lecun_uniform,
    "he_normal": nn.initializers.he_normal,
    "he_uniform": nn.initializers.he_uniform,
    "kaiming_normal": nn.initializers.kaiming_normal,
    "kaiming_uniform": nn.initializers.kaiming_uniform,
    "glorot_normal": nn.initializers.glorot_normal,
    "glorot_uniform": nn.initializers.glorot_uniform,
    "xavier_normal": nn.initializers.xavier_normal,
    "xavier_uniform": nn.initializers.xavier_uniform,
    "orthogonal": nn.initializers.orthogonal,
}
# The variance each draws, as a function of (fan_in, fan_out), for tests and docs.
INIT_VARIANCE = {
    "zeros": lambda i, o: 0.0,
    "normal": lambda i, o: 0.01**2,
    "uniform": lambda i, o: 0.05**2 / 3,
    "lecun_normal": lambda i, o: 1 / i, "lecun_uniform": lambda i, o: 1 / i,
    "he_normal": lambda i, o: 2 / i, "he_uniform": lambda i, o: 2 / i,
    "kaiming_normal": lambda i, o: 2 / i, "kaiming_uniform": lambda i, o: 2 / i,
    "glorot_normal": lambda i, o: 2 / (i + o), "glorot_uniform": lambda i, o: 2 / (i + o),
    "xavier_normal": lambda i, o: 2 / (i + o), "xavier_uniform": lambda i, o: 2 / (i + o),
    "orthogonal": lambda i, o: 1 / max(i, o),  # orthonormal rows or columns
}

# The entry of ``hparams`` that holds a member's position among its cohort's initialisers
# while it initialises, when the cohort mixes them (``model.init`` as a member choice).
INIT_INDEX = "init"


def kernel_initializer(module: nn.Module, names, hparams):
    """A fresh kernel initialiser for a layer of ``module``: the one ``names`` names, or this
    member's among several.

    ``names`` is an ``INITIALIZERS`` name, or the tuple of names a cohort's members use. With
    more than one, initialisation reads the member's index ``hparams["init"]`` and
    ``lax.switch``es to that scheme: only the schemes present are compiled, and each branch
    draws exactly what the scheme alone draws from the same key, so the member's weights are
    bitwise those of a cohort of that scheme alone. Outside ``init`` flax traces an initialiser
    only for its shapes, which every scheme shares: the first stands in, and the index (not in
    a member's state) is not read.
    """
    if isinstance(names, str):
        return INITIALIZERS[names]()
    if len(names) == 1 or not module.is_initializing():
        return INITIALIZERS[names[0]]()
    if hparams is None or INIT_INDEX not in hparams:
        raise ValueError(f"this model mixes the initialisers {list(names)}: initialise it with "
                         f"hparams={{{INIT_INDEX!r}: index, ...}}, the member's position among them")
    index = jnp.asarray(hparams[INIT_INDEX]).astype(jnp.int32)
    schemes = [INITIALIZERS[name]() for name in names]
    return lambda key, shape, dtype=jnp.float32: lax.switch(
        index, [lambda k, f=f: f(k, shape, dtype) for f in schemes], key)


NORMS = ("none", "batch", "layer")
ATTENTION = "attention"  # the collection attention weights are sown into ([B, heads, T, T] per layer)
# Collections that only record what a call computed: never a member's state.
SOWN = ("intermediates", ATTENTION)


def normalize(kind: str, x: jax.Array, train: bool, name: str) -> jax.Array:
    """``none``, ``batch`` or ``layer`` normalisation of ``x``, called inside a compact module.

    BatchNorm keeps this member's own running statistics in ``batch_stats``; it is
    never given the member axis as ``axis_name``, so members never share statistics.
    Training normalises with the batch's statistics and updates the running ones;
    evaluation uses the running ones, so a prediction does not depend on the batch.
    """
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)(x)
    if kind == "layer":
        return nn.LayerNorm(name=name)(x)
    return x


def dropout(module: nn.Module, x: jax.Array, rate: jax.Array, train: bool) -> jax.Array:
    """Inverted dropout at this member's (traced) ``rate``; the identity in evaluation.

    flax's ``nn.Dropout`` takes its rate as a Python number and branches on it,
    so a rate that differs per member needs this form. The mask comes from the
    module's ``dropout`` stream, which the task seeds with the member's own
    dropout key folded with the step.
    """
    if not train:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, x.shape)
    return jnp.where(mask, x / keep, 0.0)


def sow_layer(module: nn.Module, name: str, value: jax.Array) -> jax.Array:
    """Keep ``value`` as ``intermediates[name] = (value, ...)``; ``name`` may also name a submodule.

    ``module.sow`` reserves ``name`` in the module's scope, where the layer's own
    submodule (``hidden_0``'s params) already holds it ("Duplicate use of scope
    name"). ``put_variable`` does not reserve, so a layer's parameters and its
    sown output share the layer's name. Like ``sow``, it stores nothing (and costs
    nothing) unless the caller made ``intermediates`` mutable.
    """
    if module.is_mutable_collection("intermediates"):
        module.put_variable("intermediates", name, module.get_variable("intermediates", name, ()) + (value,))
    return value


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel as flax's variance-scaling initialisers count them."""
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive
