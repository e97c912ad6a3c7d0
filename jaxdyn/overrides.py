"""What a study's tables become before they are parsed: tables handed to ``run`` as Python
objects laid over them, then the command line's ``--set KEY=VALUE`` overrides.

Both work on the raw nested dict read from TOML (or given as one), copying each table they
change so that the caller's own dicts stay untouched; ``config.from_dict`` then checks and
types the result.
"""

import tomllib
from typing import Mapping

from jaxdyn.errors import ConfigError
from jaxdyn.logs import log
from jaxdyn.models import MODELS
from jaxdyn.parsing import field_types


def lay_over(raw: dict, given: Mapping, written: bool) -> None:
    """Lay ``given`` (tables from ``handed_over``) over ``raw``: ``[model]`` is replaced whole
    (``written``: the user wrote the source's tables, whose ``[model]`` must not say otherwise),
    ``[probes]`` merged probe by probe, any other section merged key by key."""
    for section, table in given.items():
        if section == "model":
            raw["model"] = _handed_model(raw, table, written)
        else:
            current = raw.get(section, {})
            raw[section] = {**(current if isinstance(current, Mapping) else {}), **table}
            if section == "probes":
                raw[section] = {k: {**(current.get(k, {}) if isinstance(current, Mapping) else {}), **v}
                                if isinstance(v, Mapping) else v for k, v in raw[section].items()}


def apply_overrides(raw: dict, overrides) -> None:
    """Apply each ``"section.key=value"`` of ``overrides`` to ``raw``, in order; after a
    ``model.kind`` change, the old kind's fields the new one lacks leave ``[model]``.

    Raises:
      ConfigError: an item that is not ``section.key=value``, or that sets a key inside a
        value that is not a table.
    """
    kind = raw.get("model", {}).get("kind", "mlp") if isinstance(raw.get("model"), Mapping) else None
    typed = [_apply_override(raw, item) for item in overrides]
    _switch_model_kind(raw, kind, {key.split(".", 1)[1] for key in typed if key.startswith("model.")})


def _switch_model_kind(raw: dict, before, typed: set) -> None:
    """After ``--set model.kind=...``: the old kind's fields that the new kind lacks and that were
    not typed on the command line leave ``[model]``, with a one-line notice."""
    table = raw.get("model")
    if not isinstance(table, Mapping) or table.get("kind", "mlp") == before or table.get("kind") not in MODELS:
        return
    kind = table["kind"]
    takes = set(field_types(MODELS[kind].config))
    dropped = [k for k in table if k not in takes and k not in typed]
    if dropped:
        raw["model"] = {k: v for k, v in table.items() if k not in dropped}
        log(f"model.kind = {kind!r}: left out {', '.join(dropped)} ({before!r} fields that {kind!r} does not take)")


def _handed_model(raw: dict, table: dict, written: bool) -> dict:
    """``[model]`` for a module handed to ``run``: the instance's table, less the fields a grid
    varies (the grid sets them). A ``[model]`` the user wrote that says otherwise is refused
    rather than silently replaced."""
    gridded = {k.split(".", 1)[1] for k in raw.get("grid", {}) if k.startswith("model.")}
    own = raw.get("model")
    if written and isinstance(own, Mapping):
        clash = {k: v for k, v in own.items() if table.get(k, None) != v and k not in gridded}
        if clash:
            raise ConfigError(f"model= gives the model, but the config's [model] also sets "
                              f"{', '.join(f'{k} = {v!r}' for k, v in clash.items())}; remove [model] from the config "
                              "(the module's own fields say it all), or set the fields on the module")
    return {k: v for k, v in table.items() if k not in gridded}


def _key_path(key: str, item: str) -> list[str]:
    """The table path of a dotted ``--set`` key, read as TOML reads one (quotes allowed:
    ``probes."mypkg.probes:margin".every``)."""
    try:
        tree = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key; quote a part that holds dots or a "
                          "colon: probes.\"mypkg.probes:margin\".every=2") from None
    path = []
    while isinstance(tree, dict):
        (name, tree), = tree.items()
        path.append(name)
    return path


def _apply_override(raw: dict, item: str) -> str:
    """Apply one ``--set KEY=VALUE`` to the raw tables; returns the dotted key it set."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set {item!r}: write section.key=value, e.g. optim.learning_rate=0.01")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # bare word: a string such as tanh
    if key.startswith("grid."):  # an axis name is one key: grid.optim.learning_rate
        section, name, path = "grid", key[len("grid."):], ["grid", key[len("grid."):]]
    else:
        path = _key_path(key, item)
        section, name = path[0], ".".join(path[1:])
    node = raw
    for i, part in enumerate(path[:-1]):  # copy each table on the way: the source's stay untouched
        table = node.get(part, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])} is not a table")
        node[part] = dict(table)
        node = node[part]
    node[path[-1]] = value
    key = f"{section}.{name}"
    # The override is the last word: a plain value replaces a grid axis over the
    # same key, and a grid axis replaces a plain value.
    if section == "grid" and "." in name:
        axis_section, axis_name = name.split(".", 1)
        if isinstance(raw.get(axis_section), Mapping) and axis_name in raw[axis_section]:
            raw[axis_section] = {k: v for k, v in raw[axis_section].items() if k != axis_name}
    elif isinstance(raw.get("grid"), Mapping) and key in raw["grid"]:
        raw["grid"] = {k: v for k, v in raw["grid"].items() if k != key}
    return key
