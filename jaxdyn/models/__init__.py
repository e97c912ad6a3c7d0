"""Model registry: kind -> (config fields, module builder, shape check).

Every model is a flax.linen module with no training logic, called as
``module.apply(variables, x, train=..., hparams=...)`` on ``x [B, *input_shape]``
and returning ``[B, n_out]``. It reads the member hyperparameters it uses
(``dropout``, ``leaky_slope``) from ``hparams``, keeps BatchNorm statistics in
``batch_stats``, draws dropout masks from the ``dropout`` RNG stream, and sows
each layer's output under the layer's own name (``layers.sow_layer``:
``intermediates["hidden_0"] = (h,)``), which costs nothing unless the caller
collects ``intermediates``.

Adding a model is one module (its config dataclass beside it) plus one entry here.
"""

from dataclasses import dataclass
from typing import Callable

from jaxdyn.hparams import HParam
from jaxdyn.models.cnn import CNN, CNNConfig
from jaxdyn.models.common import CHOICES, HPARAMS
from jaxdyn.models.layers import ACTIVATIONS, INITIALIZERS, NORMS
from jaxdyn.models.linear import Linear, LinearConfig
from jaxdyn.models.mlp import MLP, MLPConfig
from jaxdyn.models.rnn import RNN, RNNConfig
from jaxdyn.models.transformer import Transformer, TransformerConfig
from jaxdyn.models.upconv import UpConv, UpConvConfig
from jaxdyn.models.user import ModuleConfig


@dataclass(frozen=True)
class ModelSpec:
    """One model kind.

    Attributes:
      config: frozen dataclass of the kind's fields, each with a default; its ``kind``
        field names the kind.
      build: ``(config, input_shape, n_out, use_dropout) -> nn.Module``. ``use_dropout``
        is False when every member's rate is 0, so the default path draws no masks. ``config.init``
        may be the tuple of initialisers a cohort's members use (``model.init`` is a member
        choice); the module draws each kernel with ``layers.kernel_initializer``.
      check: ``(config, input_shape) -> None``; raises ``ConfigError`` naming the field
        (choices, sizes, a conv stack that shrinks to nothing) before anything compiles.
      doc: one line for ``jaxdyn list``.
      hidden_activation: ``config -> name`` of the nonlinearity whose outputs the hidden
        layers sow (for the activation probe's dead and saturated units).
      generates: the model makes examples (a GAN's generator): ``build`` takes the shape
        of one example in place of ``n_out``, and ``check`` takes it as ``output_shape``.
      reads_tokens: ``build`` takes ``vocab`` (the dataset's token ids per position, 0 for
        real-valued inputs) and embeds token inputs.
    """

    config: type
    build: Callable
    check: Callable
    doc: str
    hidden_activation: Callable = lambda cfg: getattr(cfg, "activation", "identity")
    generates: bool = False
    reads_tokens: bool = False


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(MLPConfig, MLP.from_config, MLPConfig.check, MLP.__doc__.splitlines()[0]),
    "cnn": ModelSpec(CNNConfig, CNN.from_config, CNNConfig.check, CNN.__doc__.splitlines()[0]),
    "linear": ModelSpec(LinearConfig, Linear.from_config, LinearConfig.check, Linear.__doc__.splitlines()[0]),
    # Every cell's output is tanh-bounded: Elman's tanh, LSTM's o * tanh(c), GRU's mix of tanh states.
    "rnn": ModelSpec(RNNConfig, RNN.from_config, RNNConfig.check, RNN.__doc__.splitlines()[0], lambda cfg: "tanh"),
    "transformer": ModelSpec(TransformerConfig, Transformer.from_config, TransformerConfig.check,
                             Transformer.__doc__.splitlines()[0], reads_tokens=True),
    "upconv": ModelSpec(UpConvConfig, UpConv.from_config, UpConvConfig.check, UpConv.__doc__.splitlines()[0],
                        generates=True),
}


def _user_activation(cfg) -> str:
    activation = getattr(cfg, "activation", "identity")
    return activation if isinstance(activation, str) and activation in ACTIVATIONS else "identity"


# A user's module (``kind = "package.module:Class"``): its config carries its own build and check.
USER_MODEL = ModelSpec(ModuleConfig, lambda cfg, input_shape, n_out, use_dropout: cfg.build(),
                       lambda cfg, input_shape: cfg.check(input_shape),
                       "your own flax.linen.Module: kind = \"package.module:Class\", its fields beside",
                       _user_activation)


def model_spec(cfg) -> ModelSpec:
    """The registry entry of a model config: a zoo kind's, or the one for a user's module."""
    return USER_MODEL if isinstance(cfg, ModuleConfig) else MODELS[cfg.kind]


def model_hparams(cfg) -> dict[str, HParam]:
    """The member hyperparameters a model config has: the zoo's that are fields of its kind,
    or a user module's declared ones (and ``model.init_scale``)."""
    if isinstance(cfg, ModuleConfig):
        return cfg.hparams()
    return {k: h for k, h in HPARAMS.items() if hasattr(cfg, k.split(".")[1])}


def build_model(cfg, input_shape: tuple[int, ...], n_out: int, use_dropout: bool = False, output_shape=None,
                vocab: int = 0):
    """Flax module for ``cfg`` (a kind's config dataclass) with ``n_out`` outputs; a generating
    kind makes examples of ``output_shape`` instead (flattened: ``prod(output_shape)`` outputs).
    ``vocab``: the dataset's token ids per position (0: real-valued inputs), for a kind that reads tokens."""
    spec = model_spec(cfg)
    if spec.generates:
        return spec.build(cfg, input_shape, tuple(output_shape or (n_out,)), use_dropout)
    if spec.reads_tokens:
        return spec.build(cfg, input_shape, n_out, use_dropout, vocab=vocab)
    return spec.build(cfg, input_shape, n_out, use_dropout)


def check_model(cfg, input_shape, output_shape=None) -> None:
    """``cfg``'s own checks for inputs of ``input_shape`` (and, for a generator, examples of ``output_shape``)."""
    spec = model_spec(cfg)
    if spec.generates:
        spec.check(cfg, input_shape, output_shape)
    else:
        spec.check(cfg, input_shape)


__all__ = ["ACTIVATIONS", "CHOICES", "CNN", "HPARAMS", "INITIALIZERS", "MLP", "MODELS", "NORMS", "RNN", "ModelSpec", "ModuleConfig",
           "Transformer", "UpConv", "build_model", "check_model", "model_hparams", "model_spec"]
