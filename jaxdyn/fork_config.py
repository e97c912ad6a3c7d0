"""``[init]``: start a study's members from a trained member of another run (a fork).

``from`` names the parent run folder; ``member = N`` starts every member from parent
member N, ``members = "all"`` starts member i from parent member i; ``step`` picks the
parent's checkpoint (default: its newest); ``keep_optimizer`` carries the optimizer
state (moments and step count) over with the parameters. Resolving the parent and
copying its bits is ``fork``'s job; this module only reads and writes the table.
"""

from dataclasses import dataclass
from typing import Mapping

from jaxdyn.errors import ConfigError, closest
from jaxdyn.parsing import check_type


@dataclass(frozen=True)
class ForkConfig:
    run: str  # the parent run folder (TOML key: from)
    member: int = -1  # every member starts from this parent member (-1: not set)
    members: str = ""  # "all": member i starts from parent member i
    step: int = -1  # the parent's checkpoint after this many steps; -1: its newest; 0: its initial state
    keep_optimizer: bool = False  # carry the optimizer state (moments, step count) too


FIELDS = {"from": str, "member": int, "members": str, "step": int, "keep_optimizer": bool}


def fork_from_dict(raw) -> ForkConfig:
    """Parse ``[init]``: keys, types and which of ``member`` / ``members`` is set.

    Raises:
      ConfigError: naming the key and the fix.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[init] must be a table such as from = \"runs/parent\", member = 0; got {raw!r}")
    for key in raw:
        if key not in FIELDS:
            raise ConfigError(f"unknown key init.{key}{closest(key, list(FIELDS))}")
    values = {k: check_type(f"init.{k}", v, FIELDS[k]) for k, v in raw.items()}
    if "from" not in values:
        raise ConfigError("[init] needs from = \"RUN_DIR\": the run folder whose trained member the study starts from")
    if ("member" in values) == ("members" in values):
        raise ConfigError("[init] needs one of member = N (every member starts from parent member N) or "
                          "members = \"all\" (member i from parent member i)")
    if values.get("members", "all") != "all":
        raise ConfigError(f"init.members = {values['members']!r}: the only choice is \"all\"; "
                          "for one parent member use member = N")
    if values.get("member", 0) < 0:
        raise ConfigError(f"init.member = {values['member']}: a member id of the parent run, >= 0")
    if values.get("step", 0) < 0:
        raise ConfigError(f"init.step = {values['step']}: a step of the parent run with a checkpoint, >= 0")
    return ForkConfig(run=values.pop("from"), **values)


def fork_to_dict(cfg: ForkConfig) -> dict:
    out = {"from": cfg.run, "keep_optimizer": cfg.keep_optimizer}
    out |= {"member": cfg.member} if cfg.member >= 0 else {"members": cfg.members}
    return out | ({"step": cfg.step} if cfg.step >= 0 else {})
