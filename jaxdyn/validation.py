"""Range checks on a parsed config, before anything compiles.

Parsing (keys and types) is ``config.py``'s job; this module judges values: the
choices exist, numbers lie in their declared ranges and fit the float32 members
train in, sizes agree with the dataset, seeds are well formed. Every message
names the field, the bad value and the fix.
"""

import math

import numpy as np

from jaxdyn.axes import MEMBER_HPARAMS
from jaxdyn.config import MAX_MEMBERS, Config, StudyConfig
from jaxdyn.data import COMMON_FIELDS, DATASETS, DataConfig, check_token_inputs, dataset_info, dataset_spec
from jaxdyn import extension
from jaxdyn.errors import ConfigError, choice, chunk_steps_fix, closest
from jaxdyn.hparams import changed_later, may_be_positive
from jaxdyn.losses import LOSSES, REGRESSION_LOSSES
from jaxdyn.losses import check_user_loss
from jaxdyn.models import ModuleConfig, model_spec
from jaxdyn.optim import FAMILIES
from jaxdyn.optim_config import check_float32, check_schedule
from jaxdyn.federated.config import check_federated
from jaxdyn.pbt.config import check_pbt, check_replay, explorable
from jaxdyn.probes import check_probes
from jaxdyn.schedules import SCHEDULES


def validate(cfg: Config) -> None:
    """Range checks on one cohort's config (no grid left). Raises ConfigError."""
    if not cfg.study.name or any(c in cfg.study.name for c in "/\\") or cfg.study.name in (".", ".."):
        raise ConfigError(f"study.name = {cfg.study.name!r}: it names the run folder, so use no path "
                          "separators; choose the folder itself with --out")
    info = check_data(cfg.data)
    kind = cfg.task.spec()
    if kind.check is not None:
        kind.check(cfg, info)
    choice("optim.name", cfg.optim.name, FAMILIES)
    choice("optim.schedule", cfg.optim.schedule, SCHEDULES)
    check_schedule(cfg.optim, cfg.train.steps)
    if cfg.loss.name not in LOSSES:
        if not extension.is_path(cfg.loss.name):
            choice("loss.name", cfg.loss.name, LOSSES)
        check_user_loss(cfg.loss.name, info)
    elif info.regression and cfg.loss.name not in REGRESSION_LOSSES:
        raise ConfigError(f"loss.name = {cfg.loss.name!r}: data.name = {cfg.data.name!r} has real-valued targets; "
                          "use loss.name = \"mse\" (or \"auto\")")
    values = cfg.hparam_values()
    for key, decl in cfg.hparam_decls().items():
        check_member_value(key, values[key], decl)
    try:
        if isinstance(cfg.model, ModuleConfig):
            cfg.model.check(info.input_shape, info.n_out)
        else:
            model_spec(cfg.model).check(cfg.model, info.input_shape)
    except ConfigError as e:
        if cfg.data.path and "path" in dataset_spec(cfg.data.name).fields:
            raise ConfigError(f"{e} (data.path = {cfg.data.path!r})") from None
        raise
    takes = [*FAMILIES[cfg.optim.name].defaults,
             *(k.split(".")[1] for k in SCHEDULES[cfg.optim.schedule].hparams)]
    for key, _ in cfg.optim.hparams:
        if key not in takes:
            raise ConfigError(
                f"optim.{key} is not a number of optimizer {cfg.optim.name!r} with schedule "
                f"{cfg.optim.schedule!r}{closest(key, takes)} (see `jaxdyn list`)"
            )
    _check_seeds(cfg.study.seeds)
    t = cfg.train
    if not 0 <= cfg.data.n_train <= info.n_train:
        raise ConfigError(
            f"data.n_train = {cfg.data.n_train}: the {cfg.data.name} training set has "
            f"{info.n_train} examples; use 1..{info.n_train}, or 0 for all"
        )
    n_train = cfg.data.n_train or info.n_train
    check_probes(cfg.probes, n_train, t.full_batch)
    if cfg.data.fresh and t.full_batch:
        raise ConfigError("data.fresh = true draws a new batch each step, and train.full_batch = true trains on "
                          "the whole fixed training set each step; remove one (gradient descent on the fixed set: "
                          "remove data.fresh)")
    if cfg.data.fresh and cfg.data.standardize:
        raise ConfigError("data.standardize = true z-scores with the fixed training set's statistics, which new "
                          "examples drawn by data.fresh = true never see; remove data.standardize (parity's "
                          "\"signs\" inputs are zero-mean with unit variance already)")
    if cfg.federated is not None:
        check_federated(cfg.federated, t, cfg.data, info, cfg.task.kind)
        for section in ("pbt", "replay", "init"):
            if getattr(cfg, section) is not None:
                raise ConfigError(f"[{section}] and [federated] are both set: jaxdyn does not combine them yet; "
                                  f"remove one of them")
    if cfg.pbt is not None:
        check_pbt(cfg.pbt, explorable(cfg), t.eval_every, t.steps // max(t.chunk_steps, 1))
    if cfg.replay is not None:
        if cfg.pbt is not None:
            raise ConfigError("[replay] and [pbt] are both set: a replay follows one recorded schedule without "
                              "rounds; remove one of them")
        check_replay(cfg.replay, explorable(cfg), max(t.chunk_steps, 1), t.steps)
    for name in ("steps", "batch_size", "chunk_steps", "log_every", "eval_every", "checkpoint_every"):
        if getattr(t, name) <= 0:
            raise ConfigError(f"train.{name} = {getattr(t, name)}: must be >= 1")
    if t.member_group < 0:
        raise ConfigError(f"train.member_group = {t.member_group}: must be >= 1, or 0 for automatic")
    if t.max_members_per_program < 0:
        raise ConfigError(f"train.max_members_per_program = {t.max_members_per_program}: must be >= 1, or 0 for "
                          "no limit (every cohort in one program)")
    if t.batch_size > n_train and not t.full_batch:
        raise ConfigError(
            f"train.batch_size = {t.batch_size} is larger than the {cfg.data.name} training set "
            f"({n_train} examples); use at most {n_train}"
        )
    rounds = cfg.federated.local_steps if cfg.federated is not None else 1
    if t.steps % t.chunk_steps:
        raise ConfigError(
            f"train.steps = {t.steps} is not a multiple of train.chunk_steps = {t.chunk_steps}; "
            f"{chunk_steps_fix(t.steps, t.chunk_steps, t.log_every, rounds)}"
        )
    if t.chunk_steps % t.log_every:
        raise ConfigError(
            f"train.chunk_steps = {t.chunk_steps} is not a multiple of train.log_every = {t.log_every}; "
            f"set log_every to a divisor of chunk_steps, e.g. {math.gcd(t.chunk_steps, t.log_every)}, or "
            f"{chunk_steps_fix(t.steps, t.chunk_steps, t.log_every, rounds)}"
        )


def check_data(data: DataConfig):
    """The ``[data]`` fields fit the dataset; returns its ``DatasetInfo`` (a user file is read here)."""
    spec = dataset_spec(data.name)
    for name in DataConfig.__dataclass_fields__:
        if name not in COMMON_FIELDS and name not in spec.fields and getattr(data, name) != getattr(DataConfig, name):
            readers = [k for k, v in DATASETS.items() if name in v.fields]
            raise ConfigError(f"data.{name} = {getattr(data, name)!r} is not read by data.name = {data.name!r} "
                              f"(it is for {', '.join(readers)}); remove it")
    minimum = {"seq_len": 1, "input_dim": 1, "teacher_width": 1, "teacher_depth": 0, "seed": 0, "shift": 0,
               "crop": 0, **dict(spec.minimum)}
    for name, low in minimum.items():
        if getattr(data, name) < low:
            raise ConfigError(f"data.{name} = {getattr(data, name)}: must be >= {low}")
    if data.seed >= 2**32:
        raise ConfigError(f"data.seed = {data.seed}: must be below 2^32")
    if not data.teacher_noise >= 0 or not math.isfinite(data.teacher_noise):
        raise ConfigError(f"data.teacher_noise = {data.teacher_noise}: give a finite std >= 0")
    if not 0 < data.test_fraction < 1:
        raise ConfigError(f"data.test_fraction = {data.test_fraction}: give a fraction in (0, 1), e.g. 0.2")
    if data.targets not in ("classes", "values"):
        raise ConfigError(f"data.targets = {data.targets!r}: use \"classes\" (integer labels) or "
                          "\"values\" (real-valued regression targets)")
    info = dataset_info(data)  # a dataset's own range checks (modular, parity) raise here
    check_token_inputs(data, info)
    rank = len(info.input_shape)
    if data.shift and rank not in (1, 2):
        raise ConfigError(f"data.shift = {data.shift}: shifts sequences ([T] or [T, F] examples), but "
                          f"{data.name!r} examples have shape {list(info.input_shape)}; use data.crop for images")
    if data.shift >= (info.input_shape[0] if rank else 1):
        raise ConfigError(f"data.shift = {data.shift}: must be below the sequence length {info.input_shape[0]}")
    for name in ("crop", "flip"):
        if getattr(data, name) and rank != 3:
            raise ConfigError(f"data.{name} = {getattr(data, name)!r}: augments images ([H, W, C] examples), but "
                              f"{data.name!r} examples have shape {list(info.input_shape)}"
                              + ("; use data.shift for sequences" if rank in (1, 2) else ""))
    return info


def check_members(cfg: Config, members) -> None:
    """Member values that depend on the dataset: label noise needs one class label per example,
    label smoothing needs classes, input noise needs real-valued inputs."""
    info = dataset_info(cfg.data)
    later = changed_later(cfg)  # what PBT or a replay may set above 0 later: checked as if it were now
    if "noise_std" in members and (members["noise_std"] > 0).any():
        check_token_inputs(cfg.data, info, float(members["noise_std"][members["noise_std"] > 0].iloc[0]))
    if "noise_std" in later and info.vocab:
        where, key = later["noise_std"]
        raise ConfigError(f"{where} ({key}) changes data.noise_std, which adds noise to the inputs, but "
                          f"data.name = {cfg.data.name!r} gives token ids as inputs; remove it from {where}")
    for name, why in (("label_noise", "one class label per example"), ("label_smoothing", "class labels")):
        ok = not info.regression and (name == "label_smoothing" or info.target_shape == ())
        section = "data" if name == "label_noise" else "loss"
        used = members[name] > 0 if name in members else None
        if used is not None and used.any() and not ok:
            raise ConfigError(f"{section}.{name} = {members[name][used].iloc[0]:g}: needs {why}, which "
                              f"data.name = {cfg.data.name!r} does not have; set it to 0")
        if name in later and not ok:
            where, key = later[name]
            raise ConfigError(f"{where} ({key}) changes {section}.{name}, which needs {why}, which data.name = "
                              f"{cfg.data.name!r} does not have; remove it from {where}")
    if extension.is_path(cfg.loss.name) and may_be_positive(cfg, members, "label_smoothing"):
        raise ConfigError(f"loss.label_smoothing applies to jaxdyn's classification losses, but loss.name = "
                          f"{cfg.loss.name!r} gets the raw targets; set it to 0 and leave it out of [pbt] and "
                          "[replay] (or smooth inside your loss)")


def check_member_value(key: str, value: float, decl=None) -> None:
    """Range check of one declared member hyperparameter (``"loss.l2"``, ...) value; ``decl`` its
    ``HParam`` (default: jaxdyn's own declaration of ``key``)."""
    decl = MEMBER_HPARAMS[key] if decl is None else decl
    where = f"{key} = {value!r}"
    check_float32(where, value)
    problem = decl.problem(float(np.float32(value)))
    if problem:
        raise ConfigError(f"{where}: {problem}" + (f" ({decl.doc})" if decl.doc else ""))


def _check_seeds(seeds) -> None:
    hint = ("use an integer N >= 1 (seeds 0..N-1), a list of seeds, or a list of [init_seed, data_seed] "
            "pairs or [init_seed, data_seed, dropout_seed] triples")
    if isinstance(seeds, bool):
        raise ConfigError(f"study.seeds = {seeds!r}: {hint}")
    if isinstance(seeds, int):
        if seeds <= 0:
            raise ConfigError(f"study.seeds = {seeds}: must be >= 1; {hint}")
        if seeds > MAX_MEMBERS:
            raise ConfigError(f"study.seeds = {seeds}: at most {MAX_MEMBERS:,} seeds per setting")
        return
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"study.seeds = {seeds!r}: {hint}")
    for s in seeds:
        pair = [s, s] if isinstance(s, int) and not isinstance(s, bool) else s
        if (
            not isinstance(pair, (list, tuple)) or len(pair) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in pair)
        ):
            raise ConfigError(f"study.seeds entry {s!r}: seeds are integers in [0, 2^31); {hint}")
    sets = Config(study=StudyConfig(seeds=seeds)).seed_sets()
    if len(set(sets)) != len(sets):
        raise ConfigError(f"study.seeds = {seeds!r} repeats a seed setting; each must be distinct")
