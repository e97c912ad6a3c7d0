"""``Results.plot``: one metric against step, a line per setting with its band over seeds (the report draws with it too)."""

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
        ax.fill_between(steps, low, high, color=color, alpha=0.2)
        drawn.append(label)
    if log and drawn:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=metric, title=f"{metric}: {AGGREGATES[how]}")
    ax.grid(alpha=0.3)
    return drawn
