"""``jaxdyn run --replay RUN:MEMBER``: a PBT member's hyperparameter schedule as a study of its own.

Ray Tune calls this "PBT replay": train one fresh member with the schedule PBT found
(``Results.schedule``), to test whether the schedule alone reproduces the result, without
the state copies that produced it. The replay starts as the member's first ancestor
started (its cohort settings, seeds and hyperparameters) and changes the explored
hyperparameters at the steps PBT changed them (``[replay]``). Hyperparameters PBT did
not explore are copied along with the state, so along one line of ancestors they are the
first ancestor's throughout.
"""

from pathlib import Path

from jaxdyn.config import Config, load_config, to_dict
from jaxdyn.errors import ConfigError
from jaxdyn.results import load
from jaxdyn.rundir import load_run_config
from jaxdyn.study import expand


def parse_target(target: str) -> tuple[Path, int]:
    """``"RUN:MEMBER"`` -> ``(run folder, member id)``.

    Raises:
      ConfigError: not of that form.
    """
    run, sep, member = str(target).rpartition(":")
    if not sep or not run or not member.isdigit():
        raise ConfigError(f"--replay {target!r}: give RUN_DIR:MEMBER, e.g. --replay runs/pbt:5")
    return Path(run), int(member)


def replay_study(run_dir, member: int) -> Config:
    """The study that replays ``member`` of the PBT run ``run_dir``: one member, the first
    ancestor's settings, seeds and hyperparameters, and a ``[replay]`` table of the rest of
    the schedule.

    Raises:
      ConfigError: no such run, member, or no PBT rounds in it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"--replay {run_dir}: no config.toml there; give the folder of a jaxdyn PBT run")
    tables = load(run_dir)
    try:
        schedule = tables.schedule(member)
    except KeyError as e:
        raise ConfigError(f"--replay {run_dir}:{member}: {e.args[0]}") from None
    parent = load_run_config(run_dir)
    root = tables.members.set_index("member").loc[int(schedule.member.iloc[0])]
    cohort = expand(parent)[int(root.cohort)].alone(int(schedule.member.iloc[0]))  # its own initialiser
    raw = to_dict(cohort.config)
    raw.pop("pbt", None)
    raw["grid"] = {}
    raw["study"]["name"] = f"{parent.study.name}-replay-m{member}"
    raw["study"]["seeds"] = [[int(root.init_seed), int(root.data_seed), int(root.dropout_seed)]]
    sections = _sections(cohort.config)
    for name in cohort.hparam_names:
        raw.setdefault(sections[name], {})[name] = float(root[name])
    # The run's explored keys: its [pbt] table's, or for a replay of a replay, its [replay] table's.
    keys = parent.pbt.hparams if parent.pbt is not None else [key for key, _ in parent.replay.hparams]
    explored = {key.split(".", 1)[1]: key for key in keys}
    changes = schedule.iloc[1:]
    raw["replay"] = {"from": str(run_dir), "member": int(member), "steps": [int(s) for s in changes.step],
                     "hparams": {explored[n]: [float(v) for v in changes[n]] for n in explored}}
    return load_config(raw)


def _sections(cfg: Config) -> dict[str, str]:
    """Each member hyperparameter's bare name (a ``members.csv`` column) -> the section that sets it."""
    kind = cfg.task.spec()
    out = {name: "optim" for name in cfg.optim_hparams()} if kind.uses_optim else {}
    out |= {key.split(".")[1]: key.split(".")[0] for key in cfg.hparam_decls()}
    if kind.member_hparams is not None:
        out |= {name: kind.section for name in kind.member_hparams(cfg.task.options)}
    return out
