"""A model of the user's own: ``[model] kind = "package.module:Class"``, any ``flax.linen.Module``.

The table's other keys are the module's constructor fields (structural: a grid over
one makes a cohort per value) or the member hyperparameters the class declares in a
class attribute ``hparams = {"model.temperature": jaxdyn.HParam(1.0, low=0.0)}``
(arrays per member: a grid over one never recompiles). Every model also has
``model.init_scale``, which the task applies to the kernels after initialisation.

The module is called as ``apply(variables, x, train=...)`` on ``x [B, *input_shape]``
and returns ``[B, n_out]``. Accepting ``hparams=`` is optional; a module that does
gets every member hyperparameter of its member (name -> float32 scalar). BatchNorm
statistics, dropout (the ``dropout`` RNG stream) and sown ``intermediates`` work as
in the zoo's own models.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn import extension
from jaxdyn.errors import ConfigError
from jaxdyn.hparams import HParam
from jaxdyn.models.common import HPARAMS

INIT_SCALE = {"model.init_scale": HPARAMS["model.init_scale"]}  # the task applies it to any model's kernels
TOML_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class ModuleConfig:
    """``[model]`` for a user's module: its import path and the table's other keys.

    Attributes:
      kind: ``"package.module:Class"``.
      values: ``(key, value)`` pairs: constructor fields and member hyperparameters.
    """

    kind: str
    values: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, name):  # cfg.model.width, as for the zoo's config dataclasses
        if not name.startswith("__"):
            for key, value in object.__getattribute__(self, "values"):
                if key == name:
                    return value
            declared = self.hparams().get(f"model.{name}")
            if declared is not None:
                return declared.default
        raise AttributeError(name)

    def module_class(self) -> type:
        cls = extension.resolve(self.kind, "model.kind")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"model.kind = {self.kind!r} is {cls!r}, not a flax.linen.Module class; name a "
                              "module class, or a zoo kind (`jaxdyn list`)")
        return cls

    def fields(self) -> dict[str, Any]:
        """The constructor's fields -> type annotation (``parent`` and ``name`` left out)."""
        cls = self.module_class()
        hints = typing.get_type_hints(cls) if hasattr(cls, "__annotations__") else {}
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)
                if f.init and f.name not in ("parent", "name")}

    def hparams(self) -> dict[str, HParam]:
        """``model.init_scale`` and the member hyperparameters the class declares."""
        return {**INIT_SCALE, **declared_hparams(self.module_class(), "model", f"model.kind = {self.kind!r}")}

    def replace(self, **changes) -> "ModuleConfig":
        values = dict(self.values) | changes
        return ModuleConfig(self.kind, tuple(values.items()))

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.values}}

    def build(self) -> nn.Module:
        """The module, constructed from the fields in ``values``."""
        cls = self.module_class()
        numbers = {k.split(".", 1)[1] for k in self.hparams()}
        try:
            module = cls(**{k: v for k, v in self.values if k not in numbers})
        except TypeError as e:
            raise ConfigError(f"model.kind = {self.kind!r}: cannot construct it from the [model] table ({e}); "
                              f"it takes: {', '.join(self.fields()) or 'no fields'}") from None
        if extension.accepts(type(module).__call__, "hparams"):
            return module
        declared = [k for k in self.hparams() if k not in INIT_SCALE]
        if declared:
            raise ConfigError(f"model.kind = {self.kind!r} declares {', '.join(declared)} but its __call__ takes no "
                              "hparams=, so the numbers could never reach it; add hparams=None to __call__ and read "
                              f"hparams[{declared[0].split('.')[1]!r}]")
        return WithoutHparams(module)

    def check(self, input_shape, n_out: int | None = None) -> None:
        """Initialise and call the module on ``[2, *input_shape]`` zeros as shapes only
        (``jax.eval_shape``: nothing compiles), with its declared numbers at their defaults;
        its output must be ``[2, n_out]``."""
        module = self.build()
        hp = {k.split(".", 1)[1]: jnp.float32(h.default) for k, h in self.hparams().items()}
        x = jnp.zeros((2, *input_shape), jnp.float32)
        try:
            def init_and_apply(key):
                variables = module.init(key, x, train=False, hparams=hp)
                return module.apply(variables, x, train=False, hparams=hp)
            out = jax.eval_shape(init_and_apply, jax.random.PRNGKey(0))
        except ConfigError:
            raise
        except KeyError as e:  # hparams[name] of a number it did not declare
            raise ConfigError(f"model.kind = {self.kind!r} reads {e} from hparams, which has no such member number; "
                              f"declare it in the class: hparams = {{\"model.{e.args[0]}\": jaxdyn.HParam(default)}}"
                              ) from None
        except Exception as e:  # the user's code: say where it came from
            raise ConfigError(f"model.kind = {self.kind!r}: calling it as apply(variables, x, train=False) on "
                              f"inputs of shape {list(x.shape)} failed: {type(e).__name__}: {e}") from None
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise ConfigError(f"model.kind = {self.kind!r} returns {type(out).__name__}; a model returns one "
                              f"array [batch, outputs]")
        if out.ndim != 2:
            raise ConfigError(f"model.kind = {self.kind!r} maps inputs {list(x.shape)} to {list(out.shape)}; a model "
                              "returns one row of outputs per example, [batch, outputs]: flatten inside the module "
                              "(x.reshape(x.shape[0], -1)) before the last layer")
        if n_out is not None and tuple(out.shape) != (2, n_out):
            raise ConfigError(f"model.kind = {self.kind!r} maps inputs {list(x.shape)} to {list(out.shape)}, but "
                              f"the dataset needs [batch, {n_out}] (one output per class, or per target value): "
                              f"give the module {n_out} outputs")


@dataclass(frozen=True)
class WithoutHparams:
    """A module whose ``__call__`` takes no ``hparams=``, called as if it did: the task passes
    every member's numbers, and this drops them."""

    module: nn.Module

    def init(self, rngs, *args, hparams=None, **kwargs):
        return self.module.init(rngs, *args, **kwargs)

    def apply(self, variables, *args, hparams=None, **kwargs):
        return self.module.apply(variables, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "module"), name)


def declared_hparams(obj, section: str, where: str) -> dict[str, HParam]:
    """The member hyperparameters a component declares in its ``hparams`` attribute, checked."""
    declared = getattr(obj, "hparams", None)
    if declared is None:
        return {}
    if not isinstance(declared, dict) or not all(isinstance(h, HParam) for h in declared.values()):
        raise ConfigError(f"{where}: its hparams attribute must be a dict such as "
                          f"{{\"{section}.temperature\": jaxdyn.HParam(1.0, low=0.0)}}")
    for key, h in declared.items():
        if not (isinstance(key, str) and key.startswith(f"{section}.") and key.count(".") == 1
                and key.split(".")[1].isidentifier()):
            raise ConfigError(f"{where}: declared member hyperparameter {key!r} must be named "
                              f"\"{section}.<name>\"")
        if h.problem(h.default) or not math.isfinite(h.default):
            raise ConfigError(f"{where}: {key}'s default {h.default!r} {h.problem(h.default) or 'is not finite'}")
    return dict(declared)


def from_module(module: nn.Module) -> dict:
    """The ``[model]`` table of a module instance handed to ``jaxdyn.run``: its import path and its
    fields (those that differ from the class's defaults are all a config needs, but all are kept
    so that config.toml shows the whole module)."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model = {module!r}: pass a flax.linen.Module instance (or set [model] in the config)")
    table = {"kind": extension.remember(type(module))}
    for f in dataclasses.fields(module):
        if not f.init or f.name in ("parent", "name"):
            continue
        value = getattr(module, f.name)
        if not _tomlable(value):
            raise ConfigError(
                f"model = {type(module).__name__}(...): field {f.name} = {value!r} cannot be written to config.toml "
                "(fields must be numbers, strings, booleans or lists of them); take a name and look the object "
                "up inside the module instead")
        table[f.name] = np.asarray(value).tolist() if isinstance(value, (tuple, list, np.generic)) else value
    return table


def _tomlable(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_tomlable(v) for v in value)
    return isinstance(value, TOML_TYPES + (np.integer, np.floating))
