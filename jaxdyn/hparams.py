"""Member hyperparameters: numeric settings that differ per member as arrays.

A component declares each number it reads from a member's state with a default
and a valid range; ``config.py`` gathers the declarations, so a new one is a grid
axis, a ``--set`` key, a ``members.csv`` column and a ``jaxdyn list`` entry with no
further wiring. Values reach the compiled program as float32 arrays in
``MemberState.hparams``, so a new value never costs a compile.

A choice among names that changes no shape (``model.init``, the initialiser) is
declared as a ``Choice``: a grid over it makes members too, and each member's
initialisation picks its own.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HParam:
    """One member hyperparameter.

    Attributes:
      default: the value when the config does not set it.
      low, high: the valid range; ``low_open``/``high_open`` exclude the bound.
      doc: one line for ``jaxdyn list``.
    """

    default: float
    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    doc: str = ""

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None."""
        if (value < self.low or (self.low_open and value == self.low)
                or value > self.high or (self.high_open and value == self.high)):
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            high = "inf" if math.isinf(self.high) else f"{self.high:g}"
            return f"must lie in {left}{self.low:g}, {high}{right}"
        return None

    def describe(self) -> str:
        return f"default {self.default:g}; {self.doc}"


@dataclass(frozen=True)
class Choice:
    """One member choice: a name among ``options`` that may differ per member, as an ``HParam``'s
    number does.

    The member table holds each member's name. A cohort compiles only the options its members
    use (``present``), and a member reaches the compiled program as its option's position among
    them, an int32 in the ``hparams`` its task's ``init`` gets under the choice's bare name: the
    choices are read while a member initialises, never kept in its state.

    Attributes:
      options: the valid names.
      doc: one line for ``jaxdyn list`` and the docs.
    """

    options: tuple[str, ...]
    doc: str = ""

    def describe(self) -> str:
        return f"a name, a member choice (no compile per value); {self.doc}"


def present(values) -> tuple[str, ...]:
    """The distinct names among a cohort's members' ``values``, in member order: the options its
    program compiles, and what each member's index counts into."""
    return tuple(dict.fromkeys(str(v) for v in values))


def may_be_positive(config, members, name: str) -> bool:
    """Whether member hyperparameter ``name`` (a bare name: ``"dropout"``) is above 0 for some member
    of a cohort, now or later: a column of ``members`` (a DataFrame) above 0, or a number that PBT
    explores or a replay sets in ``config``. Code that only a positive value needs (dropout masks,
    a penalty, FedProx's pull) is compiled in only then; a later draw above 0 must find it there."""
    if name in members and bool((members[name] > 0).any()):
        return True
    return name in changed_later(config)


def changed_later(config) -> dict[str, tuple[str, str]]:
    """The member hyperparameters ``config`` changes while a run goes on, by bare name, each as
    ``(where, "section.name")``: ``where`` is ``"pbt.hparams"`` (``[pbt]`` explores it) or
    ``"replay.hparams"`` (``[replay]`` sets it)."""
    changed = {key: "replay.hparams" for key, _ in (config.replay.hparams if config.replay is not None else ())}
    changed.update({key: "pbt.hparams" for key in (config.pbt.hparams if config.pbt is not None else ())})
    return {key.split(".")[-1]: (where, key) for key, where in changed.items()}
