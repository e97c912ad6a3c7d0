"""Model registry: name -> builder from the model config section and the dataset's shape."""

from jaxdyn.models.layers import ACTIVATIONS, INITIALIZERS
from jaxdyn.models.mlp import MLP


def _mlp(cfg, n_out):
    return MLP(hidden=tuple(cfg.hidden), n_out=n_out, activation=cfg.activation, kernel_init=cfg.init)


MODELS = {"mlp": _mlp}


def build_model(cfg, n_out):
    """Flax module for ``cfg`` (a ``ModelConfig``) with ``n_out`` outputs."""
    return MODELS[cfg.kind](cfg, n_out)


__all__ = ["ACTIVATIONS", "INITIALIZERS", "MLP", "MODELS", "build_model"]
