"""Several run folders as one set of tables: each row carries the ``run`` it came from.

Runs may differ in anything. What tells them apart is their config diff: the keys of
``config.toml`` whose values are not the same in every run. A differing setting that the
member table already holds per member (a hyperparameter such as ``learning_rate``) is
that column; any other (``model.hidden``, ``train.steps``) is added as a column of its
dotted key, so that the varying settings, and with them ``summary`` and ``plot``,
group by it. Settings that are the same in every run add nothing.

A run is named by its folder (``Path.name``), or by the labels the user gives. Folders
that share a name are told apart by as much of their paths as differs (``exp1/run``,
``exp2/run``); the same folder given twice is ``run`` and ``run-2``.
"""

import os
import tomllib
from pathlib import Path

import pandas as pd

from jaxdyn.axes import MEMBER_CHOICES, MEMBER_HPARAMS
from jaxdyn.config import to_dict
from jaxdyn.errors import ConfigError, as_path, brief
from jaxdyn.results import RunTables, load
from jaxdyn.rundir import load_run_config
from jaxdyn.tables import member_table

ABSENT = None  # a key one run's config does not have (another task kind's section, an older version)
UNGROUPED = ("study.name",)  # differs between most runs and names the run, as ``run`` already does


def run_paths(runs, labels=None) -> dict[str, Path]:
    """``{label: run folder}`` from a list of folders (with optional ``labels``, one per folder) or a
    ``{label: folder}`` dict, every label unique.

    Raises:
      ConfigError: no runs, a run that is no path, or labels that do not match the runs one to one.
    """
    if isinstance(runs, dict):
        if labels is not None:
            raise ConfigError("labels = ...: give labels either as the dict's keys or as labels=, not both")
        labels, runs = [str(k) for k in runs], list(runs.values())
    elif isinstance(runs, (list, tuple)):
        runs = list(runs)
    else:
        raise ConfigError(f"runs = {brief(runs)}: give a list of run folders, or a dict {{label: run folder}}")
    if not runs:
        raise ConfigError("runs = []: give at least one run folder to load")
    paths = [as_path(r, f"runs[{i}]") for i, r in enumerate(runs)]
    if labels is None:
        return dict(zip(unique_names(paths), paths))
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)) or len(labels) != len(paths):
        raise ConfigError(f"labels = {brief(labels)}: give one label per run ({len(paths)}), as a list of names")
    labels = [str(label) for label in labels]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated or "" in labels:
        raise ConfigError(f"labels = {brief(labels)}: each run needs its own non-empty label"
                          + (f" ({', '.join(repeated)} repeats)" if repeated else ""))
    return dict(zip(labels, paths))


def unique_names(paths: list[Path]) -> list[str]:
    """Each folder's name, with as many parent folders as it takes to tell apart folders of the same
    name; the same folder twice gets ``-2``, ``-3``."""
    full = [Path(os.path.abspath(p)).parts for p in paths]
    names = []
    for parts in full:
        depth = 1
        while depth < len(parts) and sum(f[-depth:] == parts[-depth:] for f in full) > \
                sum(f == parts for f in full):
            depth += 1
        names.append("/".join(parts[-depth:]))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        names[i] = name if seen[name] == 1 else f"{name}-{seen[name]}"
    return names


def flat_config(run_dir: Path) -> dict:
    """A run's config as ``{"section.key": value}`` (nested tables dotted; lists as tuples), read
    through the config loader, so a key that an older run's ``config.toml`` lacks has its default
    (and is no difference); a config this jaxdyn cannot read is taken as the file says."""
    try:
        config = to_dict(load_run_config(run_dir))
    except Exception:  # noqa: BLE001 -- a component of the user's own that is not importable here
        with open(run_dir / "config.toml", "rb") as f:
            config = tomllib.load(f)
    flat = {}

    def walk(table, prefix):
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    walk(config, "")
    return flat


def config_diff(runs: dict[str, Path]) -> pd.DataFrame:
    """The keys of the runs' configs whose values differ: one row per dotted key (the index), one
    column per run, the run's value (``None`` where its config lacks the key)."""
    configs = {label: flat_config(path) for label, path in runs.items()}
    keys = list(dict.fromkeys(k for c in configs.values() for k in c))
    rows = {k: [configs[label].get(k, ABSENT) for label in runs] for k in keys}
    differ = {k: v for k, v in rows.items() if any(x != v[0] or type(x) is not type(v[0]) for x in v[1:])}
    return pd.DataFrame.from_dict(differ, orient="index", columns=list(runs)).rename_axis("key")


def column_value(value):
    """A config value as the member table holds it: a list as its text, as cohort settings are written."""
    return str(list(value)) if isinstance(value, tuple) else value


def member_column(key: str, columns) -> str | None:
    """The member-table column that already holds ``key`` per member (a hyperparameter by its bare
    name, a cohort setting by its dotted key), or None."""
    if key in columns:
        return key
    section, _, name = key.partition(".")
    per_member = key in MEMBER_HPARAMS or key in MEMBER_CHOICES or (section == "optim" and "." not in name)
    return name if per_member and name in columns else None


def combine(runs: dict[str, Path]) -> tuple[RunTables, pd.DataFrame]:
    """The runs' tables as one, and their config diff (``config_diff``).

    Members and metrics get a first column ``run``. Dotted (cohort-setting) columns that a run's
    own table lacks take that run's config value; a differing config key no column holds is added
    as a column of its dotted key (not ``study.name`` nor the ``grid`` table: the grid's axes are
    columns already).

    Raises:
      FileNotFoundError: a folder that is no run, or a run with nothing written yet.
    """
    tables = {label: load(path) for label, path in runs.items()}
    diff = config_diff(runs)
    configs = {label: flat_config(path) for label, path in runs.items()}
    held = set().union(*(t.members.columns for t in tables.values()))
    added = [k for k in diff.index if not k.startswith("grid.") and k not in UNGROUPED
             and member_column(k, held) is None]
    settings = sorted({c for c in held if "." in c} | set(added))
    members = []
    for label, t in tables.items():
        own = t.members.assign(run=label)
        for key in settings:
            if key not in own:
                own[key] = column_value(configs[label].get(key, ABSENT))
        for key in MEMBER_CHOICES:  # a run from before a choice was per member: its config's value
            name = key.split(".", 1)[1]
            if name in held and name not in own and key in configs[label]:
                own[name] = column_value(configs[label][key])
        members.append(own)
    members = member_table(members)  # its column order; ``run`` lands among the optimizer columns
    members = members[["run", *(c for c in members.columns if c != "run")]]
    metrics = pd.concat([t.metrics.assign(run=label) for label, t in tables.items()], ignore_index=True)
    metrics = metrics[["run", *(c for c in metrics.columns if c != "run")]]
    return RunTables(None, members, metrics), diff


def describe(runs: dict[str, Path]) -> str:
    """``runs a, b``: how messages name a comparison."""
    return f"runs {', '.join(runs)}"
