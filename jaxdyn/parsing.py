"""Parsing config tables: values coerced to their fields' types, and ``[model]``-shaped tables.

Below ``config`` and the task kinds' own sections (``gan.config``), which parse with
the same rules: a TOML list becomes a tuple, a field of another model kind is named.
"""

import typing
from typing import Any, Mapping

from jaxdyn import extension
from jaxdyn.errors import ConfigError, brief, closest
from jaxdyn.models import MODELS, ModuleConfig


def field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def model_fields() -> dict[str, Any]:
    """Every field of every model kind -> its type (the first kind that declares it)."""
    fields = {}
    for spec in MODELS.values():
        for name, annotation in field_types(spec.config).items():
            fields.setdefault(name, annotation)
    return fields


def check_type(where: str, value, annotation):
    """Coerce ``value`` to the field's type or raise a ConfigError naming the field."""
    def bad(expected):
        return ConfigError(f"{where} = {brief(value)}: expected {expected}")

    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if annotation == tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad("a list of integers, e.g. [100, 100]")
        return tuple(value)
    return value  # Any


def model_from_dict(given, where: str = "model") -> Any:
    """The ``[model]`` table (or ``[gan.generator]``, ...: ``where``) as its kind's config
    dataclass; a field the kind lacks is an error."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {given!r}")
    kind = given.get("kind", "mlp")
    if extension.is_path(kind):
        return _module_from_dict(kind, given, where)
    if kind not in MODELS:
        raise ConfigError(f"{where}.kind = {kind!r} is not known{closest(str(kind), MODELS)}")
    types = field_types(MODELS[kind].config)
    section = where
    values = {}
    for key, value in given.items():
        if key not in types:
            others = [k for k, spec in MODELS.items() if key in field_types(spec.config)]
            where_else = f" (it belongs to model kind {', '.join(others)})" if others else ""
            raise ConfigError(
                f"{section}.{key} is not a field of model kind {kind!r}{where_else}; {kind!r} takes: "
                f"{', '.join(k for k in types if k != 'kind')}"
            )
        values[key] = frozen(check_type(f"{section}.{key}", value, types[key]))
    return MODELS[kind].config(**values)


def _module_from_dict(kind: str, given: Mapping, where: str) -> ModuleConfig:
    """``[model] kind = "package.module:Class"``: the other keys are constructor fields or declared
    member numbers. Checked against the class when it can be imported (a class defined in
    ``__main__`` and not handed over in this process is checked when it is built)."""
    cfg = ModuleConfig(kind, tuple((k, frozen(v)) for k, v in given.items() if k != "kind"))
    try:
        fields, numbers = cfg.fields(), cfg.hparams()
    except ConfigError:
        return cfg
    values = []
    for key, value in cfg.values:
        if f"model.{key}" in numbers:
            value = check_type(f"{where}.{key}", value, float)
        elif key in fields:
            value = frozen(check_type(f"{where}.{key}", value, fields[key]))
        else:
            takes = [*fields, *(k.split(".")[1] for k in numbers)]
            raise ConfigError(f"{where}.{key} is not a field of {kind!r} nor a member hyperparameter it "
                              f"declares{closest(key, takes)}")
        values.append((key, value))
    return ModuleConfig(kind, tuple(values))


def frozen(value):
    """A TOML list as a tuple: model configs are hashed and compared."""
    return tuple(frozen(v) for v in value) if isinstance(value, list) else value
