"""Several runs as one ``Results`` (``jaxdyn.load([a, b])``, ``jaxdyn.compare``) and the comparison
report: each run's numbers are its own run's, the config diff names what differs, a single path
reads as before; ``plot(ax=)`` and the notebook display."""

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import jaxdyn
from jaxdyn import results
from jaxdyn.cli import main
from jaxdyn.comparison import unique_names

RATES = {"slow": 0.05, "fast": 0.5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two tiny runs that differ only in the learning rate: ``{folder name: folder}``."""
    root = tmp_path_factory.mktemp("compare")
    for name, rate in RATES.items():
        cfg = {"study": {"name": "pair", "seeds": 2}, "model": {"hidden": [8]},
               "optim": {"name": "sgd", "learning_rate": rate},
               "train": {"steps": 20, "batch_size": 16, "chunk_steps": 10, "log_every": 5, "eval_every": 1},
               "probes": {"norms": {"every": 0}, "activations": {"every": 0}}}
        jaxdyn.run(cfg, out=root / name, progress=False, summary=False)
    return {name: root / name for name in RATES}


@pytest.fixture(scope="module")
def pair(runs):
    return jaxdyn.load(list(runs.values()))


def test_two_runs_are_one_table_with_a_run_column(runs, pair):
    own = {name: jaxdyn.load(path) for name, path in runs.items()}
    assert list(pair.runs) == ["slow", "fast"] and pair.run_dir is None
    assert pair.members.columns[0] == "run" and pair.metrics.columns[0] == "run"
    assert len(pair.members) == sum(len(r.members) for r in own.values())
    assert len(pair.metrics) == sum(len(r.metrics) for r in own.values())
    for name, r in own.items():  # a run's rows are its own tables, its member ids unchanged
        rows = pair.members[pair.members.run == name].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, r.members, check_exact=True)
        rows = pair.metrics[pair.metrics.run == name].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, r.metrics, check_exact=True)
    diff = pair.config_diff()
    assert list(diff.index) == ["optim.learning_rate"] and diff.loc["optim.learning_rate"].tolist() == [0.05, 0.5]


def test_the_summary_of_the_pair_is_each_runs_own(runs, pair):
    table = pair.summary()
    # the run and the setting that differs are the keys; settings the runs share stay out
    assert list(table.columns[:3]) == ["run", "cohort", "learning_rate"] and "model.hidden" not in table
    assert table.run.tolist() == ["slow", "fast"]
    for name, path in runs.items():
        mine = jaxdyn.load(path).summary()
        row = table[table.run == name].drop(columns=["run", "learning_rate"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(row, mine, check_exact=True)
        assert table.loc[table.run == name, "learning_rate"].item() == pytest.approx(RATES[name])
    # time_to and first_crossing across runs: each member's own crossing, under its run
    crossing = pair.first_crossing("test_accuracy", 0.2)
    assert crossing[["run", "member"]].values.tolist() == [[r, m] for r in runs for m in (0, 1)]
    timed = pair.time_to("test_accuracy", 0.2)
    for name, path in runs.items():
        mine = jaxdyn.load(path)
        np.testing.assert_array_equal(crossing[crossing.run == name].step, mine.first_crossing("test_accuracy", 0.2).step)
        assert timed[timed.run == name].reached.item() == mine.time_to("test_accuracy", 0.2).reached.item()


def test_ensemble_reads_each_runs_own_checkpoints(runs, pair):
    table = pair.ensemble()
    assert table.run.tolist() == ["slow", "fast"]
    for name, path in runs.items():
        mine = jaxdyn.load(path).ensemble()
        got = table[table.run == name]
        np.testing.assert_allclose(got.ensemble_test_accuracy, mine.ensemble_test_accuracy, rtol=0)
        np.testing.assert_allclose(got.mean_test_loss, mine.mean_test_loss, rtol=0)


def test_labels_name_the_runs(runs):
    a, b = runs.values()
    assert list(jaxdyn.load({"base": a, "wide": b}).runs) == ["base", "wide"]
    labelled = jaxdyn.compare(a, b, labels=["base", "wide"])
    assert labelled.members.run.unique().tolist() == ["base", "wide"]
    assert list(labelled.summary().run) == ["base", "wide"]
    with pytest.raises(jaxdyn.ConfigError, match=r"labels = .*one label per run \(2\)"):
        jaxdyn.compare(a, b, labels=["only one"])
    with pytest.raises(jaxdyn.ConfigError, match=r"labels = .*own non-empty label \(x repeats\)"):
        jaxdyn.load([a, b], labels=["x", "x"])
    with pytest.raises(jaxdyn.ConfigError, match=r"runs\[1\] = <ndarray"):
        jaxdyn.compare([a, np.zeros(3)])
    with pytest.raises(jaxdyn.ConfigError, match="labels name several runs"):
        jaxdyn.load(a, labels=["x"])


def test_folders_of_the_same_name_are_told_apart_by_their_parents(runs):
    paths = [Path("/r/exp1/run"), Path("/r/exp2/run"), Path("/r/exp1/other"), Path("/r/exp1/run")]
    assert unique_names(paths) == ["exp1/run", "exp2/run", "other", "exp1/run-2"]
    slow = runs["slow"]
    twice = jaxdyn.compare(slow, slow)  # the same folder twice: the second is slow-2, with the same numbers
    assert list(twice.runs) == ["slow", "slow-2"]
    first, second = (twice.summary().drop(columns="run").iloc[i] for i in (0, 1))
    pd.testing.assert_series_equal(first, second, check_names=False)


def test_a_single_path_reads_as_before(runs):
    res = jaxdyn.load(runs["slow"])
    tables = results.load(runs["slow"])
    assert "run" not in res.members and "run" not in res.metrics and res.runs == {}
    assert res.run_dir == runs["slow"]
    pd.testing.assert_frame_equal(res.members, tables.members)
    pd.testing.assert_frame_equal(res.summary(), results.summarize(tables.members))
    assert res.config_diff().empty


def test_plot_draws_into_the_axis_it_is_given(pair, runs):
    ax = Figure().subplots()
    fig = pair.plot("test_loss", ax=ax)
    assert fig is ax.figure and len(ax.lines) == 2  # one line per setting: a run each
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == \
        ["run=fast, learning_rate=0.5", "run=slow, learning_rate=0.05"]
    alone = jaxdyn.load(runs["slow"]).plot("test_loss")
    assert isinstance(alone, Figure) and len(alone.axes[0].lines) == 1
    with pytest.raises(TypeError, match="ax = 'left': give a matplotlib Axes"):
        pair.plot("test_loss", ax="left")


def test_results_show_briefly_in_a_notebook(pair, runs):
    page = pair._repr_html_()
    means = pair.summary().test_accuracy_mean
    assert "slow" in page and "fast" in page and "2 cohorts × 2 members" in page
    assert all(f"{m:.4g}" in page for m in means)
    assert len(page) < 3000
    line = repr(pair)
    assert line.count("\n") == 0 and "2 runs (slow, fast)" in line
    assert f"{means.min():.4g} to {means.max():.4g}" in line
    one = repr(jaxdyn.load(runs["slow"]))
    assert str(runs["slow"]) in one and "1 cohort × 2 members" in one


def _table(page: str, cls: str) -> list[list[str]]:
    """The rows of the page's ``<table class="cls">`` as cell texts (tags stripped)."""
    body = re.search(rf'<table class="{cls}">(.*?)</table>', page, re.S)[1]
    return [[html.unescape(re.sub("<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_the_cli_writes_one_comparison_report(runs, tmp_path, capsys):
    (runs["slow"] / "report.html").write_text("<html></html>")  # the slow run has a report of its own
    out = tmp_path / "cmp"
    assert main(["report", *map(str, runs.values()), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert str(out / "index.html") in capsys.readouterr().out
    diff = _table(page, "diff")
    assert diff == [["key", "slow", "fast"], ["optim.learning_rate", "0.05", "0.5"]]  # only the key that differs
    assert page.index('data-view="diff"') < page.index('data-view="curves"')  # the diff at the top
    drawn = [json.loads(html.unescape(d)) for d in re.findall(r'data-drawn="([^"]+)"', page)]
    # both runs on each panel's one pair of axes; the learning rate is the diff's, not every line's
    assert sorted(drawn[0]["test_loss"]) == ["fast", "slow"]
    assert set(drawn[0]) == {"train_loss", "test_loss", "test_accuracy"}
    assert (out / "figures" / "curves.png").exists()
    runs_table = _table(page, "facts")
    assert [row[0] for row in runs_table[1:]] == ["slow", "fast"]
    link = re.search(r'<a href="([^"]+)">report</a>', page)[1]
    assert (out / link).resolve() == (runs["slow"] / "report.html").resolve()
    assert runs_table[1][-1] == "report" and runs_table[2][-1].startswith("no report yet")
    assert page.count("<h3>slow") == 1 and page.count("<h3>fast") == 1  # the summaries side by side
    assert main(["report", str(runs["slow"]), str(runs["fast"])]) == 2  # no --out: told to give one
    assert "--out" in capsys.readouterr().err
    # a folder that cannot be written: said before anything is drawn, naming it (/proc refuses even root)
    for bad, why in (("/proc/jaxdyn-cmp", "No such file or directory"), (str(out / "index.html"), "is a file")):
        assert main(["report", *map(str, runs.values()), "--out", bad]) == 2
        err = capsys.readouterr().err
        assert f"out = {bad} is not writable" in err and why in err and "give a folder you can write to" in err


def test_a_run_from_before_init_was_per_member_takes_its_configs_scheme(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["slow"], old)
    members = pd.read_csv(old / "members.csv")
    members.drop(columns="init").to_csv(old / "members.csv", index=False)  # as written before issue 27
    res = jaxdyn.load([old, runs["fast"]])
    assert set(res.members.init) == {"lecun_normal"}  # the default scheme, from the old run's config
    assert "init" not in res.summary().columns  # so it tells no setting apart
