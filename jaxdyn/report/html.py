"""``report.html``: one self-contained file (images embedded, no outside script or style)
that opens offline, plus the PNGs it shows under ``report/``.

The views come in a fixed order (``VIEWS``); a view with no data is left out. A
view that fails is reported in its place, with the error, rather than losing the
rest of the report.
"""

import base64
import datetime
import html
import io
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

from jaxdyn.report import attention_view, federated_view, lineage_view, probe_views, views
from jaxdyn.report.data import load_report_data
from jaxdyn.atomic import check_writable, write_atomic
from jaxdyn.errors import debug_enabled

VIEWS = {  # key: (title when it fails, the view)
    "summary": ("Summary", views.summary),
    "curves": ("Loss and accuracy curves", views.curves),
    "hparams": ("Final metric against each hyperparameter", views.final_vs_hparams),
    "divergence": ("Divergence", views.divergence),
    "lineage": ("Population-based training", lineage_view.lineage),
    "federated": ("Federated averaging", federated_view.federated),
    "layers": ("Per-layer probes over time", probe_views.layer_heatmaps),
    "activations": ("Activation histograms over time", probe_views.activation_histograms),
    "attention": ("Attention", attention_view.attention),
    "curvature": ("Curvature and gradient noise", probe_views.curvature),
    "landscape": ("Loss landscape slices", probe_views.landscape),
    "other": ("Whole-model metrics over time", probe_views.other_metrics),
    "similarity": ("Similarity between members", probe_views.similarity),
    "samples": ("Generated samples", probe_views.samples),
    "members": ("Members", views.members_table),
}


# Text sizes for figures that a 1,400-pixel page shows at about 85%: 13 pt at 100 dpi is 18 px, so
# ticks and legends ("small", 10.8 pt) read at about 13 px on the page rather than 7.
FIGURE_STYLE = {"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 13, "xtick.labelsize": 12,
                "ytick.labelsize": 12, "legend.fontsize": 12, "legend.title_fontsize": 12, "figure.titlesize": 14}


@dataclass
class Report:
    """What ``write_report`` wrote.

    Attributes:
      path: ``report.html``.
      views: the keys of the views shown, in order.
      images: the PNG files written (one per figure).
      failed: view key -> the error of a view that could not be drawn.
    """

    path: Path
    views: list = field(default_factory=list)
    images: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)


def write_report(run_dir, aggregate: str = "mean_std", by=None, progress=None) -> Report:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report/*.png`` from whatever the run has
    written so far (it may be finished, still going, or interrupted).

    Args:
      aggregate: how seeds are combined: ``mean_std``, ``median_iqr`` or ``iqm``.
      by: member-table columns that make a setting (default: every varying
        hyperparameter and cohort setting, not the seeds).
      progress: called with each view's title before it is drawn (a progress bar's hook).

    PNGs under ``report/`` that this report did not write (left by an earlier one) are removed.

    Raises:
      FileNotFoundError: not a run folder, or nothing written yet.
      ConfigError: the run folder is not writable.
      ValueError: a bad ``aggregate`` or ``by``.
    """
    data = load_report_data(run_dir, aggregate, by)
    check_writable(data.run_dir, f"run folder {data.run_dir}", "the report is written into it: copy the run "
                   "folder somewhere writable and report the copy")
    out_dir = data.run_dir / "report"
    out_dir.mkdir(exist_ok=True)
    report = Report(data.run_dir / "report.html")

    def draw(key, make):
        view = make(data, out_dir) if key == "samples" else make(data)
        return None if view is None else _section(view, out_dir, report.images)

    sections = draw_sections(VIEWS, draw, progress, report.failed, report.views, "view")
    publish(report.path, _page(data, sections, report.views), out_dir, report.images)
    return report


def draw_sections(entries: dict, draw, progress, failed: dict, shown: list, noun: str) -> list[str]:
    """The HTML of each section of a page, in order: ``entries`` maps a key to ``(title, make)``;
    ``draw(key, make)`` returns the section's HTML, or None to leave it out (no data). Figures are
    made under ``FIGURE_STYLE``. A section that raises is shown in its place with the error (and
    recorded in ``failed``), so the rest of the page is still written; ``shown`` gets every key
    drawn. ``progress`` (or None) is called with each title first."""
    sections = []
    for key, (title, make) in entries.items():
        if progress is not None:
            progress(title)
        try:
            with matplotlib.rc_context(FIGURE_STYLE):  # read as each text is made: figures and PNGs alike
                section = draw(key, make)
            if section is None:
                continue
            sections.append(section)
        except Exception as e:  # noqa: BLE001 -- keep the rest of the page; show what went wrong here
            failed[key] = f"{type(e).__name__}: {e}"
            if debug_enabled():  # as the CLI promises for every error: the traceback too
                traceback.print_exception(e, file=sys.stderr)
            detail = html.escape("".join(traceback.format_exception(e)))
            sections.append(f'<section id="{key}" data-view="{key}" class="failed"><h2>{html.escape(title)}</h2>'
                            f"<p>This {noun} could not be drawn; please report it.</p><pre>{detail}</pre></section>")
        shown.append(key)
    return sections


def publish(path: Path, page: str, folder: Path, images: list) -> None:
    """Write ``page`` to ``path`` atomically, then remove the PNGs in ``folder`` that it does not show
    (left by an earlier page)."""
    write_atomic(path, lambda p: p.write_text(page, encoding="utf-8"))
    for stale in set(folder.glob("*.png")) - set(images):
        stale.unlink()


def _section(view, out_dir: Path, images: list) -> str:
    parts = [f'<section id="{view.key}" data-view="{view.key}"><h2>{html.escape(view.title)}</h2>',
             f"<p>{html.escape(view.intro)}</p>"]
    for block in view.blocks:
        if isinstance(block, views.Plot):
            buffer = io.BytesIO()
            block.figure.savefig(buffer, format="png", dpi=100)
            png = buffer.getvalue()
            path = out_dir / f"{block.name}.png"
            write_atomic(path, lambda p, png=png: p.write_bytes(png))
            parts.append(_image(png, path, block.caption, _drawn(block.figure)))
            images.append(path)
        elif isinstance(block, Path):
            png = block.read_bytes()
            parts.append(_image(png, block, ""))
            images.append(block)
        else:
            parts.append(f'<div class="table">{block}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _image(png: bytes, path: Path, caption: str, drawn: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure {drawn}><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}" '
            f'data-file="report/{html.escape(path.name)}">{cap}</figure>')


def _drawn(figure) -> str:
    """What a figure shows, as attributes of its ``<figure>`` (for screen readers' titles and for
    checks of the rendered page): ``data-panels``, each panel's title; ``data-rows``, a heatmap's
    row labels from top to bottom; ``data-first-x``, the smallest x of any line drawn."""
    axes = [ax for ax in figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    titles = [t.replace("\n", " · ") for t in [figure.get_suptitle(), *(ax.get_title() for ax in axes)] if t]
    rows = next(([t.get_text() for t in ax.get_yticklabels()] for ax in axes if ax.images), [])
    xs = [x for ax in axes for line in ax.lines if line.get_gid() != "baseline"  # axhline: x in axes units
          for x in np.asarray(line.get_xdata(), np.float64).ravel() if np.isfinite(x)]
    attrs = [f'data-panels="{html.escape(" | ".join(titles))}"']
    if rows:
        attrs.append(f'data-rows="{html.escape(" ".join(rows))}"')
    if xs:
        attrs.append(f'data-first-x="{min(xs):g}"')
    return " ".join(attrs)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 2em 3em; color: #222; max-width: 1500px; }
nav { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; }
section { margin-top: 2em; }
figure { margin: 1em 0; }
img { max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { text-align: left; background: #f6f6f6; }
th, td.num { white-space: nowrap; }
table.sortable th { cursor: pointer; background: #f0f0f0; position: sticky; top: 0; box-shadow: 0 1px 0 #ccc; }
div.table { overflow: auto; max-height: 40em; }
p.shared { font-size: 14px; }
section.failed, p.broken { color: #a00; }
"""

CHECK = """
window.addEventListener('load', function () {
  var images = document.images, bad = 0;
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].dataset.decoded = ok ? 'yes' : 'no';
    if (!ok) bad++;
  }
  document.body.dataset.images = (images.length - bad) + '/' + images.length;
  // a sticky table header must not cover the first row: scroll each table to its top and compare
  var hidden = 0;
  document.querySelectorAll('div.table').forEach(function (box) {
    var head = box.querySelector('thead'), row = box.querySelector('tbody tr');
    if (!head || !row) return;
    box.scrollTop = 0;
    if (head.getBoundingClientRect().bottom > row.getBoundingClientRect().top + 1) hidden++;
  });
  document.body.dataset.firstRowsHidden = hidden;
  if (bad) {
    var note = document.createElement('p');
    note.className = 'broken';
    note.textContent = bad + ' of ' + images.length + ' images could not be shown (is the file cut short?); ' +
      'the PNGs are in the report folder beside it.';
    document.body.insertBefore(note, document.body.firstChild);
  }
});
"""

SORT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.dir !== 'up';
      th.dataset.dir = up ? 'up' : 'down';
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var u = x.dataset.v, v = y.dataset.v, r;
        if (u !== undefined && v !== undefined) {
          if (u === '') return 1; if (v === '') return -1;
          r = parseFloat(u) - parseFloat(v);
        } else { r = x.textContent.localeCompare(y.textContent); }
        return up ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _page(data, sections: list[str], keys: list[str]) -> str:
    state = "" if data.finished else " (not finished: what was written so far)"
    return page_html(f"jaxdyn report: {data.config.study.name}", f"{data.run_dir}", state,
                     {key: VIEWS[key][0] for key in keys}, sections)


def page_html(title: str, what: str, note: str, nav: dict, sections: list[str], style: str = "") -> str:
    """A whole page: ``title``, a line saying ``what`` it shows and when it was written (then ``note``),
    the links to its sections (``nav``: key -> title), the sections, and the page's own checks."""
    links = " ".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t in nav.items())
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}{style}</style></head><body>\n<h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(what)}, written {made}{html.escape(note)}.</p>\n"
            f'<nav>{links}</nav>\n<main data-views="{" ".join(nav)}">\n' + "\n".join(sections) +
            f"\n</main><script>{CHECK}{SORT}</script></body></html>\n")
