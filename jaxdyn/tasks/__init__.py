"""Tasks: what ONE member does. ``init / step / evaluate``, pure, never aware of K."""

from jaxdyn.tasks.supervised import MemberState, SupervisedTask

__all__ = ["MemberState", "SupervisedTask"]
