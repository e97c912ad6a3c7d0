"""``[pbt]``: population-based training within each cohort (Jaderberg et al. 2017).

Every ``every`` chunks, once ``ready_after`` chunks have passed, the members of a
cohort are ranked by ``metric`` (its value logged in that chunk: ``train_*`` its
last window, ``test_*`` the evaluation after the chunk); worse members copy a
better one's state (``exploit``) and change the copied hyperparameters named in
``hparams`` (``explore``). ``groups`` splits each cohort into independent PBT
populations (member i of a cohort in group i mod ``groups``), to measure PBT itself
over several populations side by side.
"""

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from jaxdyn.errors import ConfigError, choice, closest
from jaxdyn.hparams import HParam
from jaxdyn.optim import FAMILIES
from jaxdyn.pbt.round import EXPLOITS, EXPLORES
from jaxdyn.schedules import SCHEDULES
from jaxdyn.parsing import check_type



@dataclass(frozen=True)
class PBTConfig:
    every: int = 2  # chunks between rounds
    ready_after: int = 0  # chunks of burn-in before the first round
    metric: str = "test_accuracy"  # any logged train_* or test_* metric
    mode: str = "max"  # max | min
    hparams: tuple[str, ...] = ("optim.learning_rate",)  # the member hyperparameters explored
    exploit: str = "truncation"  # truncation | tournament
    fraction: float = 0.25  # truncation: the bottom fraction copies from the top fraction
    explore: str = "perturb"  # perturb | resample
    factors: tuple[float, ...] = (0.8, 1.25)  # perturb: multiply by one of these
    resample_probability: float = 0.25  # resample: chance of a fresh draw instead of a perturbation
    bounds: tuple[tuple[str, tuple[float, float]], ...] = ()  # [pbt.bounds] "optim.learning_rate" = [lo, hi]
    groups: int = 1  # independent PBT populations per cohort
    seed: int = 0  # the rounds' random key (folded with the round number)

    def bound(self, name: str) -> tuple[float, float] | None:
        return dict(self.bounds).get(name)


FIELDS = {"every": int, "ready_after": int, "metric": str, "mode": str, "hparams": list, "exploit": str,
          "fraction": float, "explore": str, "factors": list, "resample_probability": float, "bounds": Mapping,
          "groups": int, "seed": int}


def pbt_from_dict(raw) -> PBTConfig:
    """Parse ``[pbt]``: keys and types (ranges: ``check_pbt``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[pbt] must be a table such as every = 2, got {raw!r}")
    values = {}
    for key, value in raw.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key pbt.{key}{closest(key, list(FIELDS))}")
        if key == "bounds":
            if not isinstance(value, Mapping):
                raise ConfigError(f"[pbt.bounds] must be a table of \"section.name\" = [low, high], got {value!r}")
            pairs = []
            for name, pair in value.items():
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ConfigError(f"pbt.bounds.\"{name}\" = {pair!r}: give [low, high]")
                pairs.append((name, tuple(check_type(f"pbt.bounds.\"{name}\"", v, float) for v in pair)))
            values["bounds"] = tuple(pairs)
        elif key == "hparams":
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"pbt.hparams = {value!r}: give a list such as [\"optim.learning_rate\"]")
            values["hparams"] = tuple(check_type("pbt.hparams", v, str) for v in value)
        elif key == "factors":
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(f"pbt.factors = {value!r}: give a list such as [0.8, 1.25]")
            values["factors"] = tuple(check_type("pbt.factors", v, float) for v in value)
        else:
            values[key] = check_type(f"pbt.{key}", value, FIELDS[key])
    return PBTConfig(**values)


def pbt_to_dict(cfg: PBTConfig) -> dict:
    out = {k: getattr(cfg, k) for k in FIELDS if k != "bounds"}
    out["hparams"], out["factors"] = list(cfg.hparams), list(cfg.factors)
    out["bounds"] = {name: list(pair) for name, pair in cfg.bounds}
    return out


def check_pbt(cfg: PBTConfig, member_hparams: Mapping, eval_every: int, n_chunks: int) -> None:
    """Range checks of ``[pbt]`` against the cohort's member hyperparameters (name -> ``HParam``).

    Raises:
      ConfigError: naming the field and the fix.
    """
    for name in ("every", "groups"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"pbt.{name} = {getattr(cfg, name)}: must be >= 1")
    if cfg.ready_after < 0:
        raise ConfigError(f"pbt.ready_after = {cfg.ready_after}: chunks of burn-in, >= 0")
    choice("pbt.mode", cfg.mode, ("max", "min"))
    choice("pbt.exploit", cfg.exploit, EXPLOITS)
    choice("pbt.explore", cfg.explore, EXPLORES)
    if not 0 < cfg.fraction <= 0.5:
        raise ConfigError(f"pbt.fraction = {cfg.fraction}: the share copied and copied from, in (0, 0.5]")
    if not 0 <= cfg.resample_probability <= 1:
        raise ConfigError(f"pbt.resample_probability = {cfg.resample_probability}: a probability in [0, 1]")
    if any(not (f > 0 and math.isfinite(f)) for f in cfg.factors):
        raise ConfigError(f"pbt.factors = {list(cfg.factors)}: every factor must be a finite number > 0")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"pbt.seed = {cfg.seed}: must be in [0, 2^32)")
    if not cfg.metric.startswith(("train_", "test_")):
        raise ConfigError(f"pbt.metric = {cfg.metric!r}: rank members by a logged train_* or test_* metric, "
                          "e.g. \"test_accuracy\" or \"train_loss\"")
    if cfg.metric.startswith("test_") and cfg.every % eval_every:
        raise ConfigError(f"pbt.metric = {cfg.metric!r} is evaluated every train.eval_every = {eval_every} chunks, "
                          f"but a round comes every pbt.every = {cfg.every}; make every a multiple of eval_every")
    if cfg.ready_after + cfg.every > n_chunks:
        raise ConfigError(f"pbt: the first round would come after chunk {cfg.ready_after + cfg.every}, but the run "
                          f"has {n_chunks} chunks; lower pbt.every or pbt.ready_after, or train longer")
    if not cfg.hparams:
        raise ConfigError("pbt.hparams is empty: name the member hyperparameters to explore, e.g. "
                          "[\"optim.learning_rate\"]")
    for name in cfg.hparams:
        if name not in member_hparams:
            raise ConfigError(f"pbt.hparams: {name!r} is not a member hyperparameter of this study"
                              f"{closest(name, list(member_hparams))}; `jaxdyn list` shows them")
    for name, (low, high) in cfg.bounds:
        if name not in cfg.hparams:
            raise ConfigError(f"pbt.bounds.\"{name}\" bounds a hyperparameter pbt.hparams does not explore")
        if not low < high:
            raise ConfigError(f"pbt.bounds.\"{name}\" = [{low}, {high}]: low must be below high")
    if cfg.explore == "resample":
        for name in cfg.hparams:
            low, high = explore_range(name, member_hparams[name], cfg)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ConfigError(f"pbt.explore = \"resample\" draws {name} from its range, which is unbounded; "
                                  f"give [pbt.bounds] \"{name}\" = [low, high]")


def pbt_plan(cfg) -> str:
    """What ``[pbt]`` will do in a study of config ``cfg``, in one paragraph (``--dry-run``)."""
    p, t = cfg.pbt, cfg.train
    n_chunks = t.steps // t.chunk_steps
    chunks = [c for c in range(p.ready_after + p.every, n_chunks, p.every)]
    shown = ", ".join(map(str, chunks[:8])) + (f", ... ({len(chunks)} rounds)" if len(chunks) > 8 else "")
    exploit = (f"the bottom {p.fraction:g} copy from the top {p.fraction:g}" if p.exploit == "truncation"
               else "binary tournament")
    explore = (f"perturb by {list(p.factors)}" if p.explore == "perturb"
               else f"resample with probability {p.resample_probability:g}, else perturb by {list(p.factors)}")
    decls = explorable(cfg)
    ranges = "; ".join(f"{h} in [{lo:g}, {hi:g}]" for h in p.hparams for lo, hi in [explore_range(h, decls[h], p)])
    return (f"PBT: rounds after chunks {shown or 'none'}, ranking by {p.metric} ({p.mode}), {p.groups} "
            f"population(s) per cohort; exploit: {exploit}; explore: {explore}; {ranges}")


def explorable(cfg) -> dict:
    """Every member hyperparameter of a cohort's ``Config`` PBT can explore, ``"section.name" -> HParam``:
    those of ``Config.hparam_decls`` and, for a task with jaxdyn's optimizer, the optimizer family's
    and the schedule's numbers (``optim.learning_rate``, ``optim.b1``, ``optim.alpha``, ...)."""
    decls = dict(cfg.hparam_decls())
    if cfg.task.spec().uses_optim:
        family = FAMILIES[cfg.optim.name]
        for name, default in family.defaults.items():
            if name in family.unit:
                decls[f"optim.{name}"] = HParam(default, 0.0, 1.0)
            else:
                decls[f"optim.{name}"] = HParam(default, 0.0, math.inf, low_open=name in family.positive)
        decls.update(SCHEDULES[cfg.optim.schedule].hparams)
    return decls


def explore_range(name: str, decl, cfg: PBTConfig) -> tuple[float, float]:
    """The closed range explored values of ``name`` are clipped to: its ``HParam`` range (an open
    bound moved in by one float32 step) within the user's ``[pbt.bounds]``."""
    low, high = float(decl.low), float(decl.high)
    if decl.low_open:
        low = float(np.nextafter(np.float32(low), np.float32(np.inf)))
    if decl.high_open and math.isfinite(high):
        high = float(np.nextafter(np.float32(high), np.float32(-np.inf)))
    user = cfg.bound(name)
    if user is not None:
        low, high = max(low, user[0]), min(high, user[1])
    return low, high


@dataclass(frozen=True)
class ReplayConfig:
    """``[replay]``: a piecewise-constant schedule of member hyperparameters, set between chunks.

    ``jaxdyn run --replay RUN:MEMBER`` writes it from a PBT member's ``Results.schedule``
    (Ray's "PBT replay"); a user may write one by hand as well.
    """

    run: str = ""  # the PBT run replayed (TOML key: from); a record, not read while training
    member: int = -1  # the member of that run replayed; a record
    steps: tuple[int, ...] = ()  # the steps at which the values change (multiples of train.chunk_steps)
    hparams: tuple[tuple[str, tuple[float, ...]], ...] = ()  # [replay.hparams] "section.name" = [one per step]


REPLAY_FIELDS = {"from": str, "member": int, "steps": list, "hparams": Mapping}


def replay_from_dict(raw) -> ReplayConfig:
    """Parse ``[replay]``: keys and types (steps and ranges: ``check_replay``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[replay] must be a table with steps = [...] and [replay.hparams]; got {raw!r}")
    values = {}
    for key, value in raw.items():
        if key not in REPLAY_FIELDS:
            raise ConfigError(f"unknown key replay.{key}{closest(key, list(REPLAY_FIELDS))}")
        if key == "steps":
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"replay.steps = {value!r}: give a list such as [400, 800]")
            values["steps"] = tuple(check_type("replay.steps", v, int) for v in value)
        elif key == "hparams":
            if not isinstance(value, Mapping):
                raise ConfigError(f"[replay.hparams] must be a table of \"section.name\" = [values], got {value!r}")
            pairs = []
            for name, series in value.items():
                if not isinstance(series, (list, tuple)):
                    raise ConfigError(f"replay.hparams.\"{name}\" = {series!r}: give one value per replay.steps entry")
                pairs.append((name, tuple(check_type(f"replay.hparams.\"{name}\"", v, float) for v in series)))
            values["hparams"] = tuple(pairs)
        else:
            values["run" if key == "from" else key] = check_type(f"replay.{key}", value, REPLAY_FIELDS[key])
    return ReplayConfig(**values)


def replay_to_dict(cfg: ReplayConfig) -> dict:
    return {"from": cfg.run, "member": cfg.member, "steps": list(cfg.steps),
            "hparams": {name: list(values) for name, values in cfg.hparams}}


def check_replay(cfg: ReplayConfig, member_hparams: Mapping, chunk_steps: int, steps: int) -> None:
    """Steps and values of ``[replay]`` against the study (``member_hparams``: name -> ``HParam``).

    Raises:
      ConfigError: naming the field and the fix.
    """
    if list(cfg.steps) != sorted(set(cfg.steps)) or any(not 0 < s < steps for s in cfg.steps):
        raise ConfigError(f"replay.steps = {list(cfg.steps)}: increasing steps inside the run (0 < step < "
                          f"train.steps = {steps}); the values before the first are the study's own")
    off = [s for s in cfg.steps if s % chunk_steps]
    if off:
        raise ConfigError(f"replay.steps: {off[0]} is not a multiple of train.chunk_steps = {chunk_steps}; values "
                          "change between chunks, so use the replayed run's chunk_steps")
    for name, values in cfg.hparams:
        if name not in member_hparams:
            raise ConfigError(f"replay.hparams: {name!r} is not a member hyperparameter of this study"
                              f"{closest(name, list(member_hparams))}; `jaxdyn list` shows them")
        if len(values) != len(cfg.steps):
            raise ConfigError(f"replay.hparams.\"{name}\" has {len(values)} values for {len(cfg.steps)} replay.steps; "
                              "give one value per step")
        for value in values:
            problem = member_hparams[name].problem(float(np.float32(value)))
            if problem:
                raise ConfigError(f"replay.hparams.\"{name}\" = {value!r}: {problem}")
