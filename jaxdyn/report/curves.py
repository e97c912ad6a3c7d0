"""Learning curves: mean over seeds ± one std, one line per setting."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state touched
from matplotlib.lines import Line2D

from jaxdyn.explore import draw_metric, member_settings
from jaxdyn.report.names import describe
from jaxdyn.results import varying_settings

PANELS = [("train_loss", "log"), ("test_loss", "log"), ("test_accuracy", "linear")]


def _grouping(members: pd.DataFrame) -> list[str]:
    """The varying settings, else the cohort (one setting per cohort); a setting split into parts
    (a ``part`` column) is one setting over several cohorts, so nothing then."""
    return varying_settings(members) or ([] if "part" in members else ["cohort"])


def setting_labels(members: pd.DataFrame) -> pd.Series:
    """A readable label per member from the columns that vary across settings (not seeds)."""
    return member_settings(members, _grouping(members))


def plot_curves(members: pd.DataFrame, metrics: pd.DataFrame, path: Path, loss_label: str = "") -> Figure:
    """Write ``path`` (PNG): train loss, test loss and test accuracy against step (no
    accuracy panel for a regression study, whose loss is the mean squared error).

    Each line is one setting: the mean over its seeds, with a band of ± one std.
    Diverged members drop out of a mean from the step they diverged (their train
    loss is NaN from then on). Values that cannot be drawn (NaN, inf, and zero or
    negative values on a log axis) are left out; a setting with nothing left in a
    panel is named in that panel's title, a setting with nothing left anywhere is
    marked in the legend, and a panel with nothing at all says so. ``loss_label`` says what
    the loss panels measure (``losses.logged_loss``). Returns the figure.
    """
    panels = [p for p in PANELS if p[0] != "test_accuracy" or (metrics.metric == "test_accuracy").any()]
    by = _grouping(members)
    labels = member_settings(members, by)
    settings = list(dict.fromkeys(labels))
    colors = {s: f"C{i % 10}" for i, s in enumerate(settings)}
    fig = Figure(figsize=(5 * len(panels) + 2, 4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    drawn_anywhere = set()
    for ax, (metric, scale) in zip(axes, panels):
        title = describe(metric, loss_label)
        rows = metrics.loc[metrics.metric == metric, ["member", "step", "value"]]
        drawn = draw_metric(ax, rows.merge(members[["member", *by]], on="member"), metric, by, "mean_std", colors,
                            log=scale == "log")
        drawn_anywhere.update(drawn)
        skipped = [s for s in settings if s not in drawn]
        why = "no finite positive values" if scale == "log" else "no finite values"
        if not drawn:
            ax.text(0.5, 0.5, f"nothing to draw:\n{why}", ha="center", va="center", transform=ax.transAxes)
        elif skipped:
            title += f"\n{len(skipped)} of {len(settings)} settings not drawn: {why}"
        ax.set(title=title, ylabel="")
    handles = [Line2D([], [], color=colors[s]) if s in drawn_anywhere
               else Line2D([], [], color=colors[s], linestyle="none", marker="x") for s in settings]
    names = [s if s in drawn_anywhere else f"{s} (nothing to draw)" for s in settings]
    seeds = members.groupby(labels.values).size().max() if len(members) else 0
    fig.legend(handles, names, loc="outside right upper", fontsize="small", title=f"mean ± std\nover {seeds} seeds")
    fig.savefig(path, dpi=110, format="png")
    return fig
