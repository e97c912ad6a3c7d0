"""Configurations that run but measure nothing, refused from traced shapes before compiling.

Some settings are valid one by one and degenerate together; only the traced
program shows it. Each check here traces (``jax.eval_shape``: nothing compiles)
and refuses with the field and the fix:

- BatchNorm in training mode over one value per channel: the batch mean is the
  value itself, so every normalised unit is 0 (then the learned shift) and nothing
  of the input reaches the loss. PyTorch refuses it ("Expected more than 1 value
  per channel when training"); so do we, for the training step (``train.batch_size``
  = 1 in an MLP, or 1 once a CNN's feature map has shrunk to 1×1) and for the
  probes that use the probe batch's own statistics (``probes.batch_size``).
- Lanczos ``probes.hessian.k`` or ``iters`` beyond the number of parameters: a
  Krylov space cannot be larger than the space it lives in.
"""

import math

import flax.linen as nn
import jax
import numpy as np

from jaxdyn.memory import abstract_dataset
from jaxdyn.errors import ConfigError


def batch_norm_inputs(fn, *args) -> list[tuple[str, tuple[int, ...], int]]:
    """Every BatchNorm that normalises with its batch's statistics while ``fn(*args)`` is traced.

    Returns:
      ``(layer path, input shape, values per channel)`` for each such call, in call order;
      values per channel is the product of the input's non-feature axes.
    """
    seen = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            given = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
            running = module.use_running_average if given is None else given
            if not running:
                shape = tuple(args[0].shape)
                features = {a % len(shape) for a in np.atleast_1d(module.axis)}
                per_channel = math.prod(d for i, d in enumerate(shape) if i not in features)
                seen.append(("/".join(module.path) or module.name or "BatchNorm", shape, per_channel))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(fn, *args)
    return seen


def check_batch_norm(cohort, task, state) -> None:
    """Refuse a training step that batch-normalises one value per channel (``state``: one
    member's shapes, from ``jax.eval_shape`` of ``init``). Raises ConfigError."""
    cfg = cohort.config
    data = abstract_dataset(cfg)
    n_train = data.x_train.shape[0]
    for layer, shape, per_channel in batch_norm_inputs(task.step, state, data):
        if per_channel < 2:
            batch = (f"train.full_batch with a training set of {n_train}" if cfg.train.full_batch
                     else f"train.batch_size = {cfg.train.batch_size}")
            raise ConfigError(
                f"BatchNorm layer {layer!r} gets input {list(shape)} in training ({batch}): one value per channel, "
                "so every normalised unit is 0 and nothing of the input reaches the loss. Use a batch of at least "
                "2 (train.batch_size), or another norm (model.norm = \"layer\" or \"none\")")


def check_probes(probes, state, x, y) -> None:
    """Refuse probes that batch-normalise one value per channel of the probe batch, and Lanczos
    ``k`` or ``iters`` beyond a view's parameter count.

    Args:
      probes: the cohort's ``ProbeSet``; ``state``: one member's shapes; ``x, y``: the probe batch's.
    """
    for layer, shape, per_channel in batch_norm_inputs(probes.check, state, x, y):
        if per_channel < 2:
            raise ConfigError(
                f"probes.batch_size = {x.shape[0]}: the probes see BatchNorm layer {layer!r} with input "
                f"{list(shape)}, one value per channel, so the objective they measure ignores the input. "
                "Raise probes.batch_size to at least 2")
    options = dict((p.name, o) for p, o in probes.enabled).get("hessian")
    if options is None:
        return
    for view in probes.views:
        params = jax.eval_shape(lambda s, v=view: v.state(s).params, state)
        dim = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
        for name in ("k", "iters"):
            value = getattr(options, name)
            if value > dim:
                whose = f" ({view.prefix.rstrip('_')})" if view.prefix else ""
                raise ConfigError(f"probes.hessian.{name} = {value}: the model{whose} has only {dim} parameters, so "
                                  f"at most {dim} eigenvalues and {dim} Lanczos iterations exist; use at most {dim}")
