"""Checks shared by the model kinds' config declarations."""

from jaxdyn.errors import ConfigError, closest
from jaxdyn.models.layers import ACTIVATIONS, INITIALIZERS, NORMS

DEFAULT_HPARAMS = {"dropout": 0.0, "leaky_slope": 0.01}


def choice(where: str, value, options) -> None:
    if value not in options:
        raise ConfigError(f"{where} = {value!r} is not known{closest(value, options)}")


def check_layer_options(cfg) -> None:
    """The fields most kinds share: activation, init, norm (where the kind has them)."""
    for name, options in (("activation", ACTIVATIONS), ("init", INITIALIZERS), ("norm", NORMS)):
        if hasattr(cfg, name):
            choice(f"model.{name}", getattr(cfg, name), options)


def check_widths(where: str, widths, allow_empty: bool = True) -> None:
    if (not widths and not allow_empty) or any(w <= 0 for w in widths):
        raise ConfigError(f"{where} = {list(widths)}: give one positive width per layer, e.g. [100, 100]")
