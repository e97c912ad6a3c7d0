"""The report's views of training: summary, curves, final metric against each
hyperparameter, divergence, and the members table.

Each view is a function ``(ReportData) -> View | None``; None when the run has no
data for it, so that the report leaves it out rather than draw it empty.
"""

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxdyn.aggregate import AGGREGATES, aggregate as combine
from jaxdyn.errors import ConfigError
from jaxdyn.explore import draw_metric, setting_label
from jaxdyn.report.data import ReportData, format_value
from jaxdyn.report.names import describe
from jaxdyn.report.time_to import time_to_learn
from jaxdyn.results import headline, with_final
from jaxdyn.study import expand



@dataclass
class Plot:
    """A figure of a view, written as ``report/<name>.png``."""

    name: str
    figure: Figure
    caption: str = ""


@dataclass
class View:
    """One section of the report: a title, a paragraph, then figures, files and HTML tables."""

    key: str
    title: str
    intro: str
    blocks: list = field(default_factory=list)  # Plot, pathlib.Path of a PNG, or an HTML string


def table_html(frame: pd.DataFrame, sortable: bool = False, digits: int = 4) -> str:
    """``frame`` as an HTML table; a sortable one sorts by a column when its header is clicked."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            text = "" if np.isnan(v) else f"{v:.{digits}g}"
            return f'<td class="num" data-v="{"" if np.isnan(v) else repr(float(v))}">{text}</td>'
        if isinstance(v, (int, np.integer)):
            return f'<td class="num" data-v="{int(v)}">{int(v)}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return (f'<table class="{"sortable" if sortable else "plain"}"><thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table>")


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min ({s:.0f} s)"


def summary(d: ReportData) -> View:
    cfg, members, timing = d.config, d.members, d.timing
    planned, steps = _planned(cfg, members)
    reached = int(d.metrics.step.max()) if len(d.metrics) else 0
    status = "finished" if d.finished else ("not finished (still running or interrupted): these are the rows "
                                            "written so far")
    facts = {"study": cfg.study.name, "run folder": str(d.run_dir), "status": status,
             "cohorts": f"{members.cohort.nunique()} of {planned}",
             "members": f"{len(members)} ({members.groupby(d.by, dropna=False).ngroups if d.by else 1} settings; seeds per "
                         f"setting: {_seeds_per_setting(d)})",
             "steps per member": ", ".join(map(str, steps)) + f" (last step logged: {reached})"}
    if len(timing):
        seconds, work = float(timing.seconds.sum()), float(timing.member_steps.sum())
        later = timing[timing.chunk > timing.groupby("cohort").chunk.transform("min")]
        facts["wall time"] = f"{_seconds(seconds)} in training chunks (each cohort's first chunk compiles)"
        facts["member-steps/s"] = f"{work / seconds:,.0f} overall" + (
            f"; {later.member_steps.sum() / later.seconds.sum():,.0f} after each cohort's first chunk"
            if len(later) else "")
    info = d.info
    if info:
        processes = info.get("n_processes", 1)
        facts["device"] = (f"{info.get('n_devices', '?')} × {info.get('platform', '?')} "
                           f"({info.get('device_kind', 'unknown kind')})"
                           + (f", over {processes} processes (jax.distributed)" if processes > 1 else ""))
        facts["versions"] = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    facts["grouped by"] = ", ".join(d.by) or "nothing: every member is one setting"
    facts["aggregate over seeds"] = AGGREGATES[d.aggregate]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    blocks = [f'<table class="facts">{rows}</table>']
    metric = d.results.chosen_headline() or headline(members)
    blocks.append(f"<h3>Final {metric.replace('_', ' ')} per setting</h3>")
    blocks.append(table_html(d.results.summary(d.aggregate, by=d.by or None)))
    learning = time_to_learn(d)
    if learning is not None:
        caption, times = learning
        blocks.append(f"<h3>Time to learn per setting</h3><p>{html.escape(caption)}</p>")
        if times is not None:
            blocks.append(table_html(times))
    ensemble = _ensemble(d)
    if isinstance(ensemble, pd.DataFrame):
        blocks.append("<h3>Seeds as one ensemble, beside the mean of members</h3><p>The ensemble averages "
                      "the seeds' predicted probabilities (values, for regression) on the whole test set and "
                      "scores the average; the mean of members averages the seeds' own scores. Diverged members "
                      "are left out of both.</p>")
        blocks.append(table_html(ensemble))
    elif ensemble:
        blocks.append(f"<p>No ensemble table: {html.escape(ensemble)}</p>")
    return View("summary", "Summary", "What ran, where, how fast, the headline result per setting, and how soon it "
                "was learnt.", blocks)


def _planned(cfg, members: pd.DataFrame) -> tuple:
    """``(cohorts the study plans, its step counts)``. A study whose components of the user's own
    cannot be imported in this process (an object from ``__main__``) cannot be expanded again: its
    tables still say which cohorts ran, and the config how long each trains."""
    try:
        cohorts = expand(cfg)
    except ConfigError:
        grid = dict(cfg.grid)
        steps = grid.get("train.steps", (cfg.train.steps,))
        return "? (the plan needs the study's own components, which this process cannot import)", \
            sorted(int(s) for s in steps)
    return len(cohorts), sorted(set(int(c.config.train.steps) for c in cohorts))


def _seeds_per_setting(d: ReportData) -> str:
    counts = d.members.groupby(d.by, dropna=False).size() if d.by else pd.Series([len(d.members)])
    return str(int(counts.iloc[0])) if counts.nunique() == 1 else f"{int(counts.min())} to {int(counts.max())}"


def _ensemble(d: ReportData):
    """The ensemble table, or a reason why there is none (an empty string: not applicable)."""
    if not d.task_kind().has_model:
        return ""
    try:
        return d.results.ensemble(d.by)
    except Exception as e:  # noqa: BLE001 -- a report draws what it can; say why this part is missing
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def palette(n: int) -> list:
    """``n`` distinct colours: tab10, tab20 up to 20, then evenly spaced along turbo."""
    from matplotlib import colormaps

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def colors(d: ReportData) -> dict:
    """A colour per setting, the same in every figure."""
    settings = d.settings()
    return dict(zip(settings, palette(len(settings))))


def metric_frame(d: ReportData, metric: str, layer: str = "") -> pd.DataFrame:
    """Rows of one metric with the setting columns, or an empty frame."""
    rows = d.metrics[(d.metrics.metric == metric) & (d.metrics.layer.fillna("") == layer)]
    if rows.empty:
        return rows
    return rows[["member", "step", "value"]].merge(d.members[["member", *d.by]], on="member")


def curves(d: ReportData) -> View | None:
    present = [m for m in d.curves() if (d.metrics.metric == m).any()]
    if not present:
        return None
    fig = metric_panels(d, present, 4.6, 3.6)
    return View("curves", "Loss and accuracy curves",
                f"One line per setting, its band the spread over seeds ({AGGREGATES[d.aggregate]}); train "
                "values are means over each logging window. Diverged members leave each step's aggregate from "
                "the step they diverged.", [Plot("curves", fig)])


def panel_grid(n: int, max_cols: int, width: float, height: float, legend_width: float = 2.6):
    """A figure of ``n`` panels in rows of at most ``max_cols`` (spare cells hidden), room on
    the right for a legend; returns the figure and the ``n`` axes."""
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols + legend_width, height * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def metric_panels(d: ReportData, names: list[str], width: float, height: float) -> Figure:
    """One panel per whole-model metric against step, three to a row, each setting's line and
    band over seeds in its own colour, one legend."""
    fig, axes = panel_grid(len(names), 3, width, height)
    palette = colors(d)
    for ax, metric in zip(axes, names):
        draw_metric(ax, metric_frame(d, metric), metric, d.by, d.aggregate, palette)
        ax.set_title(describe(metric, d.loss_label(metric)))
        blind = d.baselines().get(metric)
        if blind is not None and np.isfinite(blind):
            ax.axhline(blind, color="0.35", linestyle=":", linewidth=1.5, gid="baseline")
            ax.annotate(f"input-blind baseline {blind:.3g}", (0.01, blind), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize="small", color="0.35")
    legend(fig, palette, AGGREGATES[d.aggregate])
    return fig


def legend(fig: Figure, palette: dict, title: str) -> None:
    from matplotlib.lines import Line2D

    if len(palette) > 1:
        handles = [Line2D([], [], color=c) for c in palette.values()]
        fig.legend(handles, list(palette), loc="outside right upper", fontsize="small", title=title,
                   title_fontsize="small")


IDS = ("member", "cohort", "part", "init_seed", "data_seed", "dropout_seed")  # numbers, but not hyperparameters


def numeric_settings(d: ReportData) -> list[str]:
    return [k for k in d.by if k not in IDS and pd.api.types.is_numeric_dtype(d.members[k]) and not
            pd.api.types.is_bool_dtype(d.members[k])]


def log_axis(values, name: str = "") -> bool:
    """A log axis for values that are positive and either a rate (``name`` says so) or span a
    factor of 10 or more."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return v.size > 1 and bool(np.all(v > 0)) and ("rate" in name or v.max() / v.min() >= 10)


def final_vs_hparams(d: ReportData) -> View | None:
    numeric = numeric_settings(d)
    if not numeric:
        return None
    metric = d.results.chosen_headline() or headline(d.members)
    column = f"final_{metric}"
    members = with_final(d.members, d.metrics, metric)
    fig = Figure(figsize=(5 * len(numeric) + 2.6, 3.8), layout="constrained")
    axes = np.asarray(fig.subplots(1, len(numeric), squeeze=False)).reshape(-1)
    for ax, hparam in zip(axes, numeric):
        others = [k for k in d.by if k != hparam]
        groups = list(members.groupby(others, dropna=False, sort=True)) if others else [((), members)]
        shades = palette(len(groups))
        for i, (key, group) in enumerate(groups):
            xs = np.sort(group[hparam].unique())
            stats = np.array([combine(group.loc[group[hparam] == x, column].to_numpy(), d.aggregate) for x in xs])
            ax.errorbar(xs, stats[:, 0], yerr=[stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]],
                        marker="o", capsize=3, color=shades[i], label=setting_label(others, key))
        if log_axis(d.members[hparam], hparam):
            ax.set_xscale("log")
        ax.set(xlabel=hparam, ylabel=column,
               title=f"{describe(metric, d.loss_label(metric))} against {hparam.split('.')[-1]}".replace("\n", " · final_"))
        if metric == "test_loss" and log_axis(members[column]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize="x-small")
    return View("hparams", "Final metric against each hyperparameter",
                f"The final {metric.replace('_', ' ')} against each numeric setting that varies; points are the "
                f"{AGGREGATES[d.aggregate]}, one line per value of the other settings. A diverged member counts "
                "with the score of its frozen last finite state; a NaN final is left out."
                + (" In this population-based training run a member sits at its starting values (members.csv); "
                   "the rounds changed them, as the Population-based training view shows."
                   if d.config is not None and d.config.pbt is not None else ""), [Plot("final_vs_hparams", fig)])


def divergence(d: ReportData) -> View | None:
    members = d.members
    diverged = members.diverged_at >= 0
    if not diverged.any():
        return None
    label = d.setting_of()
    marked = members.assign(setting=members.member.map(label), diverged=diverged,
                            step=members.diverged_at.where(diverged))
    table = marked.groupby("setting", sort=False).agg(
        members=("member", "size"), diverged=("diverged", "sum"), first_step=("step", "min"),
        median_step=("step", "median")).reset_index()
    numeric = numeric_settings(d)
    fig = Figure(figsize=(11, 0.35 * len(table) + 2.6), layout="constrained")
    bars, where = fig.subplots(1, 2, width_ratios=[1, 1.2])
    frac = table.diverged / table.members
    bars.barh(np.arange(len(table)), frac, color=["C3" if f > 0 else "C2" for f in frac])
    bars.set(yticks=np.arange(len(table)), xlim=(0, 1), xlabel="fraction of seeds diverged",
             title="diverged, per setting")
    bars.set_yticklabels(table.setting, fontsize="small")
    bars.invert_yaxis()
    # x: the first numeric setting, or each setting in turn; y: the second, or the seed.
    x = numeric[0] if numeric else None
    y = numeric[1] if len(numeric) > 1 else "init_seed"
    if x is None:
        order = {s: i for i, s in enumerate(table.setting)}
        xs = members.member.map(label).map(order).to_numpy(np.float64)
        where.set_xticks(range(len(order)), list(order), rotation=30, ha="right", fontsize="small")
        where.set_xlim(-0.5, len(order) - 0.5)
    else:
        xs = members[x].to_numpy(np.float64)
        if log_axis(xs, x):
            where.set_xscale("log")
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(members))
    ys = members[y].to_numpy(np.float64)
    ys = ys * (1 + 0.1 * jitter) if log_axis(ys, y) else ys + jitter
    if log_axis(ys, y):
        where.set_yscale("log")
    ok = ~diverged.to_numpy()
    where.scatter(xs[ok], ys[ok], marker="o", color="0.6", label="trained to the end")
    where.scatter(xs[~ok], ys[~ok], marker="x", color="C3", s=50, label="diverged")
    x = x or "setting"
    where.set(xlabel=x, ylabel=y, title="where in hyperparameter space")
    where.legend(fontsize="small")
    where.grid(alpha=0.3)
    table = table.rename(columns={"first_step": "first diverged at", "median_step": "median step"})
    return View("divergence", "Divergence",
                f"{int(diverged.sum())} of {len(members)} members diverged (a non-finite loss or parameters); "
                "each was frozen at its last finite state and the rest trained on.",
                [table_html(table), Plot("divergence", fig)])


def members_table(d: ReportData) -> View:
    """Every member's row; the columns that hold one value for every member are said once above
    it (``Shared by every member: b1 = 0.9, ...``) rather than repeated in each row."""
    members = d.members
    keep = {"member", "cohort"}
    shared = [c for c in members.columns if c not in keep and len(members) > 1
              and members[c].nunique(dropna=False) == 1]
    shown = members.drop(columns=shared).head(5000)
    note = f" The first 5,000 of {len(members):,} are shown; members.csv has all." if len(members) > 5000 else ""
    blocks = []
    if shared:
        values = ", ".join(f"{c} = {_short(members[c].iloc[0])}" for c in shared)
        blocks.append(f'<p class="shared"><b>Shared by every member:</b> {html.escape(values)}</p>')
    blocks.append(table_html(shown, sortable=True))
    return View("members", "Members",
                f"Every member with its settings, seeds, hyperparameters and final metrics; click a header to "
                f"sort.{note}", blocks)


def _short(value) -> str:
    """A shared value as the sentence above the members table writes it."""
    if isinstance(value, (float, np.floating)):
        return "NaN" if np.isnan(value) else f"{value:.4g}"
    return str(value)


__all__ = ["Plot", "View", "curves", "divergence", "final_vs_hparams", "format_value", "legend", "members_table", "metric_panels", "panel_grid", "summary"]
