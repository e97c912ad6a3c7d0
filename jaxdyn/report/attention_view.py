"""The report's view of the ``attention`` probe: the attention maps of the best member
over training, and each head's entropy, self-weight and first-key weight over steps.

The probe writes, per layer ``l`` and head ``h`` (``jaxdyn/probes/attention.py``):
``attn_entropy``, ``attn_self`` and ``attn_first`` under layer ``attn_l/hh`` of
``metrics.parquet`` (``attn_l`` alone is the mean over heads, not drawn here), and the
maps of the first ``maps`` probe examples under metric ``attn_map``, layer
``attn_l/example_e`` of ``histograms.parquet`` with ``bin`` = h T² + t T + s (query t,
key s) and ``value`` the weight. The maps drawn are example 0's (``attention_maps``).
"""

import math
import re

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from jaxdyn.aggregate import AGGREGATES, aggregate as combine
from jaxdyn.data import dataset_info
from jaxdyn.errors import ConfigError
from jaxdyn.report.attention_maps import FIGURE_WIDTH, attention_maps, map_plots, map_rows
from jaxdyn.report.data import ReportData
from jaxdyn.report.views import Plot, View, panel_grid, palette

CURVES = ("attn_entropy", "attn_self", "attn_first")
HEAD = re.compile(r"^attn_(\d+)/h(\d+)$")
MAX_SETTINGS = 4  # settings whose curves are drawn
MAX_PANELS = 12  # (setting, layer) panels of curves


def attention(d: ReportData) -> View | None:
    curves = head_rows(d)
    maps_rows = map_rows(d)
    if curves.empty and maps_rows.empty:
        return None
    maps = attention_maps(d, maps_rows, curves) if len(maps_rows) else None
    length = maps.length if maps is not None else _sequence_length(d)
    causal = bool(getattr(d.config.model, "causal", False)) if d.config is not None else False
    blocks = []
    if maps is not None:
        blocks.extend(map_plots(maps, causal))
    else:
        kept = _option(d, "maps")
        blocks.append("<p>No attention maps are drawn: the run kept none (<code>probes.attention.maps = "
                      f"{kept if kept is not None else 0}</code>); the curves below come from the per-head "
                      "metrics.</p>")
    if len(curves):
        blocks.extend(_curve_plots(d, curves, length, causal))
    intro = ("What each attention head looks at on the probe batch (the same training examples at every "
             "evaluation), from the attention probe: the attention maps of one member over training, then per "
             "head the entropy of its attention rows, the weight a query puts on itself and the weight on the "
             "first key (an attention sink), against step.")
    return View("attention", "Attention", intro, blocks)


# ---------------------------------------------------------------- data


def head_rows(d: ReportData) -> pd.DataFrame:
    """The per-head rows of the attention metrics, with ``attn_layer`` and ``head`` columns."""
    metrics = d.metrics
    rows = metrics[metrics.metric.isin(CURVES)]
    found = rows.layer.fillna("").str.extract(HEAD)
    rows = rows[found[0].notna()]
    found = found[found[0].notna()]
    return rows.assign(attn_layer=found[0].astype(int).to_numpy(), head=found[1].astype(int).to_numpy(),
                       setting=rows.member.map(d.setting_of()).to_numpy())


def _option(d: ReportData, name: str):
    try:
        return getattr(dict(d.config.probes.tables)["attention"], name)
    except (AttributeError, KeyError, TypeError):
        return None


def _sequence_length(d: ReportData) -> int | None:
    """T as the model sees it (the data's positions, plus a readout token), when no map says it."""
    try:
        shape = dataset_info(d.config.data).input_shape
    except (ConfigError, OSError, AttributeError):
        return None
    extra = 1 if getattr(d.config.model, "readout", "") == "cls" else 0
    return int(shape[0]) + extra if len(shape) else None


def _curve_panels(d: ReportData, rows: pd.DataFrame) -> tuple[list, str]:
    """``(setting, layer)`` per panel, and a note when not all are drawn."""
    settings = [s for s in d.settings() if (rows.setting == s).any()]
    layers = sorted(int(l) for l in rows.attn_layer.unique())
    shown_settings = settings[:MAX_SETTINGS]
    shown_layers = layers if len(shown_settings) * len(layers) <= MAX_PANELS else [layers[0], layers[-1]]
    notes = []
    if len(shown_settings) < len(settings):
        notes.append(f"the first {len(shown_settings)} of {len(settings)} settings")
    if len(shown_layers) < len(layers):
        notes.append(f"the first and last of {len(layers)} layers")
    note = f" Drawn: {' and '.join(notes)}." if notes else ""
    return [(s, l) for s in shown_settings for l in shown_layers], note


def _title(setting: str, layer: int, many: bool, metric: str = "") -> str:
    head = f"{metric}, layer {layer}" if metric else f"layer {layer}"
    return f"{head}\n{setting}" if many else head


def _draw_heads(ax, rows: pd.DataFrame, how: str, colours: list) -> None:
    """One line per head: the seeds' centre per step, and a band from their low to high."""
    for head, group in rows.groupby("head", sort=True):
        stats = group.groupby("step").value.apply(lambda v: combine(v.to_numpy(), how))
        centre, low, high = np.array(stats.tolist(), np.float64).reshape(-1, 3).T
        steps = stats.index.to_numpy()
        colour = colours[int(head) % len(colours)]
        ax.plot(steps, centre, color=colour, lw=1.6, marker="o" if len(steps) < 3 else None, markersize=4)
        ax.fill_between(steps, low, high, color=colour, alpha=0.18, lw=0)


def _by_setting(cells: list, cols: int, key=lambda cell: cell[0]) -> list:
    """``cells`` in rows of ``cols``, each new ``key`` (the setting, which each cell starts with)
    starting a new row (None: an empty cell)."""
    out = []
    for i, cell in enumerate(cells):
        if i and key(cell) != key(cells[i - 1]) and len(out) % cols:
            out.extend([None] * (cols - len(out) % cols))
        out.append(cell)
    return out


def causal_share(length: int) -> float:
    """The mean over query positions t of 1/(t + 1): the weight uniform causal attention puts on each key."""
    return float(np.mean(1 / np.arange(1, length + 1)))


def causal_uniform(length: int) -> float:
    """The mean over query positions t of log(t + 1): the entropy of uniform causal attention."""
    return float(np.mean(np.log(np.arange(1, length + 1))))


def _curve_plots(d: ReportData, rows: pd.DataFrame, length: int | None, causal: bool) -> list:
    panels, note = _curve_panels(d, rows)
    n_heads = int(rows["head"].max()) + 1
    colours = palette(n_heads)
    many = len({s for s, _ in panels}) > 1
    how = AGGREGATES[d.aggregate]
    how = how if "seeds" in how else f"{how} over seeds"
    head_keys = [Line2D([], [], color=colours[h], lw=1.6) for h in range(n_heads)]
    head_names = [f"head {h}" for h in range(n_heads)]

    entropy = rows[rows.metric == "attn_entropy"]
    plots = []
    if len(entropy):
        n_layers = len({l for _, l in panels})
        cols = min(3, n_layers if n_layers > 1 else len(panels))
        cells = _by_setting(panels, cols) if n_layers > 1 else panels
        fig, axes = panel_grid(len(cells), cols, min(4.0, (FIGURE_WIDTH - 2.2) / cols), 3.0, legend_width=2.2)
        top = math.log(length) if length else None
        for ax, cell in zip(axes, cells):
            if cell is None:
                ax.set_visible(False)
                continue
            setting, layer = cell
            mine = entropy[(entropy.setting == setting) & (entropy.attn_layer == layer)]
            _draw_heads(ax, mine, d.aggregate, colours)
            ax.axhline(0, color="k", ls="--", lw=1)
            if top is not None:
                ax.axhline(top, color="0.35", ls="--", lw=1)
                if causal:
                    ax.axhline(causal_uniform(length), color="0.35", ls=":", lw=1.2)
                ax.set_ylim(-0.06 * top, 1.08 * max(top, float(np.nanmax(mine.value, initial=0))))
            ax.set_title(_title(setting, layer, many), fontsize=10)
            ax.set_xlabel("step", fontsize=10)
            ax.set_ylabel("attn_entropy (nats)", fontsize=10)
            ax.tick_params(labelsize=9)
            ax.grid(alpha=0.3)
        keys, names = list(head_keys), list(head_names)
        if top is not None:
            keys.append(Line2D([], [], color="0.35", ls="--", lw=1))
            names.append(f"log T = {top:.2f}\n(uniform)")
            if causal:
                keys.append(Line2D([], [], color="0.35", ls=":", lw=1.2))
                names.append(f"causal uniform\n= {causal_uniform(length):.2f}")
        keys.append(Line2D([], [], color="k", ls="--", lw=1))
        names.append("0 (one key)")
        fig.legend(keys, names, loc="outside right upper", fontsize=9, ncols=2 if n_heads > 8 else 1)
        reference = "The dashed black line at 0 is all of a query's weight on one key."
        if top is not None:
            reference = (f"The dashed grey line is log T = {top:.2f} (T = {length}), the entropy of uniform "
                         "attention over all keys; under a causal mask query t sees only its t + 1 keys, so a "
                         "causal model's uniform is lower, the mean over t of log(t + 1)"
                         + (f" = {causal_uniform(length):.2f} (dotted; this model is causal)" if causal else "")
                         + f". {reference}")
        plots.append(Plot("attention_entropy", fig,
                          "The entropy of each head's attention rows, −Σ_s w_ts log w_ts in nats, averaged over "
                          "query positions and probe examples: one line per head, one panel per layer"
                          + (" and setting" if many else "") + f". Line and band: the {how}. {reference} A head "
                          "falling from the grey line towards 0 has learnt to look at a few positions." + note))

    point = rows[rows.metric.isin(("attn_self", "attn_first"))]
    if len(point):
        metrics = [m for m in ("attn_self", "attn_first") if (point.metric == m).any()]
        layers = list(dict.fromkeys(l for _, l in panels))
        if len(layers) <= 2:  # a row per setting (one layer: settings side by side), each layer's panels in pairs
            cells = [(s, l, m) for s, l in panels for m in metrics]
            cols = len(metrics) * len(layers) if len(layers) > 1 else min(4, len(cells))
            cells = _by_setting(cells, cols) if len(layers) > 1 else cells
        else:  # a row per setting and metric, the layers in columns as in the entropy figure
            cols = min(3, len(layers))
            cells = _by_setting([(s, l, m) for s in dict.fromkeys(s for s, _ in panels) for m in metrics
                                 for l in layers], cols, key=lambda c: (c[0], c[2]))
        fig, axes = panel_grid(len(cells), cols, min(3.0, (FIGURE_WIDTH - 1.8) / cols), 2.5, legend_width=1.8)
        uniform = None if not length else causal_share(length) if causal else 1 / length
        for ax, cell in zip(axes, cells):
            if cell is None:
                ax.set_visible(False)
                continue
            setting, layer, metric = cell
            mine = point[(point.metric == metric) & (point.setting == setting) & (point.attn_layer == layer)]
            _draw_heads(ax, mine, d.aggregate, colours)
            if uniform is not None:
                ax.axhline(uniform, color="0.35", ls="--", lw=1)
            ax.set_ylim(0, 1.05 * max(float(np.nanmax(mine.value, initial=0)), 2 * (uniform or 0.05)))
            ax.set_title(_title(setting, layer, many, metric), fontsize=10)
            ax.set_xlabel("step", fontsize=10)
            ax.tick_params(labelsize=9)
            ax.grid(alpha=0.3)
        keys, names = list(head_keys), list(head_names)
        if uniform is not None:
            keys.append(Line2D([], [], color="0.35", ls="--", lw=1))
            names.append(f"causal uniform\n= {uniform:.2g}" if causal else f"1/T = {uniform:.2g}\n(uniform)")
        fig.legend(keys, names, loc="outside right upper", fontsize=9, ncols=2 if n_heads > 8 else 1)
        plots.append(Plot("attention_self_first", fig,
                          "attn_self: the mean weight a query puts on its own position (the map's diagonal); "
                          "attn_first: the mean weight on the first key (the map's first column), averaged over "
                          f"query positions and probe examples; lines and bands as above ({how}). "
                          + ("The dashed line is the mean over t of 1/(t + 1), what uniform attention under "
                             "the causal mask puts on each of a query's keys. " if causal else
                             "The dashed line is 1/T, what uniform attention puts on each key. ") +
                          "attn_first near 1 is "
                          "an attention sink: the head parks its weight on the first position; attn_self near 1, "
                          f"a head that copies each position's own value.{note}"))
    return plots


__all__ = ["attention", "causal_uniform", "head_rows"]
