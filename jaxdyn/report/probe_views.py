"""The report's views of the probes: per-layer heatmaps, activation histograms over
time, curvature and gradient noise, cross-member similarity, and GAN samples.

A GAN's two players have their own rows (metric names ``g_...`` and ``d_...``),
drawn apart.
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from jaxdyn.aggregate import AGGREGATES, aggregate as combine
from jaxdyn.data import dataset_info
from jaxdyn.explore import draw_metric
from jaxdyn.report.data import ReportData
from jaxdyn.report.names import describe
from jaxdyn.report.samples import plot_samples
from jaxdyn.report.views import Plot, View, colors, legend, metric_frame, metric_panels, panel_grid

GREY_BAD = colormaps["viridis"].with_extremes(bad="0.8")  # cells with no value: grey, not white
MAX_PANELS = 6  # settings drawn side by side in one heatmap figure
NOT_LAYERS = ("loss_slice_1d", "loss_slice_2d")  # their "layer" is a coordinate, not a layer
NOT_HISTOGRAMS = ("attn_map",)  # rows of histograms.parquet that are not binned values (the Attention view's)
PREFIXES = ("", "g_", "d_")


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def _norm(values: np.ndarray):
    """A log colour scale for non-negative values spanning 30x or more among the positive ones (an
    exact 0, such as the distance from initialisation at step 0, is drawn as the lowest colour:
    ``_for_norm``), else linear."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if positive.size and np.all(finite >= 0) and positive.max() / positive.min() >= 30:
        return LogNorm(positive.min(), positive.max())
    return Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))


def _for_norm(grid: np.ndarray, norm) -> np.ndarray:
    """``grid`` as ``norm`` can draw it: on a log scale an exact 0 becomes the scale's floor, not a
    grey "no value" cell."""
    return np.where(grid == 0, norm.vmin, grid) if isinstance(norm, LogNorm) else grid


def _panels(n: int, width: float, height: float):
    """Up to ``MAX_PANELS`` of ``n`` settings' panels, three to a row, room for a colour bar."""
    return panel_grid(min(n, MAX_PANELS), 3, width, height + 0.2, legend_width=1.4)


def _more(n: int) -> str:
    return f" The first {MAX_PANELS} of {n} settings are drawn." if n > MAX_PANELS else ""


def layer_heatmaps(d: ReportData) -> View | None:
    per_layer = d.metrics[(d.metrics.layer.fillna("") != "") & ~d.metrics.metric.isin(NOT_LAYERS)]
    if per_layer.empty:
        return None
    label = d.setting_of()
    settings = d.settings()
    blocks = []
    for metric in _ordered(per_layer.metric):
        rows = per_layer[per_layer.metric == metric]
        layers = d.layer_order(rows.layer)
        steps = np.sort(rows.step.unique())
        grids = {}
        for setting in settings[:MAX_PANELS]:
            mine = rows[rows.member.map(label) == setting]
            grid = np.full((len(layers), len(steps)), np.nan)
            for (layer, step), values in mine.groupby(["layer", "step"]).value:
                grid[layers.index(layer), np.searchsorted(steps, step)] = combine(values.to_numpy(), d.aggregate)[0]
            grids[setting] = grid
        norm = _norm(np.concatenate([g.reshape(-1) for g in grids.values()]))
        fig, axes = _panels(len(settings), 4.2, 0.32 * len(layers) + 1.3)
        for ax, (setting, grid) in zip(axes, grids.items()):
            image = ax.imshow(np.ma.masked_invalid(_for_norm(grid, norm)), aspect="auto", interpolation="nearest", norm=norm,
                              cmap=GREY_BAD, extent=(*_centred_edges(steps)[[0, -1]], len(layers) - 0.5, -0.5))
            ax.set_yticks(range(len(layers)), layers, fontsize="small")
            step_ticks(ax, steps)
            ax.set(xlabel="step", title=setting if len(settings) > 1 else metric)
            ax.title.set_fontsize("small")
        fig.colorbar(image, ax=list(axes), label=metric, shrink=0.9)
        fig.suptitle(f"{describe(metric)}: layer × step".replace("\n", " · "), fontsize="medium")
        blocks.append(Plot(f"layers_{metric}", fig))
    return View("layers", "Per-layer probes over time",
                "Each per-layer metric as a heatmap of layer (rows: the input's side at the top, the output at the bottom, in the model's order) against step, one panel "
                f"per setting; the colour is the centre of the {AGGREGATES[d.aggregate]}. Grey cells "
                f"have no finite value.{_more(len(settings))}", blocks)


def step_ticks(ax, steps) -> None:
    """Ticks at the logged steps themselves when there are few (one step would otherwise get an
    axis of "-0.4 ... 0.4 + 1e3"), and never an offset."""
    if len(steps) <= 6:
        ax.set_xticks(list(steps), [f"{int(s):,}" for s in steps])
    else:
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")


def _centred_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges that put each step in the middle of its cell."""
    steps = np.asarray(steps, np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - middle[0]], middle, [2 * steps[-1] - middle[-1]]])


def activation_histograms(d: ReportData) -> View | None:
    hist = d.histograms
    if not hist.empty:
        hist = hist[~hist.metric.isin(NOT_HISTOGRAMS)]
    if hist.empty:
        return None
    label = d.setting_of()
    settings = d.settings()[:4]
    blocks = []
    for metric in _ordered(hist.metric):
        rows = hist[hist.metric == metric]
        layers = d.layer_order(rows.layer)
        steps = np.sort(rows.step.unique())
        edges = np.append(np.sort(rows.left.unique()), rows.right.max())
        fig = Figure(figsize=(3.6 * len(settings) + 1.2, 2.3 * len(layers) + 0.6), layout="constrained")
        axes = np.asarray(fig.subplots(len(layers), len(settings), squeeze=False))
        for c, setting in enumerate(settings):
            mine = rows[rows.member.map(label) == setting]
            for r, layer in enumerate(layers):
                ax = axes[r, c]
                counts = mine[mine.layer == layer].groupby(["bin", "step"]).value.mean().unstack("step")
                counts = counts.reindex(index=range(len(edges) - 1), columns=steps).to_numpy()
                share = counts / np.maximum(np.nansum(counts, axis=0, keepdims=True), 1e-12)
                ax.pcolormesh(_centred_edges(steps), edges, np.ma.masked_invalid(np.where(share > 0, share, np.nan)), cmap="magma",
                              norm=LogNorm(1e-4, 1), shading="flat")
                ax.set(ylabel=f"{layer}\nactivation" if c == 0 else None, xlabel="step" if r == len(layers) - 1
                       else None)
                step_ticks(ax, steps)
                if r == 0:
                    ax.set_title(setting, fontsize="small")
        fig.suptitle(f"{describe(metric)}: share of units per activation bin, by step (log colour)".replace("\n", " · "),
                     fontsize="medium")
        blocks.append(Plot(f"hist_{metric}", fig))
    return View("activations", "Activation histograms over time",
                "Each layer's activations on the probe batch, binned at every probe step: the share of units "
                "in each bin (pooled over the setting's seeds). Mass piling up at 0 means dead ReLUs; at the "
                "ends of the range, saturation; values past the range fall in the outermost bins."
                + ("" if len(d.settings()) <= 4 else f" The first 4 of {len(d.settings())} settings are drawn."),
                blocks)


CURVATURE = ("sharpness", "preconditioned_sharpness", "hessian_trace", "grad_noise_scale")


def _threshold(d: ReportData, prefix: str, metric: str, members) -> float | None:
    """The edge-of-stability line of a setting: 2/η for the sharpness (gradient descent);
    (2 + 2β₁)/((1 − β₁)η) for Adam's preconditioned sharpness (Cohen et al. 2022)."""
    rate = f"{prefix}learning_rate"
    if rate not in d.members.columns:
        return None
    eta = float(np.median(members[rate]))
    if metric == "sharpness":
        return 2 / eta
    beta = f"{prefix}b1"
    if metric == "preconditioned_sharpness" and beta in d.members.columns:
        b1 = float(np.median(members[beta]))
        return (2 + 2 * b1) / ((1 - b1) * eta)
    return None


def curvature(d: ReportData) -> View | None:
    panels = [(p, m) for p in PREFIXES for m in CURVATURE if ((d.metrics.metric == p + m) &
                                                               (d.metrics.layer.fillna("") == "")).any()]
    if not panels:
        return None
    palette = colors(d)
    label = d.setting_of()
    fig, axes = panel_grid(len(panels), 2, 5.4, 3.8)
    for ax, (prefix, metric) in zip(axes, panels):
        frame = metric_frame(d, prefix + metric)
        draw_metric(ax, frame, prefix + metric, d.by, d.aggregate, palette)
        for setting in _ordered(frame.member.map(label)):
            line = _threshold(d, prefix, metric, d.members[d.members.member.map(label) == setting])
            if line is not None:
                ax.axhline(line, color=palette[setting], linestyle="--", linewidth=1)
        if metric in ("sharpness", "preconditioned_sharpness"):
            ax.set_title(f"{describe(prefix + metric)}; dashed: {'2/η' if metric == 'sharpness' else '(2+2β₁)/((1−β₁)η)'}")
    legend(fig, palette, AGGREGATES[d.aggregate])
    return View("curvature", "Curvature and gradient noise",
                "The top Hessian eigenvalue (sharpness) against the edge-of-stability line of each setting's "
                "learning rate (dashed; gradient descent cannot stay stable above 2/η, Cohen et al. 2021), "
                "the preconditioned sharpness under Adam against its own line, the Hessian trace (Hutchinson) "
                "and the gradient noise scale B = tr(Σ)/|G|² (McCandlish et al. 2018). With a schedule, "
                "the line is drawn at the peak rate.", [Plot("curvature", fig)])


def landscape(d: ReportData) -> View | None:
    """The probe ``loss_slices``: the loss along one (and two) filter-normalised random directions."""
    blocks = []
    palette = colors(d)
    label = d.setting_of()
    for prefix in PREFIXES:
        line = d.metrics[d.metrics.metric == prefix + "loss_slice_1d"]
        if len(line):
            steps = np.sort(line.step.unique())
            shown = [int(steps[0]), int(steps[-1])] if len(steps) > 1 else [int(steps[-1])]
            fig = Figure(figsize=(5.2 * len(shown) + 2.6, 3.8), layout="constrained")
            axes = np.asarray(fig.subplots(1, len(shown), squeeze=False)).reshape(-1)
            for ax, step in zip(axes, shown):
                rows = line[line.step == step].assign(x=lambda f: f.layer.astype(float),
                                                      setting=lambda f: f.member.map(label))
                finite = rows.value[np.isfinite(rows.value)]
                log = len(finite) > 0 and bool((finite > 0).all())
                for setting, group in rows.groupby("setting", sort=False):
                    xs = np.sort(group.x.unique())
                    stats = np.array([combine(group[group.x == x].value.to_numpy(), d.aggregate) for x in xs])
                    low = np.maximum(stats[:, 1], stats[:, 0] / 10) if log else stats[:, 1]
                    ax.plot(xs, stats[:, 0], color=palette[setting], marker=".")
                    ax.fill_between(xs, low, stats[:, 2], color=palette[setting], alpha=0.2)
                ax.set(xlabel="distance along the direction (0: the member)", ylabel="probe loss",
                       title=f"{prefix}loss_slice_1d, step {step}", yscale="log" if log else "linear")
                ax.grid(alpha=0.3)
            legend(fig, palette, AGGREGATES[d.aggregate])
            blocks.append(Plot(f"{prefix}loss_slice_1d", fig))
        plane = d.metrics[d.metrics.metric == prefix + "loss_slice_2d"]
        if len(plane):
            last = plane[plane.step == plane.step.max()]
            coords = last.layer.str.split(",", expand=True).astype(float)
            last = last.assign(a=coords[0].to_numpy(), b=coords[1].to_numpy(), setting=last.member.map(label))
            settings = _ordered(last.setting)
            fig, axes = _panels(len(settings), 3.8, 3.4)
            for ax, setting in zip(axes, settings):
                mean = last[last.setting == setting].groupby(["b", "a"]).value.mean().unstack("a")
                contour = ax.contourf(mean.columns, mean.index, np.log10(np.maximum(mean.to_numpy(), 1e-12)),
                                      levels=20, cmap="viridis")
                ax.plot([0], [0], "r+", markersize=10)
                fig.colorbar(contour, ax=ax, label="log10 loss")
                ax.set(title=setting if len(settings) > 1 else "", xlabel="direction 1", ylabel="direction 2")
                ax.title.set_fontsize("small")
            fig.suptitle(f"{prefix}loss_slice_2d at step {int(last.step.max())} (mean over seeds; +: the member)",
                         fontsize="medium")
            blocks.append(Plot(f"{prefix}loss_slice_2d", fig))
    if not blocks:
        return None
    return View("landscape", "Loss landscape slices",
                "The probe loss around each member along filter-normalised random directions (Li et al. 2018): "
                "one direction at the first and last probe steps, and the plane of two directions at the last. "
                f"A sharp, narrow basin has a steep curve.{_more(len(d.settings()))}", blocks)


def other_metrics(d: ReportData) -> View | None:
    """Every whole-model metric that no other view draws: NTK, GSNR, more Hessian eigenvalues, ..."""
    drawn = {*d.curves(), *(p + m for p in PREFIXES for m in CURVATURE)}
    whole = d.metrics[d.metrics.layer.fillna("") == ""]
    names = [m for m in _ordered(whole.metric) if m not in drawn and not m.endswith("_stderr")
             and not m.startswith(tuple(p + "loss_slice" for p in PREFIXES))]
    if not names:
        return None
    fig = metric_panels(d, names, 4.4, 3.2)
    return View("other", "Whole-model metrics over time",
                "Every whole-model metric the views above do not draw, per setting over seeds: the train "
                "accuracy, the whole model's weight, gradient and update norms and distance from "
                "initialisation (the heatmaps show them per layer), further Hessian eigenvalues, the gradient "
                "signal-to-noise ratio, the NTK's trace, alignment and distance from initialisation, a GAN's "
                "reverse KL.", [Plot("other_metrics", fig)])


def similarity(d: ReportData) -> View | None:
    pairs = d.pairs
    if pairs.empty:
        return None
    blocks = []
    label = d.setting_of()
    for prefix in PREFIXES:
        cka = pairs[pairs.metric == prefix + "cka"]
        if len(cka):
            last = cka[cka.step == cka.step.max()]
            layers = _ordered(last.layer)[:MAX_PANELS]
            ids = sorted(set(last.member_a) | set(last.member_b))
            fig, axes = _panels(len(layers), 3.8, 3.4)
            for ax, layer in zip(axes, layers):
                grid = np.full((len(ids), len(ids)), np.nan)
                np.fill_diagonal(grid, 1.0)
                for row in last[last.layer == layer].itertuples():
                    a, b = ids.index(row.member_a), ids.index(row.member_b)
                    grid[a, b] = grid[b, a] = row.value
                image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap=GREY_BAD)
                ticks = range(len(ids)) if len(ids) <= 24 else range(0, len(ids), max(len(ids) // 12, 1))
                ax.set_xticks(list(ticks), [ids[i] for i in ticks], fontsize="x-small", rotation=90)
                ax.set_yticks(list(ticks), [ids[i] for i in ticks], fontsize="x-small")
                ax.set(title=f"{prefix}cka, {layer}", xlabel="member")
            fig.colorbar(image, ax=list(axes), label="linear CKA", shrink=0.9)
            fig.suptitle(f"CKA between members at step {int(last.step.max())} (grey: pair not measured)",
                         fontsize="medium")
            blocks.append(Plot(f"{prefix}cka", fig))
        path = pairs[pairs.metric == prefix + "lmc_path_loss"]
        barrier = pairs[pairs.metric == prefix + "lmc_barrier"]
        if len(path):
            fig = Figure(figsize=(12, 3.8), layout="constrained")
            curve_ax, barrier_ax = fig.subplots(1, 2)
            last = path[path.step == path.step.max()]
            palette = colors(d)
            for (a, b), rows in last.groupby(["member_a", "member_b"]):
                alphas = rows.layer.astype(float).to_numpy()
                order = np.argsort(alphas)
                curve_ax.plot(alphas[order], rows.value.to_numpy()[order], color=palette[label[a]], alpha=0.7)
            finite = last.value[np.isfinite(last.value)]
            curve_ax.set(xlabel="α (0: member a, 1: member b)", ylabel="probe loss",
                         title=f"loss along the straight path, step {int(last.step.max())}",
                         yscale="log" if len(finite) and (finite > 0).all() else "linear")
            curve_ax.grid(alpha=0.3)
            frame = barrier.rename(columns={"member_a": "member"})[["member", "step", "value"]].merge(
                d.members[["member", *d.by]], on="member")
            draw_metric(barrier_ax, frame, prefix + "lmc_barrier", d.by, d.aggregate, palette)
            barrier_ax.set_title("barrier (loss above the straight line) over pairs, by step")
            legend(fig, palette, "setting of member a")
            blocks.append(Plot(f"{prefix}lmc", fig))
    if not blocks:
        return None
    return View("similarity", "Similarity between members",
                "Linear CKA of each layer's representations between pairs of members (1: the same up to "
                "rotation and scale; Kornblith et al. 2019), and linear mode connectivity: the loss along the "
                "straight line between two members' parameters, and its barrier over training (Frankle et "
                "al. 2020; no permutation alignment).", blocks)


def samples(d: ReportData, out_dir) -> View | None:
    if d.samples.empty:
        return None
    info = dataset_info(d.config.data)
    centers, std = (None, None) if info.modes is None else (np.asarray(info.modes[0]), float(info.modes[1]))
    files = plot_samples(d.members, d.samples, info.input_shape, out_dir / "samples.png", centers, std)
    return View("samples", "Generated samples",
                "What each generator makes at a few evaluation steps (the last included); 2D samples are drawn "
                "over the true modes: a green ring is a mode with a sample within 3 standard deviations, a red "
                "cross a mode the generator missed.", list(files))
