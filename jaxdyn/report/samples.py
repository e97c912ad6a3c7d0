"""``samples.png``: what each member generates, at the last evaluation and a few before it.

One row per member, labelled with its settings and seed (and its final mode
coverage where the modes are known), one column per step shown. 2D samples are
scattered over the true modes; images are tiled into a grid; other vectors are
drawn as lines. More than ``PER_PAGE`` members continue in ``samples_2.png``, ...
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxdyn.report.curves import setting_labels
from jaxdyn.atomic import write_atomic
from jaxdyn.tables import extra_finals

PER_PAGE = 24
STEPS_SHOWN = 4


def shown_steps(steps) -> list[int]:
    """At most ``STEPS_SHOWN`` steps, evenly spread, always the last."""
    steps = np.unique(np.asarray(steps))
    picks = np.unique(np.linspace(0, len(steps) - 1, min(STEPS_SHOWN, len(steps))).round().astype(int))
    return [int(s) for s in steps[picks]]


def member_labels(members: pd.DataFrame) -> dict[int, str]:
    settings = setting_labels(members)
    out = {}
    for row in members.itertuples():
        label = f"member {row.member}\n{settings[row.member]}\nseed {row.init_seed}"
        finals = [(c[len("final_"):], getattr(row, c)) for c in extra_finals(members.columns)[:2]]
        if finals and all(pd.notna(v) for _, v in finals):  # what the task kind reports first: modes, HQ
            label += "\n" + ", ".join(f"{name.replace('_', ' ')} {value:.3g}" for name, value in finals)
        if getattr(row, "diverged_at", -1) >= 0:
            label += f"\ndiverged at {row.diverged_at}"
        out[int(row.member)] = label
    return out


def _tile(images: np.ndarray) -> np.ndarray:
    """``[n, h, w]`` images as one square-ish mosaic with a 1-pixel gap."""
    n, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = image
    return out


def covered(values: np.ndarray, centers: np.ndarray, std: float) -> np.ndarray:
    """``[modes]`` bool: a mode is covered when some sample lies within 3 standard deviations of it
    (the criterion of ``gan.metrics``' mode count)."""
    distance = np.linalg.norm(values[:, None, :] - centers[None, :, :], axis=-1)
    return (distance < 3 * std).any(0)


def draw_panel(ax, values: np.ndarray, data_shape: tuple, centers, limits, std=None) -> None:
    """One member's samples ``[n, features]`` on ``ax``: points over the modes (a covered mode a green
    ring, a missed one a red cross, when the modes' ``std`` is known), an image mosaic, or lines."""
    if data_shape == (2,):
        ax.scatter(values[:, 0], values[:, 1], s=5, alpha=0.4, color="C0", linewidths=0)
        if centers is not None and std is not None:
            hit = covered(values, centers, std)
            ax.scatter(*centers[hit].T, marker="o", facecolors="none", edgecolors="green", s=90, zorder=3,
                       linewidths=1.5)
            ax.scatter(*centers[~hit].T, marker="x", color="red", s=90, zorder=3, linewidths=2)
        elif centers is not None:
            ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="red", s=60, zorder=3, linewidths=1.5)
        ax.set(xlim=limits[0], ylim=limits[1], aspect="equal")
    elif len(data_shape) >= 2:
        h, w = data_shape[:2]
        ax.imshow(_tile(values.reshape(-1, h, w)), cmap="gray_r", interpolation="nearest")
    else:
        ax.plot(values.T, linewidth=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def panel_limits(points) -> list[tuple[float, float]]:
    """Axis limits around 2D ``points`` (the modes) with a margin, the same for every panel."""
    ref = np.asarray(points)
    pad = 0.25 * (ref.max(0) - ref.min(0)).max() + 0.1
    return [(ref[:, i].min() - pad, ref[:, i].max() + pad) for i in range(2)]


def plot_samples(members: pd.DataFrame, samples: pd.DataFrame, data_shape, path: Path, centers=None,
                 std=None) -> list[Path]:
    """Write ``path`` (and ``_2``, ``_3``, ... pages past ``PER_PAGE`` members), each atomically.

    Args:
      members: the member table (settings, seeds, final metrics).
      samples: ``cohort, member, step, sample, x0 …``: rows of ``samples.parquet``.
      data_shape: the shape of one example.
      centers: ``[modes, 2]`` true modes to mark on 2D data, or None.
      std: the modes' standard deviation: marks each mode covered or missed (3 std), or None.

    Returns:
      The files written.
    """
    data_shape = tuple(data_shape)
    features = [c for c in samples.columns if c.startswith("x")]
    steps = shown_steps(samples.step)
    labels = member_labels(members)
    ids = [m for m in members.member if m in set(samples.member)]
    by_key = {key: group[features].to_numpy() for key, group in samples[samples.step.isin(steps)]
              .groupby(["member", "step"])}
    limits = panel_limits(centers if centers is not None else samples[features].to_numpy()) \
        if data_shape == (2,) else None
    written = []
    for page, start in enumerate(range(0, len(ids), PER_PAGE)):
        chunk = ids[start: start + PER_PAGE]
        side = 3.2 if data_shape == (2,) else 2.8  # inches a panel, at 100 dpi: a missing mode is plain to see
        fig = Figure(figsize=(side * len(steps) + 2.4, side * len(chunk) + 0.5), layout="constrained")
        axes = np.asarray(fig.subplots(len(chunk), len(steps), squeeze=False))
        for r, member in enumerate(chunk):
            for c, step in enumerate(steps):
                ax = axes[r, c]
                values = by_key.get((member, step))
                if values is None:  # diverged or stopped before this step
                    ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    draw_panel(ax, values, data_shape, centers, limits, std)
                if r == 0:
                    ax.set_title(f"step {step:,}", fontsize="medium")
                if c == 0:
                    ax.set_ylabel(labels[member], fontsize="small", rotation=0, ha="right", va="center")
        out = path if page == 0 else path.with_name(f"{path.stem}_{page + 1}{path.suffix}")
        write_atomic(out, lambda p, fig=fig: fig.savefig(p, dpi=100, format="png"))
        written.append(out)
    return written
