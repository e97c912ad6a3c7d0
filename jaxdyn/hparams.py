"""Member hyperparameters: numeric settings that differ per member as arrays.

A component declares each number it reads from a member's state with a default
and a valid range; ``config.py`` gathers the declarations, so a new one is a grid
axis, a ``--set`` key, a ``members.csv`` column and a ``jaxdyn list`` entry with no
further wiring. Values reach the compiled program as float32 arrays in
``MemberState.hparams``, so a new value never costs a compile.
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
