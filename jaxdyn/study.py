"""A study: expand the grid into cohorts x members (split into parts that fit), and its plan.

The rule for the two axes: an array can differ across members, a shape or a
Python choice cannot. Numeric optimizer hyperparameters and seeds become members
of one population; structural axes (``COHORT_AXES``) each make a cohort. The run
folder's life (create, lock, ``run.json``, resume checks) is ``rundir``'s job, and
training a study into it ``training``'s.
"""

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd

from jaxdyn import fork, rundir, shape_checks
from jaxdyn.axes import MEMBER_CHOICES, MEMBER_HPARAMS
from jaxdyn.config import MAX_MEMBERS, Config, load_config
from jaxdyn.data import cache_dir, dataset_info
from jaxdyn.errors import ConfigError, choice
from jaxdyn.federated import setup
from jaxdyn.federated.config import with_epochs
from jaxdyn.hparams import present
from jaxdyn.logs import log
from jaxdyn.memory import DoesNotFit, check_memory, member_shapes, member_state_bytes
from jaxdyn.models import MODELS, ModuleConfig
from jaxdyn.optim_config import OPTIM_FIELDS, check_hparam
from jaxdyn.federated.chunk import make_federated_chunk, make_federated_evaluate
from jaxdyn.population import enable_compile_cache, make_evaluate, make_mesh, make_train_chunk, plan_layout
from jaxdyn.probes import probe_batch_size
from jaxdyn.probes.run import ProbeSet
from jaxdyn.tasks import Seeds, makes_snapshots
from jaxdyn.validation import check_member_value, check_members, validate


class Part(NamedTuple):
    """A sub-population: part ``number`` (0-based) of ``of`` of the members of one setting."""

    number: int
    of: int


@dataclass(frozen=True)
class Cohort:
    """One structural setting and its members.

    Attributes:
      index: position of the cohort in the study.
      config: the study config with this cohort's structural values applied and no grid.
      settings: the structural grid values of this cohort, e.g. ``{"model.hidden": (100,)}``.
      part: when ``train.max_members_per_program`` splits a setting's members, which part of them
        this cohort (one compiled program, its own checkpoints) holds; None when not split.
      members: one row per member: ``member, cohort, init_seed, data_seed, dropout_seed`` (and
        ``part`` when the setting is split),
        one column per member hyperparameter (optimizer family, loss, model, train) and one per
        member choice, by name (``init``: the initialiser; ``config`` keeps the study's own value).
    """

    index: int
    config: Config
    settings: dict
    members: pd.DataFrame
    parent: fork.Parent | None = None  # [init]: where the members start (a trained member of another run)
    part: Part | None = None  # train.max_members_per_program: which part of its setting's members

    @property
    def hparam_names(self) -> list[str]:
        return list(self.config.member_hparams())

    def task(self):
        """This cohort's task (``TASK_KINDS[task.kind].build``); a federated cohort's wraps it
        (``federated.chunk.FederatedTask``)."""
        task = self.config.task.spec().build(self.config, self.members)
        return task if self.config.federated is None else setup.federated_task(task, self.config, self.members)

    def train_chunk(self, task, layout, mesh):
        """``chunk(state, data) -> (state, metrics)``: ``train.chunk_steps`` steps of every member
        (``population.make_train_chunk``), or of every client with its rounds (``[federated]``)."""
        t = self.config.train
        if self.config.federated is None:
            return make_train_chunk(task, t.chunk_steps, t.log_every, layout.group_size, mesh)
        return make_federated_chunk(task, t.chunk_steps, t.log_every, layout.group_size, mesh,
                                    setup.federation(self, layout.n_padded))

    def evaluate(self, task, layout, mesh):
        """``evaluate(state, x, y) -> scores [K_padded]``: every member on all of x, y, or each
        federation's global model once, written for its clients (``[federated]``)."""
        if self.config.federated is None:
            return make_evaluate(task, mesh)
        return make_federated_evaluate(task, mesh, setup.federation(self, layout.n_padded))

    def probes(self, task, mesh) -> ProbeSet:
        """This cohort's enabled probes over the task's views, compiled for ``task`` on ``mesh``."""
        views = self.config.task.spec().probe_views(self.config, task)
        return ProbeSet(self.config.probes, views, mesh, self.members, self.probe_batch_size())

    def probe_batch_size(self) -> int:
        """Examples in the probe batch (``probes.batch_size``, or its default for this dataset)."""
        cfg = self.config
        return probe_batch_size(cfg.probes, cfg.data.n_train or dataset_info(cfg.data).n_train, cfg.train.full_batch)

    def alone(self, member: int) -> "Cohort":
        """This cohort as member ``member`` (its id) alone: its one row, and its member choices (its
        initialiser) applied to the config, as a study of that member by itself would have them."""
        row = self.members[self.members["member"] == member]
        cfg = self.config
        for key in cfg.member_choices():
            cfg = _with(cfg, key, row[key.split(".")[1]].iloc[0])
        return dataclasses.replace(self, config=cfg, members=row.reset_index(drop=True))

    def member_arrays(self, pad) -> tuple[Seeds, dict]:
        """Seeds and hyperparameters as arrays ``[K_padded]``, padded by ``pad``; and for each member
        choice the cohort mixes, each member's index among its values (int32, ``hparams.present``)."""
        col = lambda name, dtype: pad(self.members[name].to_numpy().astype(dtype))
        seeds = Seeds(*(col(name, np.int32) for name in Seeds._fields))
        hparams = {h: col(h, np.float32) for h in self.hparam_names}
        for key in self.config.member_choices():
            names = self.members[key.split(".")[1]]
            options = present(names)
            if len(options) > 1:
                hparams[key.split(".")[1]] = pad(names.map(options.index).to_numpy().astype(np.int32))
        return seeds, hparams


def _split(ccfg: Config, table: pd.DataFrame, first_index: int) -> list[tuple[pd.DataFrame, Part | None]]:
    """A setting's member table cut into contiguous parts of at most ``train.max_members_per_program``
    members, each with the cohort index it runs as; the members keep their ids, seeds and hyperparameters.

    Raises:
      ConfigError: a split that would change what the members do: a [pbt] population (its exploit
        ranks the whole cohort) or a [federated] cohort (its federations share the cohort's partition).
    """
    limit, n = ccfg.train.max_members_per_program, len(table)
    if not limit or n <= limit:
        return [(table, None)]
    for section, why in (("pbt", "its exploit step ranks the whole cohort together"),
                         ("federated", "its federations share one partition of the data per cohort")):
        if getattr(ccfg, section) is not None:
            raise ConfigError(f"train.max_members_per_program = {limit} would split a [{section}] cohort of {n} "
                              f"members, but {why}; set it to 0 (no limit) or at least {n}")
    cuts = range(0, n, limit)
    return [(table.iloc[i:i + limit].assign(cohort=first_index + j, part=j).reset_index(drop=True),
             Part(j, len(cuts))) for j, i in enumerate(cuts)]


def _with(cfg: Config, key: str, value) -> Config:
    section, name = key.split(".")
    if section == "optim" and name not in OPTIM_FIELDS:
        hparams = dict(cfg.optim.hparams) | {name: float(value)}
        return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, hparams=tuple(sorted(hparams.items()))))
    if section == "model" and isinstance(cfg.model, ModuleConfig):
        return dataclasses.replace(cfg, model=cfg.model.replace(**{name: value}))
    if section == "loss" and name not in {f.name for f in dataclasses.fields(cfg.loss)}:  # a user loss's number
        hparams = dict(cfg.loss.hparams) | {name: float(value)}
        return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, hparams=tuple(sorted(hparams.items()))))
    if section == "model" and name == "kind":  # a new kind keeps the fields it shares with the old
        shared = {k: v for k, v in dataclasses.asdict(cfg.model).items()
                  if k != "kind" and k in {f.name for f in dataclasses.fields(MODELS[value].config)}}
        return dataclasses.replace(cfg, model=MODELS[value].config(**shared))
    try:
        sub = dataclasses.replace(getattr(cfg, section), **{name: value})
    except TypeError:  # a field of another model kind
        raise ConfigError(
            f"grid axis {key!r} is not a field of model kind {cfg.model.kind!r}; it takes: "
            f"{', '.join(f.name for f in dataclasses.fields(cfg.model) if f.name != 'kind')}"
        ) from None
    return cfg.with_section(section, sub)


def expand(cfg: Config) -> list[Cohort]:
    """All cohorts of a study with their member tables. Validates every value.

    Raises:
      ConfigError: on any bad value, before anything compiles.
    """
    for key, _ in cfg.grid:
        if key.startswith("federated.") and cfg.federated is None:
            raise ConfigError(f"grid axis {key!r} varies a setting of [federated], which this study does not have; "
                              "add a [federated] table (e.g. clients = 10) or remove the axis")
    cohort_axes = [(k, v) for k, v in cfg.grid if cfg.is_cohort_axis(k)]
    member_axes = [(k, v) for k, v in cfg.grid if not cfg.is_cohort_axis(k)]
    base = dataclasses.replace(cfg, grid=())
    cohorts, next_member = [], 0
    for values in itertools.product(*(v for _, v in cohort_axes)):
        settings = dict(zip((k for k, _ in cohort_axes), values))
        ccfg = base
        for key, value in settings.items():
            ccfg = _with(ccfg, key, value)
        if ccfg.federated is not None and ccfg.federated.local_epochs > 0:  # the round's steps, from its epochs
            fed = with_epochs(ccfg.federated, ccfg.data, dataset_info(ccfg.data), ccfg.train.batch_size)
            ccfg = dataclasses.replace(ccfg, federated=fed)
        validate(ccfg)
        defaults, decls, choices = ccfg.member_hparams(), ccfg.hparam_decls(), ccfg.member_choices()
        for key, _ in member_axes:
            name = key.split(".")[1]
            if (key in decls and name in defaults) or key in choices:
                continue
            if key in MEMBER_HPARAMS:
                raise ConfigError(
                    f"grid axis {key!r} is not a field of model kind {ccfg.model.kind!r}; it takes: "
                    f"{', '.join(f.name for f in dataclasses.fields(ccfg.model) if f.name != 'kind')}"
                )
            if name not in defaults:
                where = f" (cohort {settings})" if settings else ""
                raise ConfigError(
                    f"grid axis {key!r} is not a number of optimizer {ccfg.optim.name!r} with schedule "
                    f"{ccfg.optim.schedule!r}{where}; it takes {', '.join(ccfg.optim_hparams())}"
                )
        clients = ccfg.federated.clients if ccfg.federated is not None else 1
        n_members = len(ccfg.seed_sets()) * math.prod(len(v) for _, v in member_axes) * clients
        if n_members > MAX_MEMBERS:
            raise ConfigError(
                f"the grid makes {n_members:,} members per cohort; at most {MAX_MEMBERS:,} fit in one "
                "study: use fewer seeds or grid values"
            )
        rows = []
        for name, value in ccfg.optim_hparams().items():
            check_hparam(ccfg.optim, name, value)
        for point in itertools.product(*(v for _, v in member_axes)):
            for key, value in zip((k for k, _ in member_axes), point):
                if key in choices:
                    choice(key, value, MEMBER_CHOICES[key].options)
                elif key in decls:
                    check_member_value(key, value, decls[key])
                elif key.split(".")[0] == ccfg.task.spec().section:  # a number of the task kind's own table
                    ccfg.task.spec().check_member(ccfg.task.options, key.split(".")[1], value)
                else:
                    check_hparam(ccfg.optim, key.split(".")[1], value)
            given = dict(zip((k for k, _ in member_axes), point))
            hparams = defaults | {k.split(".")[1]: float(v) for k, v in given.items() if k not in choices}
            picked = {k.split(".")[1]: given.get(k, v) for k, v in choices.items()}
            for init_seed, data_seed, dropout_seed in ccfg.seed_sets():
                rows.append({"cohort": len(cohorts), "init_seed": init_seed, "data_seed": data_seed,
                             "dropout_seed": dropout_seed, **hparams, **picked})
        if ccfg.federated is not None:  # each row a federation of clients
            first = sum(c.members["federation"].nunique() for c in cohorts if "federation" in c.members)
            rows = setup.client_rows(rows, clients, first, ccfg.federated.local_steps)
        rows = [{"member": next_member + i, **row} for i, row in enumerate(rows)]
        next_member += len(rows)
        table = pd.DataFrame(rows)
        check_members(ccfg, table)
        for members, part in _split(ccfg, table, len(cohorts)):
            cohorts.append(Cohort(len(cohorts), ccfg, settings, members, part=part))
    if any(c.part is not None for c in cohorts):  # every member table then says its part (0: not split)
        cohorts = [c if c.part is not None else dataclasses.replace(c, members=c.members.assign(part=0))
                   for c in cohorts]
    if cfg.init is not None:
        parents = _parent_cohorts(cfg.init.run)
        label = lambda c: f"of cohort {c.index} " if len(cohorts) > 1 else ""
        cohorts = [dataclasses.replace(c, parent=fork.resolve(cfg.init, c.members["member"], parents, label(c)))
                   for c in cohorts]
    return cohorts


def _parent_cohorts(run) -> list[Cohort]:
    """The cohorts of a fork's parent run, from its saved config."""
    if not (Path(run) / "config.toml").is_file():
        raise ConfigError(f"init.from = {str(run)!r}: no config.toml there; give the folder of a jaxdyn run")
    parent = rundir.load_run_config(run)
    return expand(dataclasses.replace(parent, init=None))


def plan(config=None, *, overrides=()) -> pd.DataFrame:
    """What a study would run, without training: one row per cohort with its settings,
    members (and padded members), members stepped together per device, state bytes per
    member, and the programs it compiles (initialisation, the train chunk, evaluation,
    samples for a task that makes them, and one per set of probes that come due
    together); a setting split by ``train.max_members_per_program`` has a row per part, with
    its ``part`` ("2/3") and ``member_ids``. Validates the config as ``train`` does.
    """
    cfg = load_config(config, overrides)
    mesh = make_mesh()
    cohorts = expand(cfg)
    for cohort in cohorts:
        task = cohort.task()
        check_traced(cohort, task, cohort.probes(task, mesh))
    enable_compile_cache(cache_dir() / "xla")  # the programs the check compiles are kept for the run
    cfg, cohorts, estimates = fit_memory(cfg, cohorts, mesh)
    rows = []
    for cohort in cohorts:
        t = cohort.config.train
        layout = plan_layout(len(cohort.members), mesh.size, t.member_group, mesh.devices.flat[0].platform)
        task = cohort.task()
        probe_sets = cohort.probes(task, mesh).due_sets(t.steps // t.chunk_steps)
        rows.append({"cohort": cohort.index, **{k: str(list(v)) if isinstance(v, tuple) else v
                                                for k, v in cohort.settings.items()},
                     **({} if cohort.part is None else {"part": f"{cohort.part.number + 1}/{cohort.part.of}",
                                                         "member_ids": _id_range(cohort.members["member"])}),
                     "members": len(cohort.members), "padded": layout.n_padded, "devices": mesh.size,
                     "group": layout.group_size, "bytes_per_member": member_state_bytes(cohort),
                     "programs": 3 + makes_snapshots(task) + len(probe_sets)})
    return pd.DataFrame(rows).assign(peak_bytes=[e.total for e in estimates])


def fit_memory(cfg: Config, cohorts: list[Cohort], mesh, may_split: bool = True) -> tuple[Config, list[Cohort], list]:
    """``check_memory``; a study that does not fit and sets no ``train.max_members_per_program``
    gets the largest that fits (estimated, then checked with the same margin): the config with it
    (the run folder keeps it, so a resume runs the same split), its cohorts and their estimates.

    Raises:
      ConfigError: a cohort that does not fit even split, or may not be split ([pbt], [federated]).
    """
    try:
        return cfg, cohorts, check_memory(cohorts, mesh)
    except DoesNotFit as e:
        fixed = cfg.train.max_members_per_program or cfg.pbt is not None or cfg.federated is not None
        if fixed or not may_split or e.members < 1:  # a resume keeps its run's cohorts
            raise
        limit = _real_members(e.members, mesh, cfg.train.member_group)
    # The limit is the unsplit estimate pro rata (within 0.3% of the parts' own compiled figures,
    # measured; tests/test_split.py holds it to 2%); the parts' compiled programs are checked again,
    # and a limit a little too high is lowered.
    for attempt in range(3):
        log(f"memory: a cohort does not fit in one program; splitting each into programs of at most {limit} "
            f"members (train.max_members_per_program = {limit}), run one after another")
        split = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_members_per_program=limit))
        cohorts = expand(split)
        try:
            return split, cohorts, check_memory(cohorts, mesh)
        except DoesNotFit as e:
            if attempt == 2 or limit == 1:
                raise
            limit = max(1, min(_real_members(e.members, mesh, cfg.train.member_group), limit - 1))


def _real_members(fit: int, mesh, member_group: int) -> int:
    """The most members of a program whose population, padded to whole member groups on every
    device (``plan_layout``), is at most ``fit``: the memory estimate counts padded members, so a
    limit of ``fit`` itself could pad past it (126 members padded to 128 where 126 fit)."""
    platform = mesh.devices.flat[0].platform
    n = fit
    while n > 1 and plan_layout(n, mesh.size, member_group, platform).n_padded > fit:
        n -= 1
    return n


def _id_range(ids: pd.Series) -> str:
    return f"{ids.min()}-{ids.max()}" if len(ids) > 1 else str(ids.iloc[0])


def check_traced(cohort, task, probes: ProbeSet) -> None:
    """Trace the cohort's training step and probes on shapes alone (the probe batch's, from the
    dataset's info) and refuse what they show to be degenerate (``shape_checks``)."""
    state = member_shapes(cohort, task)
    if cohort.parent is not None:
        fork.check(cohort.parent, state)
    shape_checks.check_batch_norm(cohort, task, state)
    if probes:
        info = dataset_info(cohort.config.data)
        n = cohort.probe_batch_size()
        x = jax.ShapeDtypeStruct((n, *info.input_shape), np.float32)
        y = jax.ShapeDtypeStruct((n, *info.target_shape), np.int32 if info.n_classes else np.float32)
        shape_checks.check_probes(probes, state, x, y)
