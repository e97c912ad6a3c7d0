"""Python objects handed to ``jaxdyn.run`` (``model=``, ``data=``, ``loss=``, ``probes=``) as the
config tables that name them, so that ``config.toml`` records every component by import path."""

from typing import Mapping

from jaxdyn import extension
from jaxdyn.data import arrays
from jaxdyn.errors import ConfigError
from jaxdyn.models import user as user_model


def handed_over(model=None, data=None, loss=None, probes=None) -> dict:
    """Config tables naming the Python objects handed to ``jaxdyn.run`` by import path; each is
    remembered for this process (``extension``), so one without an importable home runs too.

    Args:
      model: a ``flax.linen.Module`` instance: ``[model]`` becomes its class's path and fields.
      data: arrays (``(x, y[, x_test, y_test])``, a dict, a ``Dataset``) or a function returning them.
      loss: a per-example loss function ``(outputs [B, n_out], targets [B, ...]) -> [B]``.
      probes: ``{name: function of a ProbeContext}``.
    """
    tables = {}
    if model is not None:
        tables["model"] = user_model.from_module(model)
    if data is not None:
        tables["data"] = {"name": arrays.hand_over(data)}
    if loss is not None:
        if not callable(loss):
            raise ConfigError(f"loss = {loss!r}: pass a function (outputs [B, n_out], targets [B, ...]) -> [B]")
        tables["loss"] = {"name": extension.remember(loss)}
    if probes is not None:
        if not isinstance(probes, Mapping) or not all(callable(fn) for fn in probes.values()):
            raise ConfigError("probes = ...: pass a dict {name: function of a ProbeContext}")
        tables["probes"] = {}
        for name, fn in probes.items():
            path = extension.path_of(fn) if extension.importable(fn) else f"{extension.path_of(fn)}[{name}]"
            tables["probes"][str(name)] = {"fn": extension.remember(fn, path)}
    return tables
