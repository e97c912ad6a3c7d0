"""Tasks: what ONE member does. ``init / step / evaluate``, pure, never aware of K."""

from jaxdyn.tasks.base import MemberState, Seeds, Task, TaskKind, fresh_state, makes_snapshots, no_views
from jaxdyn.tasks.supervised import SupervisedTask

__all__ = ["MemberState", "Seeds", "SupervisedTask", "Task", "TaskKind", "fresh_state", "makes_snapshots", "no_views"]
