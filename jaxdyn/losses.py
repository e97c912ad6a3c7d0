"""Training objectives and the weight penalties, with their member hyperparameters.

Everything here works on ONE member's arrays; the coefficients are that member's
(traced) scalars.
"""

import jax
import jax.numpy as jnp
import optax

from jaxdyn import extension
from jaxdyn.errors import ConfigError
from jaxdyn.hparams import HParam

HPARAMS = {
    "loss.l1": HParam(0.0, doc="L1 penalty l1 * sum|w| on weights (kernels), not biases or norm scales"),
    "loss.l2": HParam(0.0, doc="L2 penalty (l2 / 2) * sum w^2 on weights (kernels), not biases or norm scales"),
    "loss.label_smoothing": HParam(
        0.0, high=1.0, doc="mix the one-hot target with uniform: (1 - a) * onehot + a / classes"),
}


def is_weight(path) -> bool:
    """Weights are the ``kernel`` leaves; biases and norm scales are left alone."""
    return getattr(path[-1], "key", None) == "kernel"


def weight_penalty(params, l1: jax.Array, l2: jax.Array) -> jax.Array:
    """``l1 * sum|w| + (l2 / 2) * sum w^2`` over the weights, so one SGD step adds ``lr * l2 * w``."""
    weights = [w for path, w in jax.tree_util.tree_leaves_with_path(params) if is_weight(path)]
    abs_sum = sum(jnp.abs(w).sum() for w in weights)
    sq_sum = sum(jnp.square(w).sum() for w in weights)
    return l1 * abs_sum + 0.5 * l2 * sq_sum


def _targets(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | None) -> jax.Array:
    """One-hot targets ``[B, C]`` smoothed by ``smoothing`` (Szegedy et al. 2016); None: not smoothed."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    return onehot if smoothing is None else optax.smooth_labels(onehot, smoothing)


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | None) -> jax.Array:
    """Mean softmax cross-entropy against smoothed one-hot labels. ``smoothing`` None (no member
    smooths): against the integer labels, with no one-hot ``[B, C]`` built (the same number up to
    rounding: ``logsumexp - logit`` rather than ``-Σ onehot · log_softmax``)."""
    if smoothing is None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return optax.softmax_cross_entropy(logits, _targets(logits, labels, smoothing)).mean()


def mse(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | None) -> jax.Array:
    """``½ · mean over examples of Σ_outputs (output − onehot)²``: the squared loss of the
    edge-of-stability papers (Cohen et al. 2021), whose sharpness this scaling fixes."""
    return 0.5 * jnp.square(logits - _targets(logits, labels, smoothing)).sum(-1).mean()


def bce(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | None) -> jax.Array:
    """Sigmoid binary cross-entropy of every output against the one-hot target, summed over
    outputs and averaged over examples (each class a yes/no question)."""
    return optax.sigmoid_binary_cross_entropy(logits, _targets(logits, labels, smoothing)).sum(-1).mean()


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Regression's ``mse`` objective: ``½ · mean over examples of Σ_outputs (output − target)²``,
    the classifier's ``mse`` with the raw targets in place of one-hot labels."""
    return 0.5 * jnp.square(outputs - targets).reshape(outputs.shape[0], -1).sum(-1).mean()


# The training objective, by ``loss.name`` (structural: a cohort axis). The reported
# ``loss`` metric is always the plain cross-entropy (classes) or the plain mean squared
# error (values), so runs compare across objectives. ``auto`` is cross_entropy for a
# classification dataset and mse for a regression one.
LOSSES = {"auto": None, "cross_entropy": cross_entropy, "mse": mse, "bce": bce}
REGRESSION_LOSSES = ("auto", "mse")


def objective_name(name: str, regression: bool) -> str:
    """``loss.name`` with ``auto`` resolved for the dataset."""
    return ("mse" if regression else "cross_entropy") if name == "auto" else name


def logged_loss(name: str, regression: bool) -> str:
    """What a supervised run's ``loss`` metric is, in words, naming the objective where it is
    another (``loss.name = "mse"`` on classes logs the cross-entropy, so objectives compare)."""
    measured = "mean squared error" if regression else "cross-entropy"
    objective = objective_name(name, regression)
    if objective == ("mse" if regression else "cross_entropy"):
        return measured
    return f"{measured}; objective {objective}"


def user_loss(name: str):
    """A loss of the user's own, ``loss.name = "package.module:function"``, as the batch mean
    ``(outputs [B, n_out], targets [B, ...], hparams) -> []`` of its per-example values.

    The function maps the model's raw outputs and the targets to one loss per example, ``[B]``;
    it may take ``hparams=`` (the member's numbers, its own declared ones among them).
    """
    fn = extension.resolve(name, "loss.name")
    return lambda outputs, targets, hparams: _per_example(fn, outputs, targets, hparams).mean()


def _per_example(fn, outputs, targets, hparams):
    return fn(outputs, targets, hparams=hparams) if extension.accepts(fn, "hparams") else fn(outputs, targets)


def check_user_loss(name: str, info) -> None:
    """A user loss maps ``[2, n_out]`` outputs and ``[2, *target_shape]`` targets of the dataset to
    ``[2]`` (shapes only: nothing compiles). Raises ConfigError naming ``loss.name``."""
    fn = extension.resolve(name, "loss.name")
    if not callable(fn):
        raise ConfigError(f"loss.name = {name!r} is {type(fn).__name__}, not a function (outputs, targets) -> [batch]")
    outputs = jax.ShapeDtypeStruct((2, info.n_out), jnp.float32)
    targets = jax.ShapeDtypeStruct((2, *info.target_shape), jnp.int32 if info.n_classes else jnp.float32)
    hparams = {k.split(".")[1]: jax.ShapeDtypeStruct((), jnp.float32) for k in getattr(fn, "hparams", None) or {}}
    try:
        shape = jax.eval_shape(lambda o, t, h: _per_example(fn, o, t, h), outputs, targets, hparams).shape
    except Exception as e:  # the user's code: say where it came from
        raise ConfigError(f"loss.name = {name!r}: calling it on outputs {list(outputs.shape)} and targets "
                          f"{list(targets.shape)} ({targets.dtype.name}) failed: {type(e).__name__}: {e}") from None
    if shape != (2,):
        raise ConfigError(f"loss.name = {name!r} returns shape {list(shape)} for a batch of 2; return one loss per "
                          "example, shape [batch]")
