"""Learning curves: mean over seeds ± one std, one line per setting."""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state touched
from matplotlib.lines import Line2D

from jaxdyn.results import varying_settings

PANELS = [("train_loss", "train loss (window mean)", "log"), ("test_loss", "test loss", "log"),
          ("test_accuracy", "test accuracy", "linear")]


def setting_labels(members: pd.DataFrame) -> pd.Series:
    """A readable label per member from the columns that vary across settings (not seeds)."""
    keys = varying_settings(members) or ["cohort"]

    def label(row):
        return ", ".join(f"{k.split('.')[-1]}={row[k]:g}" if isinstance(row[k], float) else f"{k.split('.')[-1]}={row[k]}"
                         for k in keys if pd.notna(row[k]))

    return members.set_index("member").apply(label, axis=1)


def plot_curves(members: pd.DataFrame, metrics: pd.DataFrame, path: Path) -> Figure:
    """Write ``path`` (PNG): train loss, test loss and test accuracy against step (no
    accuracy panel for a regression study, whose loss is the mean squared error).

    Each line is one setting: the mean over its seeds, with a band of ± one std.
    Diverged members drop out of a mean from the step they diverged (their train
    loss is NaN from then on). Values that cannot be drawn (NaN, inf, and zero or
    negative values on a log axis) are left out; a setting with nothing left in a
    panel is named in that panel's title, a setting with nothing left anywhere is
    marked in the legend, and a panel with nothing at all says so. Returns the figure.
    """
    panels = [p for p in PANELS if p[0] != "test_accuracy" or (metrics.metric == "test_accuracy").any()]
    labels = setting_labels(members)
    settings = list(dict.fromkeys(labels))
    colors = {s: f"C{i % 10}" for i, s in enumerate(settings)}
    fig = Figure(figsize=(5 * len(panels) + 2, 4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    drawn_anywhere = set()
    for ax, (metric, title, scale) in zip(axes, panels):
        values = metrics.loc[metrics.metric == metric, ["member", "step", "value"]]
        values = values.assign(value=values.value.astype(np.float64))  # float32 means of huge losses overflow
        drawable = np.isfinite(values.value) & ((values.value > 0) if scale == "log" else True)
        rows = values[drawable].assign(setting=lambda f: f.member.map(labels))
        stats = rows.groupby(["setting", "step"]).value.agg(["mean", "std"]).reset_index()
        stats = stats[np.isfinite(stats["mean"])]
        curves = dict(tuple(stats.groupby("setting", sort=False)))
        for setting in settings:
            if setting not in curves:
                continue
            curve = curves[setting]
            mean, std = curve["mean"], curve["std"].fillna(0)
            lower = (mean - std).clip(lower=mean / 10) if scale == "log" else mean - std  # stay on a log axis
            ax.plot(curve.step, mean, label=setting, color=colors[setting], marker="o" if len(curve) < 3 else None)
            ax.fill_between(curve.step, lower, mean + std, alpha=0.2, color=colors[setting])
            drawn_anywhere.add(setting)
        skipped = [s for s in settings if s not in curves]
        why = "no finite positive values" if scale == "log" else "no finite values"
        if not curves:
            ax.text(0.5, 0.5, f"nothing to draw:\n{why}", ha="center", va="center", transform=ax.transAxes)
        elif skipped:
            title += f"\n{len(skipped)} of {len(settings)} settings not drawn: {why}"
        ax.set(title=title, xlabel="step", yscale=scale if curves else "linear")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[s]) if s in drawn_anywhere
               else Line2D([], [], color=colors[s], linestyle="none", marker="x") for s in settings]
    names = [s if s in drawn_anywhere else f"{s} (nothing to draw)" for s in settings]
    seeds = members.groupby(labels.values).size().max() if len(members) else 0
    fig.legend(handles, names, loc="outside right upper", fontsize="small", title=f"mean ± std\nover {seeds} seeds")
    fig.savefig(path, dpi=110, format="png")
    return fig
