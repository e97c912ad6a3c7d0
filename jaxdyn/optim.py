"""Optimizer families: a name -> optax constructor plus the member hyperparameters it takes.

Every numeric hyperparameter is injected with ``optax.inject_hyperparams``, so it
lives in the optimizer state as an array. Under ``vmap`` each member therefore
carries its own learning rate, momentum, betas, ... and a new value never costs
a compile. The family itself (which optax function) is structural: a cohort axis.
"""

from dataclasses import dataclass
from typing import Callable, Mapping

import optax


@dataclass(frozen=True)
class OptimizerFamily:
    """One optax optimizer and its numeric hyperparameters.

    Attributes:
      make: optax constructor taking the hyperparameters as keyword arguments.
      defaults: every member hyperparameter of the family with its default.
      positive: hyperparameters that must be > 0.
      unit: hyperparameters that must lie in [0, 1).
    """

    make: Callable[..., optax.GradientTransformation]
    defaults: Mapping[str, float]
    positive: tuple[str, ...] = ()  # learning_rate may be 0: a member that never moves is a control
    unit: tuple[str, ...] = ()
    doc: str = ""

    def transform(self, hparams: Mapping) -> optax.GradientTransformation:
        """The injected optimizer. ``hparams`` values may be traced arrays (one member's)."""
        return optax.inject_hyperparams(self.make)(**{k: hparams[k] for k in self.defaults})


def _momentum(learning_rate, momentum):
    return optax.sgd(learning_rate, momentum=momentum)


def _nesterov(learning_rate, momentum):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


FAMILIES: dict[str, OptimizerFamily] = {
    "sgd": OptimizerFamily(optax.sgd, {"learning_rate": 0.1}, doc="plain SGD"),
    "momentum": OptimizerFamily(
        _momentum, {"learning_rate": 0.1, "momentum": 0.9}, unit=("momentum",),
        doc="SGD with heavy-ball momentum (Polyak 1964)",
    ),
    "nesterov": OptimizerFamily(
        _nesterov, {"learning_rate": 0.1, "momentum": 0.9}, unit=("momentum",),
        doc="SGD with Nesterov momentum (Nesterov 1983; Sutskever et al. 2013)",
    ),
    "adagrad": OptimizerFamily(
        optax.adagrad, {"learning_rate": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-7},
        positive=("eps",), doc="AdaGrad (Duchi et al. 2011)",
    ),
    "rmsprop": OptimizerFamily(
        optax.rmsprop, {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8},
        positive=("eps",), unit=("decay",), doc="RMSProp (Hinton 2012)",
    ),
    "adam": OptimizerFamily(
        optax.adam, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
        positive=("eps",), unit=("b1", "b2"), doc="Adam (Kingma & Ba 2015)",
    ),
    "adamw": OptimizerFamily(
        optax.adamw,
        {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-4},
        positive=("eps",), unit=("b1", "b2"),
        doc="Adam with decoupled weight decay (Loshchilov & Hutter 2019)",
    ),
}
