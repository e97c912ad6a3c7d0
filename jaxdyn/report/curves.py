"""Learning curves: mean over seeds ± one std, one line per setting."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state touched

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
    """Write ``path`` (PNG): train loss, test loss and test accuracy against step.

    Each line is one setting: the mean over its seeds, with a band of ± one std.
    Diverged members drop out of a mean from the step they diverged (their train
    loss is NaN from then on). Returns the figure for inspection.
    """
    labels = setting_labels(members)
    fig = Figure(figsize=(5 * len(PANELS) + 2, 4), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    for ax, (metric, title, scale) in zip(axes, PANELS):
        rows = metrics[metrics.metric == metric].assign(setting=lambda f: f.member.map(labels))
        stats = rows.groupby(["setting", "step"]).value.agg(["mean", "std"]).reset_index()
        for setting, curve in stats.groupby("setting", sort=False):
            mean, std = curve["mean"], curve["std"].fillna(0)
            lower = (mean - std).clip(lower=mean / 10) if scale == "log" else mean - std  # stay on a log axis
            ax.plot(curve.step, mean, label=setting, marker="o" if len(curve) < 3 else None)
            ax.fill_between(curve.step, lower, mean + std, alpha=0.2)
        ax.set(title=title, xlabel="step", yscale=scale)
        ax.grid(alpha=0.3)
    seeds = members.groupby(labels.values).size().max()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize="small",
               title=f"mean ± std\nover {seeds} seeds")
    fig.savefig(path, dpi=110, format="png")
    return fig
