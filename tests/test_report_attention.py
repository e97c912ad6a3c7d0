"""The report's Attention view: present for a run with the attention probe and only then, its
maps the best member's ``attn_map`` rows of histograms.parquet, its entropy lines the seeds'
aggregate of ``attn_entropy`` per head, and a run with one evaluation or no maps still drawn."""

import dataclasses
import math
import re

import matplotlib.image
import numpy as np
import pytest

import jaxdyn
from jaxdyn.analysis import Results
from jaxdyn.report import write_report
from jaxdyn.report.attention_view import attention
from jaxdyn.report.data import load_report_data

TRANSFORMER = {"study": {"name": "attention_report", "seeds": 2}, "data": {"name": "mnist1d", "n_train": 256},
               "model": {"kind": "transformer", "d_model": 16, "heads": 2, "readout": "mean"},
               "train": {"steps": 40, "chunk_steps": 20, "log_every": 20},
               "probes": {"attention": {"every": 1}, "norms": {"every": 0}, "activations": {"every": 0}}}
T, HEADS = 40, 2  # MNIST-1D's 40 positions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("attention_report") / "run"
    jaxdyn.run(TRANSFORMER, out=out, progress=False, summary=False)
    return out


@pytest.fixture(scope="module")
def report(run):
    return write_report(run)


@pytest.fixture(scope="module")
def data(run):
    return load_report_data(run)


def _section(page: str, key: str) -> str:
    start = page.index(f'data-view="{key}"')
    return page[start:page.index("</section>", start)]


def _plots(view) -> dict:
    return {b.name: b for b in view.blocks if hasattr(b, "figure")}


def test_the_view_is_drawn_with_its_images(run, report):
    assert report.failed == {} and "attention" in report.views
    section = _section(report.path.read_text(), "attention")
    assert re.findall(r'alt="([^"]+)"', section) == ["attention_maps", "attention_entropy", "attention_self_first"]
    for name in ("attention_maps", "attention_entropy", "attention_self_first"):
        image = matplotlib.image.imread(run / "report" / f"{name}.png")[..., :3]
        assert image.std() > 0.02, f"{name}.png looks blank"
    assert "log T = 3.69" in section and "mean over t of log(t + 1)" in section
    # The maps are not binned activations: no activation histogram is drawn of them.
    assert "activations" not in report.views and not (run / "report" / "hist_attn_map.png").exists()


def test_the_maps_drawn_are_the_best_members_histogram_rows(data):
    view = attention(data)
    plot = _plots(view)["attention_maps"]
    best = int(data.members.set_index("member").final_test_accuracy.idxmax())
    assert f"member {best} (" in plot.caption and "highest final test accuracy" in plot.caption
    rows = data.histograms[(data.histograms.metric == "attn_map") & (data.histograms.member == best)]
    drawn = [ax for ax in plot.figure.axes if ax.get_gid()]
    assert sorted(ax.get_gid() for ax in drawn) == sorted(f"attn_0/h{h}@{s}" for h in range(HEADS) for s in (0, 20, 40))
    for ax in drawn:
        head, step = re.fullmatch(r"attn_0/h(\d+)@(\d+)", ax.get_gid()).groups()
        mine = rows[(rows.layer == "attn_0/example_0") & (rows.step == int(step))].sort_values("bin")
        assert list(mine.bin) == list(range(HEADS * T * T))
        expected = mine.value.to_numpy().reshape(HEADS, T, T)[int(head)]
        (image,) = ax.images
        np.testing.assert_array_equal(np.asarray(image.get_array()), expected)
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)  # query rows, key across
        assert image.get_clim() == (0, 1)
    assert plot.figure.axes[-1].get_ylabel() == "attention weight"  # the shared colour bar


def test_the_entropy_lines_are_the_seed_aggregate_per_head(data):
    figure = _plots(attention(data))["attention_entropy"].figure
    (ax,) = [a for a in figure.axes if a.get_visible() and a.get_title()]
    metrics = data.metrics
    for head in range(HEADS):
        rows = metrics[(metrics.metric == "attn_entropy") & (metrics.layer == f"attn_0/h{head}")]
        mean = rows.groupby("step").value.mean()  # mean_std, the report's default aggregate
        line = ax.lines[head]
        np.testing.assert_array_equal(line.get_xdata(), mean.index.to_numpy())
        np.testing.assert_allclose(line.get_ydata(), mean.to_numpy(), rtol=1e-6)
    levels = sorted(float(line.get_ydata()[0]) for line in ax.lines[HEADS:])
    assert levels == pytest.approx([0.0, math.log(T)])  # one key, and uniform attention


def test_one_evaluation_and_no_maps_still_draw(data):
    first = data.metrics.step.min()
    single = dataclasses.replace(data, results=Results(data.run_dir, data.members,
                                                       data.metrics[data.metrics.step == first]),
                                 histograms=data.histograms[data.histograms.step == first])
    plots = _plots(attention(single))
    assert sorted(ax.get_gid() for ax in plots["attention_maps"].figure.axes if ax.get_gid()) == \
        [f"attn_0/h{h}@{first}" for h in range(HEADS)]
    assert {"attention_entropy", "attention_self_first"} <= set(plots)
    no_maps = attention(dataclasses.replace(data, histograms=data.histograms.iloc[0:0]))
    assert list(_plots(no_maps)) == ["attention_entropy", "attention_self_first"]
    assert any(isinstance(b, str) and "No attention maps are drawn" in b for b in no_maps.blocks)


def test_an_mlp_run_has_no_attention_view(tmp_path):
    out = tmp_path / "mlp"
    jaxdyn.run({"study": {"name": "mlp_report", "seeds": 1}, "data": {"name": "mnist1d", "n_train": 256},
                "model": {"hidden": [8]}, "train": {"steps": 10, "chunk_steps": 10, "log_every": 10}},
               out=out, progress=False, summary=False)
    assert attention(load_report_data(out)) is None
    report = write_report(out)
    assert report.failed == {} and "attention" not in report.views and "activations" in report.views
    assert 'data-view="attention"' not in report.path.read_text()
