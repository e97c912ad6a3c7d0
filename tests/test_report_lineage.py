"""The report's PBT view: present for a run with rounds and only then, its figures not blank,
its schedule table the best member's ``Results.schedule``, and its lineage edges the copies."""

import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.report import write_report
from jaxdyn.report.data import load_report_data
from jaxdyn.report.lineage_view import _pbt, _shown_members, lineage

BASE = {"study": {"name": "pbt_report", "seeds": 2}, "data": {"name": "digits"}, "model": {"hidden": [8]},
        "optim": {"name": "sgd"},
        "train": {"steps": 80, "batch_size": 32, "chunk_steps": 10, "log_every": 10, "eval_every": 1},
        "grid": {"optim.learning_rate": [1e-3, 1e-2, 1e-1, 3e-1]}}
PBT = {**BASE, "pbt": {"every": 2, "hparams": ["optim.learning_rate"],
                       "bounds": {"optim.learning_rate": [1e-5, 1.0]}}}


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbt_report") / "run"
    jaxdyn.run(PBT, out=out, progress=False, summary=False)
    return out


@pytest.fixture(scope="module")
def report(pbt_run):
    return write_report(pbt_run)


def _section(page: str, key: str) -> str:
    start = page.index(f'data-view="{key}"')
    return page[start:page.index("</section>", start)]


def test_the_view_is_drawn_with_both_figures(pbt_run, report):
    assert report.failed == {}
    assert "lineage" in report.views and report.views.index("lineage") == report.views.index("hparams") + 1
    section = _section(report.path.read_text(), "lineage")
    assert re.findall(r'alt="([^"]+)"', section) == ["lineage", "lineage_hparams"]
    for name in ("lineage", "lineage_hparams"):
        image = matplotlib.image.imread(pbt_run / "report" / f"{name}.png")[..., :3]
        assert image.std() > 0.02, f"{name}.png looks blank"


def test_the_table_is_the_best_members_schedule(pbt_run, report):
    results = jaxdyn.load(pbt_run)
    best = int(results.members.set_index("member").final_test_accuracy.idxmax())
    section = _section(report.path.read_text(), "lineage")
    body = section[section.index("<tbody>"):section.index("</tbody>")]
    cells = [re.findall(r'data-v="([^"]*)"', row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    table = pd.DataFrame([[float(v) for v in row] for row in cells], columns=["step", "member", "learning_rate"])
    schedule = results.schedule(best)
    assert f"member {best}," in section
    np.testing.assert_array_equal(table.step, schedule.step)
    np.testing.assert_array_equal(table.member, schedule.member)
    np.testing.assert_allclose(table.learning_rate, schedule.learning_rate, rtol=1e-12)


def test_the_lineage_figure_draws_one_edge_per_copy_and_the_ancestry(pbt_run):
    d = load_report_data(pbt_run)
    view = lineage(d)
    ax = view.blocks[0].figure.axes[0]
    burn_in_and_kept, copies = ax.collections[0], ax.collections[1]
    rows = d.results.lineage()
    assert len(copies.get_segments()) == int(rows.copied.sum()) > 0
    assert len(burn_in_and_kept.get_segments()) == len(d.members) + int((~rows.copied).sum())
    # Each copy starts at its parent's row at the round's step.
    starts = sorted((float(s[0][0]), float(s[0][1])) for s in copies.get_segments())
    assert starts == sorted(zip(rows[rows.copied].step.astype(float), rows[rows.copied].parent.astype(float)))
    pbt = _pbt(d, rows)
    schedule = d.results.schedule(pbt.best)
    ancestry = ax.lines[0].get_ydata()
    assert list(ancestry[1:]) == list(schedule.member) and ancestry[-1] == pbt.best
    # One dot per member per round, plus one at each member's end.
    assert len(ax.collections[2].get_offsets()) == len(rows) + len(d.members)
    assert _shown_members(d, pbt) == (sorted(d.members.member), "")


def test_a_run_without_pbt_has_no_such_view(tmp_path):
    out = tmp_path / "plain"
    jaxdyn.run({**BASE, "train": {**BASE["train"], "steps": 20}}, out=out, progress=False, summary=False)
    assert lineage(load_report_data(out)) is None
    report = write_report(out)
    assert report.failed == {} and "lineage" not in report.views
    assert 'data-view="lineage"' not in report.path.read_text()


def test_the_final_metric_view_says_members_sit_at_their_starting_values(report):
    section = _section(report.path.read_text(), "hparams")
    assert "a member sits at its starting values (members.csv); the rounds changed them" in section
