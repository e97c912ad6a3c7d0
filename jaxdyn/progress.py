"""A progress bar for a study: step, member-steps/s, ETA and alive members per cohort.

In a terminal it is rich's; in a Jupyter notebook, where rich's live display needs ipywidgets,
it is an HTML ``<progress>`` bar that IPython's display handle redraws once per chunk (IPython is
there in every kernel, so notebooks need nothing more).
"""

import html
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


def study_progress(n_cohorts: int, console: Console | None = None):
    """The bar for where this runs: ``NotebookProgress`` in a Jupyter kernel, else ``StudyProgress``."""
    console = console or Console()
    if console.is_jupyter:
        from IPython.display import display  # noqa: PLC0415 -- only inside a kernel, where IPython is

        return NotebookProgress(n_cohorts, display)
    return StudyProgress(n_cohorts, console)


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


class NotebookProgress:
    """The same bar as ``StudyProgress`` as HTML in a notebook cell: one line per cohort, redrawn in
    place through a display handle (``display(obj, display_id=True)`` returns it; ``handle.update``)."""

    def __init__(self, n_cohorts: int, display):
        self.n_cohorts = n_cohorts
        self._display = display
        self._handle = None
        self._rows = []  # finished cohorts' lines, then the current one

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._draw()

    def start_cohort(self, cohort, layout, completed: int) -> None:
        k = len(cohort.members)
        label = ", ".join(f"{key}={value}" for key, value in cohort.settings.items())
        self._rows.append({"label": f"cohort {cohort.index + 1}/{self.n_cohorts} {label}".strip(),
                           "total": cohort.config.train.steps, "done": completed, "start": completed,
                           "since": time.monotonic(), "rate": 0.0, "alive": k, "members": k, "note": ""})
        self._draw()

    def stop_cohort(self, reason: str) -> None:
        self._rows[-1]["note"] = f" ({reason})"
        self._draw()

    def advance(self, steps: int, member_steps_per_s: float, alive: int) -> None:
        self._rows[-1].update(done=self._rows[-1]["done"] + steps, rate=member_steps_per_s, alive=alive)
        self._draw()

    def html(self) -> str:
        """The bars as HTML (what the cell shows)."""
        lines = []
        for row in self._rows:
            lines.append(f'<div style="font-family: monospace"><progress value="{row["done"]}" max="{row["total"]}" '
                         f'style="width: 12em"></progress> {html.escape(row["label"])}{html.escape(row["note"])}: step '
                         f'{row["done"]:,}/{row["total"]:,}, {row["rate"]:,.0f} member-steps/s, ETA {_eta(row)}, '
                         f'alive {row["alive"]}/{row["members"]}</div>')
        return "".join(lines)

    def _draw(self) -> None:
        page = _HTML(self.html())
        if self._handle is None:
            self._handle = self._display(page, display_id=True)
        else:
            self._handle.update(page)


def _eta(row: dict) -> str:
    made, left = row["done"] - row["start"], row["total"] - row["done"]
    if left <= 0:
        return "0:00"
    if made <= 0:
        return "?"
    seconds = (time.monotonic() - row["since"]) / made * left
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class _HTML:
    """What IPython's display shows as HTML (its ``_repr_html_``), without importing IPython here."""

    def __init__(self, text: str):
        self.text = text

    def _repr_html_(self) -> str:
        return self.text
