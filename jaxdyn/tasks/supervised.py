"""Supervised learning, classification or regression: one member's init, step and evaluation.

Everything here works on ONE member; ``population.py`` vmaps it. Randomness
comes from the member's own keys folded with its step number, so data order does
not depend on chunking and a resume needs no RNG bookkeeping.
"""

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdyn.data import Augment, Dataset, noisy_labels
from jaxdyn.hparams import HParam
from jaxdyn.losses import LOSSES, is_weight, squared_error, weight_penalty
from jaxdyn.models.layers import INIT_INDEX, SOWN
from jaxdyn import streams
from jaxdyn.optim import OptimizerFamily
from jaxdyn.streams import Stream
from jaxdyn.tasks.base import MemberState, Seeds, fresh_state  # noqa: F401 (MemberState, Seeds: re-exported)

HPARAMS = {
    "train.grad_clip": HParam(
        0.0, doc="clip each member's gradient to this global norm (its own, never the population's); 0 = off"),
    "train.ema_decay": HParam(
        0.0, high=1.0, doc="keep an exponential moving average of the weights, ema <- d ema + (1 - d) w after "
                           "every step (from the initial weights; Polyak averaging), evaluated beside the raw "
                           "weights as test_loss_ema / test_accuracy_ema; 0 = off"),
}


class EmaOptState(NamedTuple):
    """The optimizer's state and the weights' moving average (``train.ema_decay``)."""

    inner: Any
    ema: Any


@dataclass(frozen=True)
class SupervisedTask:
    """Minibatch training of a classifier or a regressor.

    Attributes:
      model: a Flax module mapping ``[B, ...]`` inputs to ``[B, n_out]`` outputs:
        ``prod(target_shape) · n_classes`` logits, or ``prod(target_shape)`` values.
      optimizer: the optimizer family; per-member values come in ``hparams``.
      batch_size: examples per step, drawn uniformly with replacement from the
        training set by each member's own data key (or new ones from ``sample``).
      input_shape: shape of one example.
      schedule: ``(count, hparams) -> learning rate`` of one member, or None (constant).
      loss: the objective's name in ``losses.LOSSES``, ``auto`` resolved. The ``loss``
        metric is always the plain cross-entropy (classes) or mean squared error (values),
        whatever the objective (``custom_loss`` too), so members compare.
      n_classes: classes per label; 0 for regression (float targets).
      target_shape: shape of one example's target (``(L,)``: L labels, e.g. the copy task).
    """

    model: nn.Module
    optimizer: OptimizerFamily
    batch_size: int
    input_shape: tuple[int, ...]
    loss: str = "cross_entropy"
    schedule: Callable | None = None  # (count, hparams) -> this member's learning rate; None: constant
    full_batch: bool = False  # every step on the whole training set, in order: gradient descent
    label_noise: bool = False  # compiled in only when some member's data.label_noise > 0
    # The L1/L2 penalties and global-norm clipping: each compiled out when every member's numbers are
    # 0 (an identity then: the objective + 0, the gradients x 1), saving passes over the weights.
    penalty: bool = True
    clip: bool = True
    # Label smoothing, compiled out likewise when no member smooths: the cross-entropy then reads the
    # integer labels (no one-hot), the very expression of the ``loss`` metric, which XLA computes once.
    smoothing: bool = True
    n_classes: int = 10
    target_shape: tuple[int, ...] = ()
    augment: Augment = Augment()  # training batches only; empty (the default) compiles to nothing
    track_updates: bool = False  # per-layer update norms in the step metrics (the norms probe)
    # A loss of the user's own: (outputs [B, n_out], targets, hparams) -> batch mean; replaces ``loss``.
    custom_loss: Callable | None = None
    # data.fresh: (key, batch_size) -> (x, y), new training examples each step instead of a draw from the set
    sample: Callable | None = None
    ema: bool = False  # keep the weights' moving average in the optimizer state (some member's ema_decay > 0)

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        """One member's state from its seeds and hyperparameters (name -> scalar; and ``init``, the
        member's index among its cohort's initialisers, where the cohort mixes them: read here only)."""
        init_key = streams.key(jax.random.PRNGKey(seeds.init_seed), Stream.INIT)
        dummy = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(init_key, dummy, train=False, hparams=hparams)
        hparams = {k: v for k, v in hparams.items() if k != INIT_INDEX}
        scale = hparams["init_scale"]
        params = jax.tree_util.tree_map_with_path(
            lambda path, w: w * scale if is_weight(path) else w, variables["params"])
        # Init collects every collection, sown intermediates too: keep only real state.
        model_state = {k: v for k, v in variables.items() if k != "params" and k not in SOWN}
        opt_state = self.optimizer.transform(hparams).init(params)
        if self.ema:
            opt_state = EmaOptState(opt_state, params)
        return fresh_state(params, opt_state, hparams, seeds, model_state)

    def loss_and_metrics(self, params, model_state, x, y, hparams):
        """Evaluation mode: running BatchNorm statistics, no dropout."""
        logits = self.model.apply({"params": params, **model_state}, x, train=False, hparams=hparams)
        scores = self._scores(logits, y)
        return scores["loss"], scores

    def _outputs(self, out: jax.Array) -> jax.Array:
        """The model's ``[B, n_out]`` as ``[B, *target_shape, n_classes]`` logits or ``[B, *target_shape]`` values."""
        return out.reshape(out.shape[0], *self.target_shape, *((self.n_classes,) if self.n_classes else ()))

    def _scores(self, out: jax.Array, y: jax.Array) -> dict:
        """Plain cross-entropy and accuracy (mean over every label), or plain mean squared error."""
        out = self._outputs(out)
        if not self.n_classes:
            return {"loss": jnp.square(out - y).mean()}
        return {"loss": optax.softmax_cross_entropy_with_integer_labels(out, y).mean(),
                "accuracy": (out.argmax(-1) == y).mean()}

    def step(self, state: MemberState, data: Dataset, examples=None, anchor=None) -> tuple[MemberState, dict]:
        """One optimisation step of one member on a minibatch of ``data``'s training set.

        The objective is the (label-smoothed) cross-entropy plus the weight
        penalties; the ``loss`` metric is the plain cross-entropy, comparable
        across members whatever their penalties.

        Args:
          examples: a federated client's examples ``(order [N], start, count)`` (int32): the batch
            is ``order[start + j]``, j uniform in ``[0, count)`` (``federated.partition``); None: the
            whole training set.
          anchor: params the gradient is pulled towards with FedProx's ``prox_mu · (w - anchor)``
            (the gradient of ``prox_mu / 2 ||w - anchor||^2``; Li et al. 2020); None: no pull.
        """
        hp = state.hparams
        noise_key = state.data_key  # label noise: a property of example idx under this key
        if self.full_batch:  # the whole set in order: no gather copy of it each step
            idx = jnp.arange(data.x_train.shape[0])
            x, y = data.x_train, data.y_train
        elif examples is not None:  # a client's own examples only
            order, start, count = examples
            key = streams.key(state.data_key, Stream.BATCH, state.step)
            idx = order[start + jax.random.randint(key, (self.batch_size,), 0, count)]
            x, y = data.x_train[idx], data.y_train[idx]
        elif self.sample is not None:  # new examples, never seen before: each has its own noise draw
            x, y = self.sample(streams.key(state.data_key, Stream.BATCH, state.step), self.batch_size)
            idx = jnp.arange(self.batch_size)
            noise_key = streams.key(state.data_key, Stream.LABEL_NOISE, state.step)  # this step's examples' root
        else:
            key = streams.key(state.data_key, Stream.BATCH, state.step)
            idx = jax.random.randint(key, (self.batch_size,), 0, data.x_train.shape[0])
            x, y = data.x_train[idx], data.y_train[idx]
        if self.label_noise:
            y = noisy_labels(y, idx, noise_key, hp["label_noise"], self.n_classes)
        if self.augment:
            x = self.augment(x, streams.key(state.data_key, Stream.AUGMENT, state.step), hp.get("noise_std"))

        rngs = {"dropout": streams.key(state.dropout_key, Stream.DROPOUT, state.step)}
        grads, (metrics, model_state) = jax.grad(self.objective, has_aux=True)(
            state.params, state.model_state, x, y, hp, rngs)
        if anchor is not None:
            grads = jax.tree.map(lambda g, w, a: g + hp["prox_mu"].astype(g.dtype) * (w - a), grads, state.params, anchor)
        if self.clip:
            grads = _clip_global_norm(grads, hp["grad_clip"])
        # The optimizer reads this member's numbers from state.hparams (copied into
        # inject_hyperparams' state); the placeholder values here only shape the init.
        numbers = {k: hp[k] for k in self.optimizer.defaults}
        if self.schedule is not None:  # this member's rate at this step, from its own schedule numbers
            numbers["learning_rate"] = self.schedule(state.step, hp).astype(jnp.float32)
        inner = state.opt_state.inner if self.ema else state.opt_state
        opt_state = inner._replace(hyperparams={**inner.hyperparams, **numbers})
        tx = self.optimizer.transform(self.optimizer.defaults)
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if self.ema:
            d = hp["ema_decay"]
            ema = jax.tree.map(lambda e, w: d.astype(w.dtype) * e + (1 - d).astype(w.dtype) * w, state.opt_state.ema,
                               params)
            opt_state = EmaOptState(opt_state, ema)
        if self.track_updates:  # as big_vision logs them: from the step's own update
            metrics["update_norm"] = layer_norms(updates)
            metrics["update_ratio"] = jax.tree.map(lambda u, w: u / w, metrics["update_norm"], layer_norms(state.params))
        new = state._replace(params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1)
        return new, metrics

    def objective(self, params, model_state, x, y, hp, rngs):
        """The training objective on a batch, in train mode, and ``(scores, new model state)``.

        Train mode: BatchNorm normalises with this batch's statistics (its running
        statistics come back updated); dropout draws its masks from ``rngs``. The
        objective is the (label-smoothed) cross-entropy or the squared error, plus
        the weight penalties.
        """
        logits, new_state = self.model.apply(
            {"params": params, **model_state}, x, train=True, hparams=hp, rngs=rngs, mutable=list(model_state))
        return self._fit(params, logits, y, hp), (self._scores(logits, y), new_state)

    def _fit(self, params, logits, y, hp) -> jax.Array:
        """The objective of the model's outputs ``logits``: cross-entropy (or the chosen
        classification loss) or the squared error, plus the weight penalties."""
        if self.custom_loss is not None:
            fit = self.custom_loss(logits, y, hp)
        elif not self.n_classes:
            fit = squared_error(self._outputs(logits), y)
        else:
            fit = LOSSES[self.loss](self._outputs(logits), y, hp["label_smoothing"] if self.smoothing else None)
        return fit + weight_penalty(params, hp["l1"], hp["l2"]) if self.penalty else fit

    def probe_loss(self, params, state: MemberState, x, y, batch_stats: bool = True) -> jax.Array:
        """The training objective as probes see it: dropout off, the running statistics
        untouched, and BatchNorm with the batch's own statistics as in training
        (``batch_stats``) or with the running ones (for per-example gradients, where a
        batch of one has no statistics of its own)."""
        hp = {**state.hparams, "dropout": jnp.zeros((), jnp.float32)}  # rate 0: the identity
        if not batch_stats:
            logits = self.model.apply({"params": params, **state.model_state}, x, train=False, hparams=hp)
            return self._fit(params, logits, y, hp)
        return self.objective(params, state.model_state, x, y, hp, {"dropout": jax.random.PRNGKey(0)})[0]

    def evaluate(self, state: MemberState, x: jax.Array, y: jax.Array) -> dict:
        """Loss and accuracy of one member on the whole of ``x, y``; with ``ema``, also those of its
        weights' moving average (``loss_ema``, ``accuracy_ema``; with the raw weights' BatchNorm
        statistics, which are not averaged)."""
        scores = self.loss_and_metrics(state.params, state.model_state, x, y, state.hparams)[1]
        if self.ema:
            averaged = self.loss_and_metrics(state.opt_state.ema, state.model_state, x, y, state.hparams)[1]
            scores.update({f"{k}_ema": v for k, v in averaged.items()})
        return scores


def layer_norms(tree) -> dict:
    """``{layer: ||tree[layer]||}`` over each top-level entry (a layer's kernel and bias
    together), and ``""``: the whole tree's norm."""
    norms = {name: optax.tree.norm(sub) for name, sub in tree.items()}
    norms[""] = jnp.sqrt(sum(jnp.square(n) for n in norms.values()))
    return norms


def _clip_global_norm(grads, threshold: jax.Array):
    """Scale ``grads`` to global norm ``threshold`` when larger; ``threshold = 0`` is off.

    One member's own norm (this runs inside the vmap), unlike clipping the stacked
    population tree, which would couple the members.
    """
    norm = optax.tree.norm(grads)
    factor = jnp.where((threshold > 0) & (norm > threshold), threshold / norm, 1.0)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
