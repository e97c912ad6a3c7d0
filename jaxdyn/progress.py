"""A rich progress bar for a study: step, member-steps/s, ETA and alive members per cohort."""

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class StudyProgress:
    """One bar per cohort, advanced once per chunk."""

    def __init__(self, n_cohorts: int, console: Console | None = None):
        self.n_cohorts = n_cohorts
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=16),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[rate]:,.0f} member-steps/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            TextColumn("alive {task.fields[alive]}/{task.fields[members]}"),
            console=console,
        )
        self._task = None

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)

    def start_cohort(self, cohort, layout, completed: int) -> None:
        if self._task is not None:
            self._bar.stop_task(self._task)
        k = len(cohort.members)
        label = ", ".join(f"{key}={value}" for key, value in cohort.settings.items())
        self._task = self._bar.add_task(
            f"cohort {cohort.index + 1}/{self.n_cohorts} {label}".strip(),
            total=cohort.config.train.steps, completed=completed, rate=0.0, alive=k, members=k,
        )

    def stop_cohort(self, reason: str) -> None:
        """Mark the current cohort as stopped early (its bar stays short of the end)."""
        description = self._bar.tasks[-1].description
        self._bar.update(self._task, description=f"{description} ({reason})")
        self._bar.stop_task(self._task)

    def advance(self, steps: int, member_steps_per_s: float, alive: int) -> None:
        self._bar.update(self._task, advance=steps, rate=member_steps_per_s, alive=alive)
