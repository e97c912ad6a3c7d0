"""The comparison report: several runs on one page (``jaxdyn report RUN_A RUN_B --out DIR``).

``DIR/index.html`` is self-contained, as a run's own report is (images embedded, no outside
script), with the PNGs it shows under ``DIR/figures/``. From the top: the runs (folder, status,
a link to each run's own report), what differs between their configs, the curves of each
metric from every run on one pair of axes (a colour per run and setting), and each run's
summary table side by side. Per-layer probes, histograms and samples stay in each run's own
report. A section that fails is reported in its place, as in ``write_report``. Each figure lists
the lines it drew, per panel, in its ``data-drawn`` attribute (JSON), for scripts and tests.
"""

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from jaxdyn.aggregate import AGGREGATES
from jaxdyn.analysis import Results, compare
from jaxdyn.atomic import check_writable, write_atomic
from jaxdyn.comparison import flat_config
from jaxdyn.data import dataset_info
from jaxdyn.errors import ConfigError, as_path
from jaxdyn.explore import draw_metric, member_settings
from jaxdyn.losses import logged_loss
from jaxdyn.report.html import draw_sections, page_html, publish
from jaxdyn.report.names import describe
from jaxdyn.report.views import palette, panel_grid, table_html
from jaxdyn.results import summarize, varying_settings
from jaxdyn.rundir import load_run_config

CORE = ("train_loss", "test_loss", "test_accuracy")  # first, in this order; then what the runs' tasks declare

STYLE_MORE = """
div.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
div.side > div { flex: 0 1 auto; min-width: 18em; }
table.diff td { white-space: nowrap; }
table.diff td.same { color: #888; }
"""


@dataclass
class Comparison:
    """What ``write_comparison`` wrote.

    Attributes:
      path: ``DIR/index.html``.
      runs: ``{label: run folder}``, in the page's order.
      sections: the keys of the sections shown.
      images: the PNG files written.
      failed: section key -> the error of a section that could not be drawn.
    """

    path: Path
    runs: dict = field(default_factory=dict)
    sections: list = field(default_factory=list)
    images: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)


@dataclass
class _Runs:
    """The comparison's tables and, per run, what a page says about it."""

    results: Results
    configs: dict  # label -> its Config (None where it cannot be read)
    by: list
    aggregate: str
    out: Path

    def rows(self, label: str) -> pd.DataFrame:
        members = self.results.members
        return members[members.run == label].drop(columns="run")


def write_comparison(runs, out, labels=None, aggregate: str = "mean_std", by=None, progress=None) -> Comparison:
    """Write ``out/index.html`` and ``out/figures/*.png``: the runs side by side.

    Args:
      runs: run folders (a list, or ``{label: folder}``), as ``jaxdyn.compare`` takes them.
      out: the folder to write (made if missing; not a run folder).
      labels: a name per run (default: the folder names).
      aggregate: how seeds are combined: a key of ``jaxdyn.aggregate.AGGREGATES``.
      by: member-table columns that make a setting within a run (default: the settings that vary
        within any run); the run is always one of them.
      progress: called with each section's title before it is drawn.

    Raises:
      ConfigError: bad runs, labels or ``out``.
      FileNotFoundError: a folder that is no run, or a run with nothing written yet.
      ValueError: a bad ``aggregate`` or ``by``.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate = {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    out = as_path(out, "out")
    if (out / "config.toml").exists():
        raise ConfigError(f"out = {out}: that is a run folder; give a new folder for the comparison report")
    check_writable(out, f"out = {out}", "give a folder you can write to for the comparison report")
    res = compare(runs, labels=labels)
    keys = list(by) if by is not None else within_runs(res)
    missing = [k for k in keys if k not in res.members.columns]
    if missing:
        raise ValueError(f"by = {missing}: not columns of the member table; columns: {', '.join(res.members.columns)}")
    data = _Runs(res, {label: _config(path) for label, path in res.runs.items()},
                 ["run", *(k for k in keys if k != "run")], aggregate, out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    report = Comparison(out / "index.html", dict(res.runs))

    def draw(key, make):
        body = make(data)
        return None if body is None else _section(key, SECTIONS[key][0], body, figures, report.images)

    sections = draw_sections(SECTIONS, draw, progress, report.failed, report.sections, "section")
    publish(report.path, _page(data, sections, report.sections), figures, report.images)
    return report


def within_runs(res: Results) -> list[str]:
    """The settings that vary within at least one run (what tells a run's lines apart)."""
    members = res.members
    return list(dict.fromkeys(k for label in res.runs
                              for k in varying_settings(members[members.run == label].drop(columns="run"))))


def _config(path: Path):
    try:
        return load_run_config(path)
    except (ConfigError, OSError, ValueError):
        return None


def loss_label(config) -> str:
    """What a supervised run's ``loss`` metrics measure, in words; ``""`` otherwise."""
    if config is None or config.task.kind != "supervised":
        return ""
    try:
        return logged_loss(config.loss.name, dataset_info(config.data).regression)
    except (ConfigError, OSError):
        return ""


def text(value) -> str:
    """A config value as the diff shows it: TOML's spelling, ``—`` for a key a run does not have."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(text(v) for v in value) + "]"
    return str(value)


def _link(d: _Runs, label: str) -> str:
    """A link to a run's own report, relative to the page, or how to write one."""
    path = d.results.runs[label]
    own = path / "report.html"
    if own.exists():
        href = Path(os.path.relpath(own.resolve(), d.out.resolve())).as_posix()
        return f'<a href="{html.escape(href)}">report</a>'
    return f"no report yet: <code>jaxdyn report {html.escape(str(path))}</code>"


def runs_section(d: _Runs) -> str:
    rows = []
    for label, path in d.results.runs.items():
        members = d.rows(label)
        metrics = d.results.metrics[d.results.metrics.run == label]
        finished = (path / "members.csv").exists() and (path / "metrics.parquet").exists()
        config = d.configs[label]
        cells = [f"<b>{html.escape(label)}</b>", f"<code>{html.escape(str(path))}</code>",
                 "finished" if finished else "not finished: the rows written so far",
                 html.escape(config.study.name if config is not None else "?"),
                 f"{members.cohort.nunique()} × {len(members) // max(members.cohort.nunique(), 1)}"
                 if members.groupby("cohort").size().nunique() == 1 else f"{members.cohort.nunique()}, {len(members)}",
                 str(int(metrics.step.max()) if len(metrics) else 0),
                 str(int((members.diverged_at >= 0).sum())), _link(d, label)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("run", "folder", "status", "study", "cohorts × members",
                                             "last step", "diverged", "its own report"))
    return f'<table class="facts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def diff_section(d: _Runs) -> str:
    diff = d.results.config_diff()
    labels = list(d.results.runs)
    total = len(set().union(*(flat_config(p) for p in d.results.runs.values())))
    if diff.empty:
        return f"<p>The runs' configs are the same in all {total} keys.</p>"
    head = "<th>key</th>" + "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = "".join(f"<tr><td><code>{html.escape(key)}</code></td>"
                   + "".join(f"<td>{html.escape(text(v))}</td>" for v in row) + "</tr>"
                   for key, row in zip(diff.index, diff.itertuples(index=False)))
    return (f"<p>{len(diff)} of {total} config keys differ between the runs (— : not in that run's config). A "
            "differing setting is a column of the tables, so the curves and tables below tell the runs apart "
            f"by it.</p><table class=\"diff\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _metric_figure(d: _Runs, names: list[str], name: str):
    """One panel per metric, every run's lines on the panel's one pair of axes, one legend: ``(name,
    the figure, {metric: the lines drawn})``."""
    members, metrics = d.results.members, d.results.metrics
    labels = member_settings(members, d.by)
    colours = dict(zip(dict.fromkeys(labels), palette(labels.nunique())))
    fig, axes = panel_grid(len(names), 3, 4.8, 3.8, legend_width=3.4)
    objectives = {label: loss_label(config) for label, config in d.configs.items()}
    drawn = {}
    for ax, metric in zip(axes, names):
        rows = metrics[(metrics.metric == metric) & (metrics.layer.fillna("") == "")]
        frame = rows[["run", "member", "step", "value"]].merge(members[["member", *d.by]], on=["run", "member"])
        drawn[metric] = [_short(label) for label in draw_metric(ax, frame, metric, d.by, d.aggregate, colours)]
        if not drawn[metric]:
            ax.text(0.5, 0.5, "nothing to draw:\nno finite values", ha="center", va="center", transform=ax.transAxes)
        shown = {objectives[r] for r in frame.run.unique()} if metric.endswith("loss") else set()
        ax.set_title(describe(metric, shown.pop() if len(shown) == 1 else ""), fontsize="medium")
        ax.set_ylabel("")
        plain_log_ticks(ax)
    handles = [Line2D([], [], color=c, linewidth=2.5) for c in colours.values()]
    fig.legend(handles, [_short(label) for label in colours], loc="outside right upper",
               title=f"run, setting\n({AGGREGATES[d.aggregate]})")
    return name, fig, drawn


def plain_log_ticks(ax) -> None:
    """Tick labels ``2.2`` rather than ``2.2×10⁰`` on a log axis that spans less than a decade, where
    matplotlib labels the minor ticks in scientific notation."""
    low, high = ax.get_ylim()
    if ax.get_yscale() == "log" and low > 0 and high / low < 10:
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)


def _short(label: str) -> str:
    """``run=a, learning_rate=0.1`` as the legend shows it: ``a, learning_rate=0.1``."""
    return label[len("run="):] if label.startswith("run=") else label


def curves_section(d: _Runs):
    metrics = d.results.metrics
    whole = metrics[metrics.layer.fillna("") == ""]
    present = list(dict.fromkeys(whole.metric))
    declared = [c for config in d.configs.values() if config is not None for c in _declared(config)]
    core = [m for m in dict.fromkeys([*CORE, *declared]) if m in present]
    other = [m for m in present if m not in core and m != "train_accuracy"]
    if not core and not other:
        return None
    blocks = ["<p>Each metric from every run on one pair of axes: a colour per run and setting; the line and its "
              f"band are the {AGGREGATES[d.aggregate]}. Train values are means over each logging window.</p>"]
    if core:
        blocks.append(_metric_figure(d, core, "curves"))
    if other:
        blocks.append("<h3>Other whole-model metrics</h3>")
        blocks.append(_metric_figure(d, other, "other_metrics"))
    return blocks


def _declared(config) -> tuple:
    try:
        return tuple(config.task.spec().curves)
    except ConfigError:  # a task kind of the user's own that this process cannot import
        return ()


def summaries_section(d: _Runs) -> list:
    boxes = []
    for label in d.results.runs:
        table = summarize(d.rows(label), d.aggregate)
        metric = table.columns[list(table.columns).index("members") + 1].rsplit("_", 1)[0]
        boxes.append(f"<div><h3>{html.escape(label)} <small>({_link(d, label)})</small></h3>"
                     f"<p>final {html.escape(metric.replace('_', ' '))} over seeds</p>{table_html(table)}</div>")
    together = d.results.summary(d.aggregate)
    return [f'<div class="side">{"".join(boxes)}</div>',
            "<h3>All runs in one table</h3><p>Grouped by run, cohort and every setting that differs within or "
            "between runs; click a header to sort.</p>", f'<div class="table">{table_html(together, True)}</div>']


SECTIONS = {  # key: (title, the section: HTML, or a list of HTML strings and (name, Figure, lines) figures)
    "runs": ("Runs", runs_section),
    "diff": ("What differs between the runs' configs", diff_section),
    "curves": ("Curves from every run", curves_section),
    "summaries": ("Summary of each run, side by side", summaries_section),
}


def _section(key: str, title: str, body, figures: Path, images: list) -> str:
    parts = [f'<section id="{key}" data-view="{key}"><h2>{html.escape(title)}</h2>']
    for block in body if isinstance(body, list) else [body]:
        if isinstance(block, tuple):
            name, fig, drawn = block
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            png = buffer.getvalue()
            path = figures / f"{name}.png"
            write_atomic(path, lambda p, png=png: p.write_bytes(png))
            images.append(path)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure data-drawn="{html.escape(json.dumps(drawn))}"><img src="data:image/png;base64,'
                         f'{data}" alt="{html.escape(name)}" data-file="figures/{html.escape(path.name)}"></figure>')
        else:
            parts.append(block)
    parts.append("</section>")
    return "\n".join(parts)


def _page(d: _Runs, sections: list[str], keys: list[str]) -> str:
    return page_html(f"jaxdyn comparison: {' vs '.join(d.results.runs)}", f"{len(d.results.runs)} runs", "",
                     {k: SECTIONS[k][0] for k in keys}, sections, STYLE_MORE)
