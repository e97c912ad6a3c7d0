"""Study configuration: frozen dataclasses, and parsing them from TOML, dicts and ``--set``.

Keys and types are checked here, before anything compiles, with a message that names
the field, the bad value and the fix (ranges are ``validation``'s job). A config is
plain data: ``[study] [data] [model] [loss] [optim] [train] [probes] [task]`` sections
(and a table a task kind owns, such as ``[gan]``) plus a ``[grid]`` of axes.

Grid axes are dotted keys. Declared member numbers (``optim.learning_rate``,
``loss.l2``, a user module's own, ...) become *members* of one compiled population;
everything structural (``model.hidden``, ``optim.name``, ``train.batch_size``, ...)
makes a new *cohort*, compiled once (``axes``).
"""

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from jaxdyn import extension
from jaxdyn.axes import COHORT_AXES, MEMBER_CHOICES, MEMBER_HPARAMS, declared_or_none, grid_values, section_axes
from jaxdyn.data import DataConfig
from jaxdyn.errors import ConfigError, brief, closest
from jaxdyn.fork_config import ForkConfig, fork_from_dict, fork_to_dict
from jaxdyn.hparams import HParam
from jaxdyn.models import MODELS, ModuleConfig, model_hparams
from jaxdyn.models.user import declared_hparams
from jaxdyn.optim import FAMILIES
from jaxdyn.optim_config import OPTIM_FIELDS, OptimConfig
from jaxdyn.overrides import apply_overrides, lay_over
from jaxdyn.parsing import check_type, field_types, frozen, model_from_dict
from jaxdyn.federated.config import FederatedConfig, federated_from_dict, federated_to_dict
from jaxdyn.pbt.config import PBTConfig, ReplayConfig, pbt_from_dict, pbt_to_dict, replay_from_dict, replay_to_dict
from jaxdyn.probes import ProbesConfig, probes_from_dict, probes_to_dict
from jaxdyn.schedules import SCHEDULES
from jaxdyn.tasks.kinds import TASK_KINDS, task_kind

MAX_MEMBERS = 1_000_000  # per cohort: far past what fits in memory, well short of a hang


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    # int N -> seeds 0..N-1; or a list of ints; or a list of [init, data] pairs or
    # [init, data, dropout] triples (the dropout seed defaults to the init seed).
    seeds: Any = 1
    # the metric the end-of-run table and the summary report (its final value over seeds): "" = the task's
    # own (test accuracy; test MSE for regression; modes for a GAN), or e.g. "sharpness", "test_loss"
    headline: str = ""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000  # optimisation steps of every member
    batch_size: int = 100  # examples per step, drawn with replacement by each member
    chunk_steps: int = 500  # steps per compiled chunk: the host sees the device once per chunk
    log_every: int = 100  # train loss/accuracy are averaged over windows of this many steps
    eval_every: int = 2  # chunks between test-set evaluations (and always at step 0 and at the end)
    checkpoint_every: int = 4  # chunks between checkpoints (and always at the end)
    member_group: int = 0  # members stepped together per device; 0 = auto (8 on CPU, all on GPU)
    # at most this many members in one compiled program: a larger cohort runs as consecutive parts; 0 = no limit
    max_members_per_program: int = 0
    grad_clip: float = 0.0  # member hyperparameter: per-member global-norm clip, 0 = off
    ema_decay: float = 0.0  # member hyperparameter: the weights' moving average, evaluated as test_*_ema; 0 = off
    full_batch: bool = False  # every step on the whole training set, in order (batch_size unused)


@dataclass(frozen=True)
class TaskConfig:
    kind: str = "supervised"  # supervised | gan (then [gan] holds the two players) | "package.module:NAME"
    # The member numbers a kind declares (TaskKind.hparams), as set in [task].
    hparams: tuple[tuple[str, float], ...] = ()
    # The table the kind owns (TaskKind.section, such as [gan]) as its options dataclass; None: none.
    options: Any = None

    def __post_init__(self):
        if self.options is None and self.spec().section:  # the kind's table with its defaults
            object.__setattr__(self, "options", self.spec().options())

    def spec(self):
        """This kind's ``TaskKind``."""
        return task_kind(self.kind)


@dataclass(frozen=True)
class LossConfig:
    name: str = "auto"  # auto (cross_entropy for classes, mse for values) | cross_entropy | mse | bce
    l1: float = 0.0  # member hyperparameters: penalties on weights, and label smoothing
    l2: float = 0.0  # member hyperparameter: λ of λ/2 Σ w² on the kernels
    label_smoothing: float = 0.0  # member hyperparameter: cross-entropy targets (1 - ε) one-hot + ε/classes
    # A user loss's own member numbers, as set in [loss] (its declared defaults fill in the rest).
    hparams: tuple[tuple[str, float], ...] = ()

    def declared(self) -> dict[str, HParam]:
        """The member hyperparameters a user loss (``name = "package.module:function"``) declares."""
        if not extension.is_path(self.name):
            return {}
        return declared_hparams(extension.resolve(self.name, "loss.name"), "loss", f"loss.name = {self.name!r}")


@dataclass(frozen=True)
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=MODELS["mlp"].config)  # the kind's own config dataclass
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    grid: tuple[tuple[str, tuple], ...] = ()
    pbt: PBTConfig | None = None  # [pbt]: population-based training within each cohort
    init: ForkConfig | None = None  # [init]: start every member from a trained member of another run
    replay: ReplayConfig | None = None  # [replay]: member hyperparameters changed at given steps
    federated: FederatedConfig | None = None  # [federated]: each setting x seed a federation of clients
    # Member choices kept as cohort axes: a run folder written before they were members' was laid
    # out so (``rundir.load_run_config``). Not written to TOML.
    kept_structural: tuple[str, ...] = ()

    def __getattr__(self, name: str):
        """The table the task kind owns, by its name (``cfg.gan``)."""
        task = self.__dict__.get("task")
        if task is not None and task.options is not None and name == task.spec().section:
            return task.options
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def with_section(self, name: str, table) -> "Config":
        """This config with section ``name`` (a field, or the task kind's own table) replaced by ``table``."""
        if name in {f.name for f in dataclasses.fields(self)}:
            return dataclasses.replace(self, **{name: table})
        return dataclasses.replace(self, task=dataclasses.replace(self.task, options=table))

    def optim_hparams(self) -> dict[str, float]:
        """Every hyperparameter of this config's optimizer family, defaults filled in."""
        schedule = {k.split(".")[1]: h.default for k, h in SCHEDULES[self.optim.schedule].hparams.items()}
        return {**FAMILIES[self.optim.name].defaults, **schedule, **dict(self.optim.hparams)}

    def hparam_decls(self) -> dict[str, HParam]:
        """Every member hyperparameter outside the optimizer this config has, ``"section.name" -> HParam``:
        data, loss and train's, the model's (its kind's fields, or a user module's declared ones)
        and a user loss's declared ones."""
        kind = self.task.spec()
        if not kind.uses_optim:
            return dict(kind.hparams)
        decls = lambda *sections: {k: h for k, h in MEMBER_HPARAMS.items() if k.split(".")[0] in sections}
        return {**kind.hparams, **decls("data", "loss"), **model_hparams(self.model), **decls("train"),
                **self.loss.declared(), **(decls("federated") if self.federated is not None else {})}

    def member_hparams(self) -> dict[str, float]:
        """Every member hyperparameter of this config by bare name: the task kind's own (declared, or
        its section's: a GAN's both players' optimizer numbers, prefixed g_ and d_, and gp_weight),
        and for the supervised path the optimizer's, loss's, model's and train's."""
        kind = self.task.spec()
        own = {k.split(".")[1]: v for k, v in self.hparam_values().items()}
        if kind.member_hparams is not None:
            own.update(kind.member_hparams(self.task.options))
        return {**self.optim_hparams(), **own} if kind.uses_optim else own

    def hparam_values(self) -> dict[str, float]:
        """``"section.name" -> value`` of every member hyperparameter in ``hparam_decls``: as set in
        its section, else its declared default."""
        values = {}
        for key, decl in self.hparam_decls().items():
            section, name = key.split(".")
            given = dict(getattr(self, section).hparams) if section in ("loss", "task") else {}
            values[key] = given.get(name, getattr(getattr(self, section), name, decl.default))
        return values

    def member_choices(self) -> dict[str, str]:
        """``"section.name" -> value`` of each member choice this config's members make (``MEMBER_CHOICES``):
        those its task kind honours (``TaskKind.choices``) on a zoo model, which has the field. A user's
        module draws its own weights, so ``model.init`` stays one of its structural fields."""
        out = {}
        for key in self.task.spec().choices:
            section, name = key.split(".")
            table = getattr(self, section, None)
            if key in MEMBER_CHOICES and key not in self.kept_structural and hasattr(table, name) \
                    and not isinstance(table, ModuleConfig):
                out[key] = getattr(table, name)
        return out

    def is_cohort_axis(self, key: str) -> bool:
        """Whether grid axis ``key`` is structural (a cohort per value) rather than a member number or choice."""
        if key.startswith("model.") and isinstance(self.model, ModuleConfig):
            return key not in self.model.hparams()
        if key in MEMBER_CHOICES:
            return key not in self.member_choices()
        return key in COHORT_AXES or key in section_axes(self.task.spec())[0]

    def seed_sets(self) -> list[tuple[int, int, int]]:
        """``(init_seed, data_seed, dropout_seed)`` of each seed setting."""
        seeds = self.study.seeds
        if isinstance(seeds, int):
            return [(s, s, s) for s in range(seeds)]
        out = []
        for s in seeds:
            s = [s, s] if isinstance(s, int) else list(s)
            out.append((s[0], s[1], s[2] if len(s) == 3 else s[0]))
        return out

    def seed_pairs(self) -> list[tuple[int, int]]:
        """``(init_seed, data_seed)`` of each seed setting."""
        return [(i, d) for i, d, _ in self.seed_sets()]


_SECTIONS = {"study": StudyConfig, "data": DataConfig, "loss": LossConfig, "train": TrainConfig}


def from_dict(raw: Mapping) -> Config:
    """Parse a nested dict (as from TOML) into a Config. Checks keys and types, not ranges."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a table of sections, got {type(raw).__name__}")
    sections = {"task": _task_from_dict(raw)}
    kind = sections["task"].spec()
    owners = {k.section: name for name, k in TASK_KINDS.items() if k.section}
    known = [*_SECTIONS, "model", "optim", "probes", "task", "grid", "pbt", "init", "replay", "federated", *owners, *([kind.section] if kind.section else [])]
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown config section [{key}]{closest(key, known)}")
        if key in owners and key != kind.section:
            raise ConfigError(f"[{key}] is set but task.kind is not \"{owners[key]}\"; add [task] kind = "
                              f"\"{owners[key]}\" (or remove [{key}])")
    for name, cls in _SECTIONS.items():
        given = raw.get(name, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {given!r}")
        types = {k: t for k, t in field_types(cls).items() if k != "hparams"}
        values, numbers = {}, {}
        declared = declared_or_none(LossConfig(name=given.get("name", ""))) if name == "loss" else {}
        for key, value in given.items():
            if key not in types and (declared is None or f"loss.{key}" in declared):  # a user loss's own number
                numbers[key] = check_type(f"{name}.{key}", value, float)
                continue
            if key not in types:
                raise ConfigError(f"unknown key {name}.{key}{closest(key, [*types, *(k.split('.')[1] for k in declared or {})])}")
            values[key] = check_type(f"{name}.{key}", value, types[key])
        sections[name] = cls(**values, **({"hparams": tuple(sorted(numbers.items()))} if numbers else {}))
    sections["model"] = model_from_dict(raw.get("model", {}))
    sections["probes"] = probes_from_dict(raw.get("probes", {}))
    sections["pbt"] = pbt_from_dict(raw["pbt"]) if "pbt" in raw else None
    sections["init"] = fork_from_dict(raw["init"]) if "init" in raw else None
    sections["replay"] = replay_from_dict(raw["replay"]) if "replay" in raw else None
    sections["federated"] = federated_from_dict(raw["federated"]) if "federated" in raw else None

    optim = raw.get("optim", {})
    if not isinstance(optim, Mapping):
        raise ConfigError(f"[optim] must be a table such as name = \"adam\", got {optim!r}")
    optim = dict(optim)
    types = field_types(OptimConfig)
    structural = {k: frozen(check_type(f"optim.{k}", optim.pop(k), types[k])) for k in OPTIM_FIELDS if k in optim}
    hparams = tuple((k, check_type(f"optim.{k}", v, float)) for k, v in sorted(optim.items()))
    sections["optim"] = OptimConfig(**structural, hparams=hparams)

    grid = raw.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ConfigError(f"[grid] must be a table of axis = [values], got {grid!r}")
    axes = []
    for key, values in grid.items():
        if isinstance(values, Mapping):  # a dotted TOML key such as optim.learning_rate = [...]
            raise ConfigError(
                f"grid axis {key!r} is a table; quote dotted axis names: \"{key}.{next(iter(values), '')}\" = [...]"
            )
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"grid.\"{key}\" = {values!r}: an axis needs a list of values, e.g. [1e-3, 1e-2]")
        axes.append((key, grid_values(key, values, sections["model"], sections["loss"], sections["task"],
                                      {**_SECTIONS, "federated": FederatedConfig})))
        section, name = key.split(".", 1)
        if isinstance(raw.get(section), Mapping) and name in raw[section]:
            raise ConfigError(
                f"{key} is set in [{section}] and is also a grid axis; keep one of them "
                f"(--set {key}=VALUE replaces the axis, --set grid.{key}=[...] replaces the value)"
            )
    return Config(**sections, grid=tuple(axes))


def _task_from_dict(raw: Mapping) -> TaskConfig:
    """``[task]`` (its kind, and the numbers the kind declares) with the table the kind owns, parsed."""
    given = raw.get("task", {})
    if not isinstance(given, Mapping):
        raise ConfigError(f"[task] must be a table, got {given!r}")
    name = check_type("task.kind", given.get("kind", TaskConfig.kind), str)
    kind = task_kind(name)
    numbers = {}
    for key, value in given.items():
        if key == "kind":
            continue
        if f"task.{key}" not in kind.hparams:
            raise ConfigError(f"unknown key task.{key}"
                              f"{closest(key, ['kind', *(k.split('.')[1] for k in kind.hparams)])}")
        numbers[key] = check_type(f"task.{key}", value, float)
    options = None
    if kind.section:
        options = kind.parse(raw.get(kind.section, {}))
    return TaskConfig(name, tuple(sorted(numbers.items())), options)


def load_config(source=None, overrides=(), given=None) -> Config:
    """Config from a TOML path, a dict, a Config or None (the default study), plus overrides.

    Args:
      source: path to a TOML file, a nested dict, a Config, or None for the
        packaged default study.
      overrides: ``"section.key=value"`` strings; the value is parsed as TOML
        (a bare word is taken as a string). Grid axes: ``grid.optim.learning_rate=[1e-3,1e-2]``.
      given: tables from ``handed_over`` (Python objects), laid over the source before the
        overrides: ``[model]`` is replaced whole; ``data.name``, ``loss.name`` and probe tables set.
    """
    written = source is not None and not isinstance(source, Config)  # the user's own tables
    if source is None:
        source = Path(__file__).parent / "studies" / "default.toml"
    if isinstance(source, Config):
        raw = to_dict(source)
    elif isinstance(source, Mapping):
        raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in source.items()}
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise ConfigError(f"config = {brief(source)}: give a TOML file's path, a dict of sections or a "
                              "jaxdyn.Config")
        path = Path(source)
        if path.is_dir():
            raise ConfigError(f"config {str(path)!r} is a folder; give a .toml file")
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a valid UTF-8 TOML file: {e}") from None
    lay_over(raw, given or {}, written)
    apply_overrides(raw, overrides)
    return from_dict(raw)


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of a Config, the inverse of ``from_dict``."""
    gridded = {k for k, _ in cfg.grid}
    out = {}
    for name in ("study", "data", "model", "loss", "train"):
        section = getattr(cfg, name)
        table = section.to_dict() if isinstance(section, ModuleConfig) else dataclasses.asdict(section)
        if name == "loss":
            table.update(table.pop("hparams"))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in table.items() if f"{name}.{k}" not in gridded}
        if name == "study" and not isinstance(cfg.study.seeds, int):
            out[name]["seeds"] = [list(s) if isinstance(s, (list, tuple)) else s for s in cfg.study.seeds]
        if name == "study" and not cfg.study.headline:
            del out[name]["headline"]  # the default, unwritten: run folders from before it resume unchanged
    out["optim"] = {k: list(getattr(cfg.optim, k)) if k == "boundaries" else getattr(cfg.optim, k)
                    for k in OPTIM_FIELDS if f"optim.{k}" not in gridded}
    out["optim"].update(cfg.optim.hparams)
    out["probes"] = probes_to_dict(cfg.probes)
    out["task"] = {"kind": cfg.task.kind, **dict(cfg.task.hparams)}
    kind = cfg.task.spec()
    if kind.section:
        out[kind.section] = kind.to_dict(cfg.task.options, {k.split(".")[1] for k in gridded
                                                            if k.startswith(f"{kind.section}.")})
    out["grid"] = {k: [list(v) if isinstance(v, tuple) else v for v in vals] for k, vals in cfg.grid}
    if cfg.pbt is not None:
        out["pbt"] = pbt_to_dict(cfg.pbt)
    if cfg.init is not None:
        out["init"] = fork_to_dict(cfg.init)
    if cfg.replay is not None:
        out["replay"] = replay_to_dict(cfg.replay)
    if cfg.federated is not None:
        out["federated"] = {k: v for k, v in federated_to_dict(cfg.federated).items()
                            if f"federated.{k}" not in gridded}
    return out


def to_toml(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
