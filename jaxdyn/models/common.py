"""Checks shared by the model kinds' config declarations."""

from jaxdyn.errors import ConfigError, choice
from jaxdyn.hparams import Choice, HParam
from jaxdyn.models.layers import ACTIVATIONS, INITIALIZERS, NORMS

# Member hyperparameters a model may read; a kind has those of its config fields.
HPARAMS = {
    "model.init_scale": HParam(1.0, low_open=True, doc="multiplier on every initial weight (kernels)"),
    "model.dropout": HParam(0.0, high=1.0, doc="dropout rate after each hidden layer, this member's own masks"),
    "model.leaky_slope": HParam(0.01, doc="negative slope of leaky_relu"),
}
# Member choices a model may honour: every zoo kind draws its kernels with
# ``layers.kernel_initializer``, which picks each member's scheme when a cohort mixes them.
CHOICES = {
    "model.init": Choice(tuple(INITIALIZERS), doc="initialiser of the kernels (`jaxdyn list`), each member's own "
                                                  "within one compiled init; structural for a module of your own"),
}
# What a model reads when called without a member's numbers (``hparams=None``).
DEFAULT_HPARAMS = {key.split(".")[1]: h.default for key, h in HPARAMS.items()}


def check_layer_options(cfg) -> None:
    """The fields most kinds share: activation, init, norm (where the kind has them)."""
    for name, options in (("activation", ACTIVATIONS), ("init", INITIALIZERS), ("norm", NORMS)):
        if hasattr(cfg, name):
            choice(f"model.{name}", getattr(cfg, name), options)


def check_widths(where: str, widths, allow_empty: bool = True) -> None:
    if (not widths and not allow_empty) or any(w <= 0 for w in widths):
        raise ConfigError(f"{where} = {list(widths)}: give one positive width per layer, e.g. [100, 100]")
