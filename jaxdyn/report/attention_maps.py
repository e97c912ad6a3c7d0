"""The attention maps of the report's Attention view: which member, which steps and heads,
and the grids of ``[T, T]`` weights (query t down, key s across) on one 0..1 scale.

The probe's maps are rows of ``histograms.parquet``: metric ``attn_map``, layer
``attn_l/example_e``, ``bin`` = h T² + t T + s, ``value`` the weight (``probes/attention.py``).
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from jaxdyn.report.data import ReportData
from jaxdyn.report.views import Plot
from jaxdyn.results import headline

MAP = "attn_map"
EXAMPLE = re.compile(r"^attn_(\d+)/example_(\d+)$")
MAX_STEPS = 5  # rows of maps: evaluated steps from first to last
MAX_COLUMNS = 8  # maps side by side in one figure; past this each layer drawn gets its own figure
MAX_HEADS = 16  # heads drawn per layer in the maps
WEIGHTS = colormaps["viridis"].with_extremes(bad="0.8")  # a map with no value (a diverged member): grey
FIGURE_WIDTH = 13.0  # inches: at the report's 100 dpi, a 1400 px page shows it unscaled


@dataclass
class Maps:
    """The maps the view draws, and whose they are.

    Attributes:
      member: the member drawn; ``why``: how it was chosen, in words.
      steps: the evaluated steps drawn (rows); ``all_steps``: how many steps have maps.
      layers: the layer indices drawn; ``n_layers``: how many layers have maps.
      heads: layer -> its number of heads; ``length``: T.
      grids: ``(step, layer, head)`` -> the ``[T, T]`` weights (query t, key s).
    """

    member: int
    why: str
    steps: list
    all_steps: int
    layers: list
    n_layers: int
    heads: dict
    length: int
    grids: dict = field(default_factory=dict)


def map_rows(d: ReportData) -> pd.DataFrame:
    hist = d.histograms
    if hist.empty or "metric" not in hist.columns:
        return hist.iloc[0:0]
    rows = hist[hist.metric == MAP]
    found = rows.layer.fillna("").str.extract(EXAMPLE)
    keep = (found[1] == "0").to_numpy()  # example 0: the first probe example
    return rows[keep].assign(attn_layer=found[0][keep].astype(int).to_numpy())


def best_member(d: ReportData, candidates) -> tuple[int, str]:
    """The candidate with the best final headline metric, and how it was chosen, in words."""
    metric = headline(d.members)
    column = f"final_{metric}"
    members = d.members.set_index("member")
    values = members[column].reindex(candidates) if column in members else pd.Series(np.nan, index=candidates)
    label = d.setting_of()
    if values.notna().any():
        lower = "loss" in metric
        member = int(values.idxmin() if lower else values.idxmax())
        setting = "" if label[member] == "all members" else f"{label[member]}, "
        why = (f"member {member} ({setting}init_seed {members.init_seed.get(member, '?')}), the member "
               f"with the {'lowest' if lower else 'highest'} final {metric.replace('_', ' ')} "
               f"({values[member]:.4g})")
    else:
        member = int(candidates[0])
        why = f"member {member} (no member has a final {metric.replace('_', ' ')})"
    return member, why


def _spread(steps: list, n: int) -> list:
    """At most ``n`` of the sorted ``steps``: the first, the last, and those nearest to even spacing."""
    if len(steps) <= n:
        return list(steps)
    targets = np.linspace(steps[0], steps[-1], n)
    picked = {int(np.argmin(np.abs(np.asarray(steps) - t))) for t in targets}
    return [steps[i] for i in sorted(picked)]


def attention_maps(d: ReportData, rows: pd.DataFrame, per_head: pd.DataFrame) -> Maps:
    """The maps of example 0 (``rows``, from ``_map_rows``) for the best member, at up to ``MAX_STEPS``
    of its evaluated steps; ``per_head`` (``head_rows``) says how many heads each layer has."""
    member, why = best_member(d, sorted(int(m) for m in rows.member.unique()))
    mine = rows[rows.member == member]
    all_steps = sorted(int(s) for s in mine.step.unique())
    steps = _spread(all_steps, MAX_STEPS)
    layers = sorted(int(l) for l in mine.attn_layer.unique())
    heads = {layer: _heads(d, per_head, layer) for layer in layers}
    lengths = {layer: _length(mine[mine.attn_layer == layer], heads[layer]) for layer in layers}
    length = lengths[layers[0]]
    if sum(heads.values()) > MAX_COLUMNS and len(layers) > 2:
        shown = [layers[0], layers[-1]]
    else:
        shown = layers
    maps = Maps(member, why, steps, len(all_steps), shown, len(layers), {l: heads[l] for l in shown}, length)
    wanted = mine[mine.step.isin(steps) & mine.attn_layer.isin(shown)]
    for (step, layer), group in wanted.groupby(["step", "attn_layer"]):
        h, t = heads[layer], lengths[layer]
        weights = group.groupby("bin").value.mean().reindex(range(h * t * t)).to_numpy(np.float64)
        for head, grid in enumerate(weights.reshape(h, t, t)):
            maps.grids[(int(step), int(layer), head)] = grid
    return maps


def _heads(d: ReportData, per_head: pd.DataFrame, layer: int) -> int:
    """Heads of a layer: from its per-head metric rows, else the config's ``model.heads``."""
    mine = per_head[per_head.attn_layer == layer]
    if len(mine):
        return int(mine["head"].max()) + 1
    heads = getattr(d.config.model, "heads", None) if d.config is not None else None
    return int(heads) if heads else 1


def _length(rows: pd.DataFrame, heads: int) -> int:
    bins = int(rows.bin.max()) + 1
    t = math.isqrt(bins // heads)
    if heads * t * t != bins:
        raise ValueError(f"attention maps of {rows.layer.iloc[0]}: {bins} bins are not heads × T × T "
                         f"with {heads} heads")
    return t


# ---------------------------------------------------------------- maps


def _ticks(length: int, most: int) -> list:
    """Tick positions 0, k, 2k, ... with at most ``most`` labels per axis."""
    for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if -(-length // k) <= most:
            return list(range(0, length, k))
    return list(range(0, length, -(-length // most)))


def map_plots(maps: Maps, causal: bool) -> list:
    columns = [(layer, head) for layer in maps.layers for head in range(min(maps.heads[layer], MAX_HEADS))]
    groups = [columns] if len(columns) <= MAX_COLUMNS else \
        [[c for c in columns if c[0] == layer] for layer in maps.layers]
    plots = []
    for group in groups:
        name = "attention_maps" if len(groups) == 1 else f"attention_maps_layer{group[0][0]}"
        plots.append(Plot(name, map_figure(maps, group), _map_caption(maps, group, causal)))
    return plots


def map_figure(maps: Maps, columns: list) -> Figure:
    """Rows: the steps; columns: ``(layer, head)``; each map T × T, query down, key across, colour 0..1."""
    n_rows, n_cols = len(maps.steps), len(columns)
    cell = min(1.9, (FIGURE_WIDTH - 1.8) / n_cols)
    fig = Figure(figsize=(min(FIGURE_WIDTH, n_cols * cell + 1.8), n_rows * cell + 1.0), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    ticks = _ticks(maps.length, 6 if cell >= 1.3 else 3)
    one_layer = len({layer for layer, _ in columns}) == 1
    image = None
    for r, step in enumerate(maps.steps):
        for c, (layer, head) in enumerate(columns):
            ax = axes[r, c]
            grid = maps.grids.get((step, layer, head))
            if grid is None:
                grid = np.full((maps.length, maps.length), np.nan)
            image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap=WEIGHTS, interpolation="nearest",
                              aspect="equal")
            ax.set_gid(f"attn_{layer}/h{head}@{step}")
            ax.set_xticks(ticks, [str(t) for t in ticks] if r == n_rows - 1 else [], fontsize=9)
            ax.set_yticks(ticks, [str(t) for t in ticks] if c == 0 else [], fontsize=9)
            if r == 0:
                ax.set_title(f"head {head}" if one_layer else f"layer {layer}, head {head}", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"step {step}\nquery t", fontsize=10)
            if r == n_rows - 1:
                ax.set_xlabel("key s", fontsize=10)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=min(0.9, 3.2 / (n_rows * cell + 1.0)) if n_rows > 1
                       else 0.9, aspect=25)
    bar.set_label("attention weight", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    fig.suptitle(f"Attention maps of member {maps.member} on probe example 0"
                 + (f", layer {columns[0][0]}" if one_layer else ""), fontsize=11)
    return fig


def _map_caption(maps: Maps, columns: list, causal: bool) -> str:
    layers = sorted({c[0] for c in columns})
    which = (f"layer {layers[0]}" if len(layers) == 1 else "layers " + " and ".join(map(str, layers)))
    if maps.n_layers > len(maps.layers):
        which += f" (of the {maps.n_layers} layers, the first and last are drawn)"
    cut = [l for l in layers if maps.heads[l] > MAX_HEADS]
    steps = ("its only evaluated step" if maps.all_steps == 1 else
             f"the {len(maps.steps)} evaluated steps" if len(maps.steps) == maps.all_steps else
             f"{len(maps.steps)} of the {maps.all_steps} evaluated steps, spread from the first to the last")
    return (f"Attention maps of {maps.why}, on the first probe example, at {steps} (rows, top to bottom), one "
            f"column per head of {which}"
            + (f" (the first {MAX_HEADS} heads)" if cut else "") +
            f". In each map row t is the query position and column s the key position (T = {maps.length}); the "
            "colour is the weight w_ts that query t puts on key s, each row summing to 1, on one scale from 0 to 1 "
            "for every map. A bright diagonal: positions attending to themselves; a bright first column: an "
            f"attention sink on the first position; evenly faint rows: uniform attention (1/T = "
            f"{1 / maps.length:.2g} per key" + ("; 1/(t + 1) on row t under the causal mask). The model is causal: "
                                                 "the upper triangle, keys after the query, is 0." if causal else ")."))


# ---------------------------------------------------------------- curves
