"""``Results.plot``: one metric against step, a line per setting with its band over seeds (the report draws with it too)."""

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from jaxdyn.errors import brief

from jaxdyn.aggregate import AGGREGATES, aggregate as combine

LOG_METRICS = ("loss", "norm", "sharpness", "trace", "noise_scale")  # drawn on a log axis when positive


def plot_metric(frame: pd.DataFrame, metric: str, by: list[str], how: str = "mean_std", ax=None):
    """``frame`` (``Results.frame``) drawn against step: for each setting of ``by`` and each step,
    the centre and band of ``how`` over seeds (``jaxdyn.aggregate``); NaN values (diverged
    members) are left out of each step's aggregate. ``ax``: the matplotlib ``Axes`` to draw into
    (default: a new figure's). Returns the figure drawn on (``ax.figure`` when ``ax`` is given),
    as seaborn's plots do."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate = {how!r}: use one of {', '.join(AGGREGATES)}")
    if ax is None:
        ax = Figure(figsize=(7, 4.2), layout="constrained").subplots()
    elif not isinstance(ax, Axes):
        raise TypeError(f"ax = {brief(ax)}: give a matplotlib Axes (plt.subplots()[1]), or None for a new figure")
    draw_metric(ax, frame, metric, by, how)
    ax.legend(fontsize="small")
    return ax.figure


def setting_label(by, key) -> str:
    """``learning_rate=0.01, activation=relu``: a setting's values of the ``by`` columns. A
    column that does not apply to it (NaN: momentum under adam) is left out, unless none applies."""
    key = key if isinstance(key, tuple) else (key,)
    parts = [(k.split(".")[-1], v) for k, v in zip(by, key)]
    parts = [(k, v) for k, v in parts if pd.notna(v)] or parts
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in parts) or "all members"


def member_settings(members: pd.DataFrame, by: list[str]) -> pd.Series:
    """member -> the label of its setting of ``by`` (``setting_label``)."""
    labels = [setting_label(by, tuple(row)) for row in members[by].itertuples(index=False)]
    return pd.Series(labels, index=members.member.to_numpy(), dtype=object)


def draw_metric(ax, frame: pd.DataFrame, metric: str, by: list[str], how: str, colors=None,
                log: bool | None = None) -> list[str]:
    """Draw ``plot_metric``'s lines and bands on ``ax``; ``colors`` maps a setting's label to its
    colour (default: C0, C1, ... in order). ``log``: a log axis, on which values <= 0 are left
    out; None chooses one for a metric named in ``LOG_METRICS`` whose finite values are all
    positive. Returns the labels drawn: a setting with no finite value left is not drawn."""
    values = frame.value.to_numpy(np.float64)
    if log is None:
        finite = values[np.isfinite(values)]
        log = any(word in metric for word in LOG_METRICS) and finite.size > 0 and bool(np.all(finite > 0))
    if log:
        frame = frame[~(values <= 0)]  # NaN stays: a diverged member leaves the aggregate, not the step
    groups = frame.groupby(by, dropna=False, sort=True) if by else [((), frame)]
    drawn = []
    for i, (key, group) in enumerate(groups):
        label = setting_label(by, key)
        stats = group.groupby("step").value.apply(lambda v: combine(v.to_numpy(), how))
        centre, low, high = np.array(stats.tolist(), np.float64).reshape(-1, 3).T
        if not np.isfinite(centre).any():
            continue
        steps = stats.index.to_numpy()
        color = colors[label] if colors else f"C{i % 10}"
        ax.plot(steps, centre, color=color, label=label, marker="o" if len(steps) < 3 else None)
        low = np.maximum(low, centre / 10) if log else low  # a band that stays on a log axis
        if len(steps) == 1:  # one evaluation: the spread as an error bar, the value written beside it
            spread = np.nan_to_num([centre - low, high - centre])
            ax.errorbar(steps, centre, yerr=spread, color=color, capsize=5, linestyle="none")
            ax.annotate(f"{centre[0]:.3g}", (steps[0], centre[0]), xytext=(6, 0), textcoords="offset points",
                        va="center", color=color, fontsize="small")
        else:
            ax.fill_between(steps, low, high, color=color, alpha=0.2)
        drawn.append(label)
    if log and drawn:
        ax.set_yscale("log")
    shown = np.unique(frame.step.to_numpy()) if len(frame) else []
    if 0 < len(shown) <= 3:  # a few steps: ticks at them, not "-0.04 ... 0.04 + 4e1"
        ax.set_xticks(shown, [f"{int(x):,}" for x in shown])
    ax.set(xlabel="step", ylabel=metric, title=f"{metric}: {AGGREGATES[how]}")
    ax.grid(alpha=0.3)
    return drawn
