"""Supervised classification: one member's init, step and evaluation.

Everything here works on ONE member; ``population.py`` vmaps it. Randomness
comes from the member's own keys folded with its step number, so data order does
not depend on chunking and a resume needs no RNG bookkeeping.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdyn.data import Dataset
from jaxdyn.optim import OptimizerFamily


class MemberState(NamedTuple):
    """Everything that evolves in one member (leaves gain a leading ``[K]`` in a population)."""

    params: Any
    model_state: Any  # non-trained variables such as BatchNorm statistics; {} if none
    opt_state: Any
    step: jax.Array  # int32 []: optimisation steps taken
    data_key: jax.Array  # uint32 [2]: raw key data (checkpoint-safe), from data_seed
    alive: jax.Array  # bool []: False once the member diverged and was frozen
    diverged_at: jax.Array  # int32 []: step at which it diverged, -1 while alive


class Seeds(NamedTuple):
    init_seed: jax.Array  # int32 []
    data_seed: jax.Array  # int32 []


@dataclass(frozen=True)
class SupervisedTask:
    """Minibatch training of a classifier with softmax cross-entropy.

    Attributes:
      model: a Flax module mapping ``[B, ...]`` inputs to ``[B, n_classes]`` logits.
      optimizer: the optimizer family; per-member values come in ``hparams``.
      batch_size: examples per step, drawn uniformly with replacement from the
        training set by each member's own data key.
      input_shape: shape of one example.
    """

    model: nn.Module
    optimizer: OptimizerFamily
    batch_size: int
    input_shape: tuple[int, ...]

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        """One member's state from its seeds and hyperparameters (scalars)."""
        init_key = jax.random.PRNGKey(seeds.init_seed)
        dummy = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(init_key, dummy, train=False)
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        opt_state = self.optimizer.transform(hparams).init(params)
        return MemberState(
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            step=jnp.zeros((), jnp.int32),
            data_key=jax.random.PRNGKey(seeds.data_seed),
            alive=jnp.ones((), bool),
            diverged_at=jnp.full((), -1, jnp.int32),
        )

    def loss_and_metrics(self, params, model_state, x, y):
        logits = self.model.apply({"params": params, **model_state}, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        accuracy = (logits.argmax(-1) == y).mean()
        return loss, {"loss": loss, "accuracy": accuracy}

    def step(self, state: MemberState, data: Dataset) -> tuple[MemberState, dict]:
        """One optimisation step of one member on a minibatch of ``data``'s training set."""
        key = jax.random.fold_in(state.data_key, state.step)
        idx = jax.random.randint(key, (self.batch_size,), 0, data.x_train.shape[0])
        x, y = data.x_train[idx], data.y_train[idx]
        grads, metrics = jax.grad(self.loss_and_metrics, has_aux=True)(
            state.params, state.model_state, x, y
        )
        # The optimizer reads this member's hyperparameters from opt_state; the
        # placeholder values given here only shape the (unused) init.
        tx = self.optimizer.transform(self.optimizer.defaults)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

    def evaluate(self, state: MemberState, x: jax.Array, y: jax.Array) -> dict:
        """Loss and accuracy of one member on the whole of ``x, y``."""
        return self.loss_and_metrics(state.params, state.model_state, x, y)[1]
