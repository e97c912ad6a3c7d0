"""Which settings are member numbers and which are structural, and the grid's axes.

The rule: an array can differ across members, a shape or a Python choice cannot. Every
number a component declares as an ``HParam`` is a member hyperparameter (an array per
member); a name declared as a ``Choice`` (the initialiser) is a member choice where the
task kind honours it (``TaskKind.choices``): each member initialises with its own inside
the one compiled init. Every other setting that a grid may vary is a cohort axis (a
compiled program per value). The lists are derived from the declarations, never kept by
hand; a user's module, loss or task adds its own through the same declarations.
"""

import dataclasses
import math
from typing import Any

import numpy as np

from jaxdyn import data, losses, models
from jaxdyn.federated import config as federated_config
from jaxdyn.data import DataConfig
from jaxdyn.errors import ConfigError, closest
from jaxdyn.hparams import Choice, HParam
from jaxdyn.models import ModuleConfig
from jaxdyn.optim import FAMILIES
from jaxdyn.optim_config import OPTIM_FIELDS, OptimConfig
from jaxdyn.parsing import check_type, field_types, frozen, model_fields
from jaxdyn.schedules import SCHEDULES
from jaxdyn.tasks import supervised
from jaxdyn.tasks.kinds import TASK_KINDS

# Every member hyperparameter outside the optimizer families, gathered from the
# components that declare them: "section.name" -> HParam. Members carry them as
# arrays under their bare name (``l2``, ``grad_clip``, ...).
MEMBER_HPARAMS: dict[str, HParam] = {**data.HPARAMS, **losses.HPARAMS, **models.HPARAMS, **supervised.HPARAMS,
                                     **federated_config.HPARAMS}
# Names that may differ per member without a compile of their own: "section.name" -> Choice.
# Members carry each as a name in the member table (``init``) and an index at init.
MEMBER_CHOICES: dict[str, Choice] = {**models.CHOICES}


def section_axes(kind) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(cohort axes, member axes)`` of a task kind's own table and declared numbers, dotted."""
    own = (f"{kind.section}.{f}" for f in kind.member_axes) if kind.section else ()
    return tuple(f"{kind.section}.{f}" for f in kind.cohort_axes), (*own, *kind.hparams)


# Structural settings that a grid may vary: each value makes a cohort. Derived from
# the declarations: every model field that is not a member hyperparameter or choice. A
# choice is structural still where the task kind or the model does not honour it
# (``Config.is_cohort_axis``): a user's module draws its own weights.
COHORT_AXES = (
    *(f"data.{f.name}" for f in dataclasses.fields(DataConfig) if f"data.{f.name}" not in MEMBER_HPARAMS),
    "loss.name", "train.batch_size", "train.full_batch", *(f"optim.{f}" for f in OPTIM_FIELDS),
    *(f"model.{name}" for name in model_fields() if f"model.{name}" not in {**MEMBER_HPARAMS, **MEMBER_CHOICES}),
    *(axis for kind in TASK_KINDS.values() for axis in section_axes(kind)[0]),  # the [gan] table's
    *federated_config.COHORT_AXES,
)


def grid_values(key: str, values, model, loss, task, section_types: dict) -> tuple:
    """Check a grid axis's name and coerce its values to the field's type (``model``, ``loss`` and
    ``task``: the parsed sections, whose user components add axes of their own; ``section_types``:
    the dataclass of each other section by name)."""
    hparam_names = sorted({h for fam in FAMILIES.values() for h in fam.defaults})
    schedule_names = sorted({k for sched in SCHEDULES.values() for k in sched.hparams})
    kind = task.spec()
    own_cohort, own_members = section_axes(kind)
    valid = [*COHORT_AXES, *(f"optim.{h}" for h in hparam_names), *schedule_names, *MEMBER_HPARAMS, *MEMBER_CHOICES,
             *(declared_or_none(loss) or {}), *own_cohort, *own_members]
    user_fields = {}
    if isinstance(model, ModuleConfig):  # a user module: its own fields and numbers, not the zoo's
        try:
            user_fields = {f"model.{k}": t for k, t in model.fields().items()} | {k: float for k in model.hparams()}
        except ConfigError:  # not importable in this process: read the run as written; building it says why
            user_fields = {key: Any} if section_of(key) == "model" else {}
        valid = [k for k in valid if not k.startswith("model.")] + list(user_fields)
    if section_of(key) == "loss" and declared_or_none(loss) is None and key not in valid:
        valid.append(key)  # a user loss not importable here, as above
    if key not in valid and key in MEMBER_CHOICES and isinstance(model, ModuleConfig):
        raise ConfigError(f"grid axis {key!r}: model.kind = {model.kind!r} is a module of your own, which draws "
                          f"its own weights, so jaxdyn cannot choose its initialiser; give the module a field for "
                          f"it (e.g. kernel_init: str; a field named init would hide flax's Module.init) and grid "
                          f"over model.<that field>, one cohort per value")
    if key not in valid:
        raise ConfigError(f"unknown grid axis {key!r}{closest(key, valid)}")
    if not values:
        raise ConfigError(f"grid axis {key!r} is empty: give it at least one value, or remove it")
    section, name = key.split(".")
    if key in own_cohort:
        annotation = field_types(kind.options)[name]
    elif key in own_members:
        annotation = float
    elif section == "optim":
        annotation = field_types(OptimConfig)[name] if name in OPTIM_FIELDS else float
    elif key in user_fields:
        annotation = user_fields[key]
    elif section == "model":
        annotation = model_fields()[name]
    elif section == "loss" and name not in field_types(section_types["loss"]):
        annotation = float
    else:
        annotation = field_types(section_types[section])[name]
    coerced = tuple(frozen(check_type(f"grid.\"{key}\" value", v, annotation)) for v in values)
    # Numeric values are compared as the float32 that members train with.
    distinct = {np.float32(v) if annotation is float and math.isfinite(v) else v for v in coerced}
    if len(distinct) != len(coerced):
        raise ConfigError(f"grid axis {key!r} repeats a value {list(values)}; give each value once")
    return coerced


def section_of(key: str) -> str:
    return key.split(".", 1)[0]


def declared_or_none(loss):
    """A user loss's declared numbers, or None when it cannot be imported in this process: a run
    folder still reads back (tables, report), and building the loss then says why it cannot run."""
    try:
        return loss.declared()
    except ConfigError:
        return None
