"""report.html: every view from a small real run, its numbers against the tables, its
images not blank, a run cut short, and the page rendered by a real browser."""

import base64
import os
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.report import write_report
from jaxdyn.report import probe_views, views
from jaxdyn.report.data import load_report_data
from jaxdyn.report.html import VIEWS

CFG = {"study": {"name": "report", "seeds": 2}, "model": {"hidden": [16, 16]}, "optim": {"name": "sgd"},
       "train": {"steps": 40, "batch_size": 32, "chunk_steps": 10, "log_every": 5, "eval_every": 2},
       "grid": {"optim.learning_rate": [0.05, 0.5, 1e6]},  # 1e6 blows the ReLU net up
       "probes": {"batch_size": 32, "hessian": {"iters": 6, "trace_samples": 2}, "gradient_noise": {},
                  "cka": {}, "lmc_barrier": {"alphas": 3}, "loss_slices": {"points": 3, "dims": 2}}}
EXPECTED = ["summary", "curves", "hparams", "divergence", "layers", "activations", "curvature", "landscape",
            "other", "similarity", "members"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    jaxdyn.run(CFG, out=out, progress=False, summary=False)
    return out


@pytest.fixture(scope="module")
def report(run):
    return write_report(run)


def pixel_std(path) -> float:
    image = matplotlib.image.imread(path)[..., :3]
    return float(image.std())


def test_every_view_is_written_with_images_that_are_not_blank(run, report):
    assert report.failed == {}
    assert report.views == EXPECTED  # no GAN samples in a supervised run: that view is left out
    page = report.path.read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert len(embedded) == len(report.images) >= len(EXPECTED) - 3  # summary, divergence table, members
    for (data, name), path in zip(embedded, report.images):
        assert path == run / "report" / f"{name}.png" and base64.b64decode(data) == path.read_bytes()
        assert pixel_std(path) > 0.02, f"{path.name} looks blank"
    for key in EXPECTED:
        assert f'data-view="{key}"' in page
    assert {f"layers_{m}" for m in ("grad_norm", "update_ratio", "dead_frac")} <= {p.stem for p in report.images}


def test_views_draw_the_numbers_in_the_tables(run):
    d = load_report_data(run)
    members, metrics = d.members, d.metrics
    assert d.by == ["learning_rate"]
    # 3: the final accuracy against the learning rate, mean over seeds, diverged members included
    # (frozen members are still evaluated), on a log axis.
    (plot,) = views.final_vs_hparams(d).blocks
    ax = plot.figure.axes[0]
    expected = members.groupby("learning_rate").final_test_accuracy.mean()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected.to_numpy(), rtol=1e-6)
    assert ax.get_xscale() == "log"
    # 5: a heatmap cell is the mean over the setting's seeds of that layer's value at that step.
    heat = next(b for b in probe_views.layer_heatmaps(d).blocks if b.name == "layers_grad_norm")
    grid = heat.figure.axes[0].images[0].get_array()
    rows = metrics[(metrics.metric == "grad_norm") & (metrics.layer != "")]
    # rows from the input to the output: the MLP's hidden layers by index, then its head
    layers = sorted(set(rows.layer), key=lambda n: (n == "head", int(n.split("_")[-1]) if n != "head" else 0))
    assert [t.get_text() for t in heat.figure.axes[0].get_yticklabels()] == layers
    first = members[members.learning_rate == 0.05].member
    at = rows[rows.member.isin(first) & (rows.step == 20) & (rows.layer == layers[1])].value
    column = list(np.sort(rows.step.unique())).index(20)
    np.testing.assert_allclose(grid[1, column], at.mean(), rtol=1e-6)
    # 7: the dashed edge-of-stability line of each setting is 2 / its learning rate.
    (plot,) = probe_views.curvature(d).blocks
    sharp = next(a for a in plot.figure.axes if a.get_title().startswith("Sharpness (top Hessian eigenvalue)\nsharpness"))
    dashed = sorted(line.get_ydata()[0] for line in sharp.lines if line.get_linestyle() == "--")
    np.testing.assert_allclose(dashed, sorted(2 / np.array([0.05, 0.5, 1e6])), rtol=1e-6)
    # The 1D loss slice at the last step: the mean over seeds at each coordinate.
    (line, _plane) = probe_views.landscape(d).blocks
    ax = line.figure.axes[1]
    rows = metrics[(metrics.metric == "loss_slice_1d") & (metrics.step == 40)]
    mine = rows[rows.member.isin(members[members.learning_rate == 0.5].member)]
    expected = mine.groupby(mine.layer.astype(float)).value.mean()
    np.testing.assert_allclose(ax.lines[1].get_ydata(), expected.to_numpy(), rtol=1e-6)
    # each panel titled in words, its metric's own name on the second line
    titles = {a.get_title().split("\n")[-1] for a in probe_views.other_metrics(d).blocks[0].figure.axes}
    assert {"gsnr", "train_accuracy", "grad_noise_trace"} <= titles and "hessian_trace_stderr" not in titles
    # 4: the divergence table counts the blown-up members.
    table = views.divergence(d).blocks[0]
    assert re.search(r"<td>learning_rate=1e\+06</td><td[^>]*>2</td><td[^>]*>2</td>", table)
    # 1: the ensemble is shown apart from the mean of members, which equals the member table's mean.
    summary = "".join(views.summary(d).blocks)
    assert "Seeds as one ensemble" in summary
    ens = d.results.ensemble(d.by)
    np.testing.assert_allclose(ens.mean_test_accuracy[ens.learning_rate == 0.5],
                               members[members.learning_rate == 0.5].final_test_accuracy.mean(), rtol=1e-6)


def test_a_run_cut_short_gets_a_report_of_what_it_wrote(run, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(run, cut, ignore=shutil.ignore_patterns("report*"))
    for name in ("members.csv", "metrics.parquet", "histograms.parquet", "pairs.parquet", "timing.csv"):
        (cut / name).unlink()
    for part in (cut / "parts").glob("*c000_*"):
        if int(part.stem.split("_")[-1]) > 2:
            part.unlink()
    (cut / "parts" / "members_c000.csv").unlink()
    (cut / "report").mkdir()
    (cut / "report" / "a_view_gone.png").write_bytes(b"from an earlier report")
    titles = []
    report = write_report(cut, aggregate="iqm", progress=titles.append)
    assert not (cut / "report" / "a_view_gone.png").exists()  # report/ holds what report.html shows
    assert sorted((cut / "report").iterdir()) == sorted(report.images) and len(titles) == len(VIEWS)
    assert report.failed == {} and report.views[:2] == ["summary", "curves"]
    page = report.path.read_text()
    assert "not finished" in page and "interquartile mean" in page
    steps = pd.read_parquet(next((cut / "parts").glob("c000_000002.parquet"))).step.max()
    assert steps == 20 and "last step logged: 20" in page


def test_bad_arguments_name_the_fix(run, tmp_path):
    with pytest.raises(ValueError, match="aggregate = 'mode': use one of mean_std, median_iqr, iqm"):
        write_report(run, aggregate="mode")
    with pytest.raises(ValueError, match=r"by = \['lr'\]: not columns"):
        write_report(run, by=["lr"])
    with pytest.raises(FileNotFoundError, match="not a jaxdyn run folder"):
        write_report(tmp_path)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000", "--dump-dom"]


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium found: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on this machine (apt-get install chromium): the browser test is skipped")
    return found


def render(path, tmp_path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<main" in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_the_report_renders_in_a_real_browser(report, tmp_path):
    dom = render(report.path, tmp_path)
    n = len(report.images)
    assert f'data-images="{n}/{n}"' in dom  # every image decoded (the page's own check, run by Chromium)
    assert dom.count('data-decoded="yes"') == n and 'data-decoded="no"' not in dom
    shown = re.findall(r'<section id="([a-z]+)" data-view=', dom)
    assert shown == report.views
    # What a reader sees, read off the rendered page: no sticky header covers member 0's row; panels
    # titled in words with the metric's name beside; layers from input to output as the MLP has them
    # (16-16 hidden, then the head); curves that start at step 0 (the members as initialised).
    assert 'data-first-rows-hidden="0"' in dom
    curves = re.search(r'<section id="curves".*?<figure ([^>]*)>', dom, re.S)[1]
    assert ('data-panels="Training loss (window mean) (cross-entropy) · train_loss | Test loss (cross-entropy) · '
            'test_loss | Test accuracy · test_accuracy"') in curves and 'data-first-x="0"' in curves
    heatmaps = re.findall(r'<figure data-panels="([^"]*): layer × step[^"]*" data-rows="([^"]*)"', dom)
    model_order = ["hidden_0", "hidden_1", "head"]
    for _, rows in heatmaps:  # a metric of some layers only (dead units: the hidden ones) keeps the order
        assert rows.split() == [layer for layer in model_order if layer in rows.split()]
    assert heatmaps and "hidden_0 hidden_1 head" in {rows for _, rows in heatmaps}
    assert "Gradient norm · grad_norm" in {title for title, _ in heatmaps}
    # The check can fail: a cut-short image is reported on the page.
    broken = tmp_path / "broken.html"
    page = report.path.read_text()
    start = page.index("base64,") + len("base64,")
    broken.write_text(page[:start] + "AAAA" + page[start + 400:])
    dom = render(broken, tmp_path)
    assert f'data-images="{n - 1}/{n}"' in dom and f"1 of {n} images could not be shown" in dom


def test_tensorboard_export_round_trips_through_tensorboards_reader(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from jaxdyn.cli import main
    from jaxdyn.export import tag_name

    assert main(["export", "tensorboard", str(run), str(tmp_path / "tb")]) == 0
    res = jaxdyn.load(run)
    # One folder per member; the root's own event file holds the HParams experiment.
    assert sorted(p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()) == [
        f"member_{m:05d}" for m in res.members.member]
    member = int(res.members.member[res.members.diverged_at >= 0].iloc[0])  # NaN losses survive the trip
    events = EventAccumulator(str(tmp_path / "tb" / f"member_{member:05d}"),
                              size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    mine = res.metrics[res.metrics.member == member]
    assert events.Scalars("loss_slice_2d/-1_-1")  # "," cannot be in a tag
    for (metric, layer), rows in mine.groupby(["metric", "layer"]):
        got = events.Scalars(tag_name(metric, layer))
        assert [e.step for e in got] == rows.step.tolist()
        np.testing.assert_array_equal(np.float32([e.value for e in got]), rows.value.to_numpy(np.float32))
    hist = pd.read_parquet(run / "histograms.parquet")
    one = hist[(hist.member == member) & (hist.layer == "hidden_0") & (hist.step == 20)].sort_values("bin")
    (event,) = [e for e in events.Histograms("act_hist/hidden_0") if e.step == 20]
    np.testing.assert_allclose(event.histogram_value.bucket, one.value, rtol=1e-6)
    np.testing.assert_allclose(event.histogram_value.bucket_limit, one.right, rtol=1e-6)
    # The HParams plugin: the member's settings and seeds, and its final metrics as the session's metrics.
    plugin = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
              for tag, content in events.PluginTagToContent("hparams").items()}
    start = plugin["_hparams_/session_start_info"].session_start_info.hparams
    row = res.members.set_index("member").loc[member]
    assert start["learning_rate"].number_value == pytest.approx(row.learning_rate)
    assert start["init_seed"].number_value == row.init_seed and start["cohort"].number_value == 0
    assert "_hparams_/experiment" not in plugin  # one experiment, at the root, for all members
    root = EventAccumulator(str(tmp_path / "tb"))
    root.Reload()
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        root.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["final/train_loss", "final/test_loss",
                                                             "final/test_accuracy", "diverged_at"]
    assert "learning_rate" in [h.name for h in experiment.hparam_infos]
    assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(row.final_test_accuracy)
    with pytest.raises(FileExistsError, match="export into a new folder"):
        from jaxdyn.export import export_tensorboard

        export_tensorboard(run, tmp_path / "tb", progress=False)


def test_a_run_folder_that_cannot_be_written_is_said_before_drawing(run, monkeypatch):
    """The report is written into the run folder; a read-only one (a shared disk) is named with the
    fix, not met as an OSError halfway through the drawing. Read-only for root too: mkdtemp fails."""
    import errno

    from jaxdyn import atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", read_only)
    with pytest.raises(jaxdyn.ConfigError) as refused:
        write_report(run)
    assert f"run folder {run} is not writable (Read-only file system)" in str(refused.value)
    assert "copy the run folder somewhere writable" in str(refused.value)


def test_a_view_that_fails_shows_its_traceback_under_jaxdyn_debug(monkeypatch, capsys):
    """The page keeps the error in the failed view's place; JAXDYN_DEBUG=1 also prints the traceback,
    as it does for every other error the CLI reports."""
    from jaxdyn.report.html import draw_sections

    def broken():
        raise KeyError("no such column")

    entries = {"summary": ("Summary", broken)}
    for debug, shown in (("0", False), ("1", True)):
        monkeypatch.setenv("JAXDYN_DEBUG", debug)
        failed, keys = {}, []
        sections = draw_sections(entries, lambda key, make: make(), None, failed, keys, "view")
        assert failed == {"summary": "KeyError: 'no such column'"} and keys == ["summary"]
        assert 'class="failed"' in sections[0] and "Traceback" in sections[0]
        assert ("Traceback (most recent call last)" in capsys.readouterr().err) is shown
