"""``Results.plot``: one metric against step, a line per setting with its band over seeds."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxdyn.aggregate import AGGREGATES, aggregate as combine

LOG_METRICS = ("loss", "norm", "sharpness", "trace", "noise_scale")  # drawn on a log axis when positive


def plot_metric(frame: pd.DataFrame, metric: str, by: list[str], how: str = "mean_std") -> Figure:
    """``frame`` (``Results.frame``) as a Figure: for each setting of ``by`` and each step,
    the centre and band of ``how`` over seeds (``jaxdyn.aggregate``); NaN values
    (diverged members) are left out of each step's aggregate."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate = {how!r}: use one of {', '.join(AGGREGATES)}")
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    draw_metric(ax, frame, metric, by, how)
    ax.legend(fontsize="small")
    return fig


def setting_label(by, key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in zip(by, key)) or "all members"


def draw_metric(ax, frame: pd.DataFrame, metric: str, by: list[str], how: str, colors=None) -> list[str]:
    """Draw ``plot_metric``'s lines and bands on ``ax``; ``colors`` maps a setting's label to its
    colour (default: C0, C1, ... in order). Returns the labels drawn."""
    values = frame.value.to_numpy()
    finite = values[np.isfinite(values)]
    log = any(word in metric for word in LOG_METRICS) and finite.size and np.all(finite > 0)
    groups = frame.groupby(by, dropna=False, sort=True) if by else [((), frame)]
    drawn = []
    for i, (key, group) in enumerate(groups):
        label = setting_label(by, key)
        steps = np.sort(group.step.unique())
        stats = np.array([combine(group[group.step == s].value.to_numpy(), how) for s in steps])
        if not np.isfinite(stats[:, 0]).any():
            continue
        color = colors[label] if colors else f"C{i % 10}"
        ax.plot(steps, stats[:, 0], color=color, label=label, marker="o" if len(steps) < 3 else None)
        low = np.maximum(stats[:, 1], stats[:, 0] / 10) if log else stats[:, 1]  # a band that stays on a log axis
        ax.fill_between(steps, low, stats[:, 2], color=color, alpha=0.2)
        drawn.append(label)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=metric, title=f"{metric}: {AGGREGATES[how]}")
    ax.grid(alpha=0.3)
    return drawn
