"""The Python API for exploring a run: aggregates over seeds (the IQM's bootstrap interval against
an explicit loop), Results.frame / summary / plot, and extract_member against members.csv."""

import io

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest

import jaxdyn
from jaxdyn.aggregate import aggregate, iqm, stratified_bootstrap_ci
from jaxdyn.data import load_dataset


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9)) == 4.5  # 3, 4, 5, 6
    assert iqm([[1.0, 100.0], [2.0, 3.0]]) == 2.5  # pooled over tasks: 2, 3


def test_the_stratified_bootstrap_matches_an_explicit_loop():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(6, 3)) + np.array([0.0, 1.0, 5.0])  # 6 runs of 3 tasks
    low, high = stratified_bootstrap_ci(scores, reps=500, seed=3)
    picks = np.random.default_rng(3).integers(0, 6, size=(500, 6, 3))
    values = []
    for rep in range(500):
        pooled = sorted(scores[picks[rep, i, j], j] for i in range(6) for j in range(3))  # each task from its own runs
        cut = len(pooled) // 4
        values.append(np.mean(pooled[cut: len(pooled) - cut]))
    np.testing.assert_allclose([low, high], np.percentile(values, [2.5, 97.5]), rtol=1e-12)
    assert low < iqm(scores) < high


def test_aggregates_leave_out_nan_and_follow_their_definitions():
    x = np.array([0.1, 0.4, 0.2, np.nan, 0.9, 0.3])
    finite = x[np.isfinite(x)]
    mean, lo, hi = aggregate(x, "mean_std")
    np.testing.assert_allclose([mean, hi - mean], [finite.mean(), finite.std(ddof=1)])
    np.testing.assert_allclose(aggregate(x, "median_iqr"), [0.3, 0.2, 0.4])
    centre, lo, hi = aggregate(x, "iqm")
    assert centre == iqm(finite) and lo <= centre <= hi
    assert np.isnan(aggregate([np.nan], "iqm")[0])
    with pytest.raises(ValueError, match="use one of mean_std, median_iqr, iqm"):
        aggregate(x, "mean")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = {"study": {"seeds": 3}, "data": {"name": "digits"},
           "model": {"kind": "mlp", "hidden": [32], "norm": "batch"},
           "train": {"steps": 300, "batch_size": 64, "chunk_steps": 100, "log_every": 50},
           "grid": {"optim.learning_rate": [1e-3, 1e-2]}}
    return jaxdyn.run(cfg, out=tmp_path_factory.mktemp("explore") / "run", progress=False, summary=False)


def test_frame_summary_and_plot_of_a_run(run):
    frame = run.frame("test_accuracy")
    assert list(frame.columns) == ["member", "step", "value", "learning_rate", "init_seed"]
    assert len(frame) == 6 * 3 and set(frame.step) == {0, 200, 300}  # the start, then every 2 chunks and the end
    norms = run.frame("weight_norm", by=[], layer="hidden_0")
    assert list(norms.columns) == ["member", "step", "value", "init_seed"] and (norms.value > 0).all()
    with pytest.raises(KeyError, match="metrics: .*test_accuracy"):
        run.frame("test_acuracy")
    for how, cols in (("median_iqr", ["test_accuracy_median", "test_accuracy_q25", "test_accuracy_q75"]),
                      ("iqm", ["test_accuracy_iqm", "test_accuracy_ci_low", "test_accuracy_ci_high"])):
        table = run.summary(aggregate=how)
        assert list(table.columns) == ["cohort", "learning_rate", "members", *cols, "diverged"]
        for row in table.itertuples():
            finals = run.members[run.members.learning_rate == row.learning_rate].final_test_accuracy
            np.testing.assert_allclose([getattr(row, c) for c in cols], aggregate(finals.to_numpy(), how))
    fig = run.plot("train_loss", aggregate="median_iqr")
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_yscale() == "log"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert plt.imread(io.BytesIO(buffer.getvalue()))[..., :3].std() > 0.05


def test_an_extracted_member_reproduces_its_final_test_accuracy(run):
    data = load_dataset("digits")
    for member in (0, 4):
        m = jaxdyn.extract_member(run.run_dir, member)
        assert m.step == 300 and "batch_stats" in m.variables and m.cohort == 0
        np.testing.assert_allclose(float(m.hparams["learning_rate"]), run.members.learning_rate[member], rtol=1e-6)
        logits = m.model.apply(m.variables, data.x_test, train=False, hparams=m.hparams)
        accuracy = float(np.mean(np.argmax(logits, axis=1) == data.y_test))
        np.testing.assert_allclose(accuracy, run.members.final_test_accuracy[member], atol=1e-6)
        assert jax.tree.leaves(m.variables["batch_stats"])[0].shape[-1] == 32
    with pytest.raises(KeyError, match="members are 0..5"):
        jaxdyn.extract_member(run.run_dir, 6)


def test_load_and_extract_work_on_a_run_cut_short(run, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(run.run_dir, cut)
    for name in ("members.csv", "metrics.parquet", "parts/members_c000.csv", "parts/c000_000003.parquet",
                 "parts/samples_c000_000003.parquet"):
        (cut / name).unlink(missing_ok=True)  # as if killed during chunk 3, before the end of the study
    partial = jaxdyn.load(cut)
    assert list(partial.members.columns) == list(run.members.columns) and len(partial.members) == 6
    at_200 = run.metrics[(run.metrics.metric == "test_accuracy") & (run.metrics.step == 200)].set_index("member")
    np.testing.assert_array_equal(partial.members.set_index("member").final_test_accuracy,
                                  at_200.value.reindex(range(6)).to_numpy())
    assert (partial.members.diverged_at == -1).all() and partial.metrics.step.max() == 200
    assert jaxdyn.extract_member(cut, 2).step == 300  # the checkpoint after chunk 3 was already committed
    with pytest.raises(FileNotFoundError, match="no config.toml"):
        jaxdyn.load(tmp_path)


def test_dry_run_counts_match_the_real_run(tmp_path, capsys):
    import re

    from jaxdyn.cli import main
    from jaxdyn.study import plan

    cfg = {"study": {"seeds": 2}, "model": {"kind": "mlp"},
           "train": {"steps": 40, "batch_size": 32, "chunk_steps": 10, "log_every": 10},
           "probes": {"hessian": {"every": 2, "iters": 4}},  # due with the defaults after chunks 2 and 4 only
           "grid": {"model.hidden": [[8], [16]], "optim.learning_rate": [1e-3, 1e-2]}}
    table = plan(cfg)
    assert list(table.members) == [4, 4] and list(table.programs) == [5, 5]  # init, chunk, evaluation, 2 probe sets
    capsys.readouterr()
    jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    compiled = [int(n) for n in re.findall(r"cohort \d+: (\d+) programs compiled", capsys.readouterr().out)]
    assert compiled == list(table.programs)
    gan = {"task": {"kind": "gan"}, "data": {"name": "ring"}, "train": cfg["train"],
           "gan": {"generator": {"hidden": [8]}, "discriminator": {"hidden": [8]}}}
    assert list(plan(gan).programs) == [5]  # and the samples; the default probes of both players are one program
    assert main(["run", "--dry-run", "--set", "study.seeds=3"]) == 0
    printed = capsys.readouterr().out
    assert "1 cohorts, 12 members (12 with padding), 4 programs to compile; nothing was trained" in printed


def test_the_ensemble_of_seeds_is_scored_apart_from_the_mean_of_members(run):
    data = load_dataset("digits")
    table = run.ensemble()
    assert list(table.columns) == ["learning_rate", "members", "step", "ensemble_test_loss", "mean_test_loss",
                                   "ensemble_test_accuracy", "mean_test_accuracy"]
    assert (table.step == 300).all()  # the state the ensemble scored: the final checkpoint
    for row in table.itertuples():
        ids = run.members[run.members.learning_rate == row.learning_rate].member
        probs = []
        for member in ids:  # the members' own predictions, through extract_member
            m = jaxdyn.extract_member(run.run_dir, int(member))
            probs.append(jax.nn.softmax(m.model.apply(m.variables, data.x_test, train=False, hparams=m.hparams)))
        mean = np.mean(probs, axis=0)
        np.testing.assert_allclose(row.ensemble_test_accuracy, np.mean(mean.argmax(1) == data.y_test), atol=1e-9)
        np.testing.assert_allclose(row.ensemble_test_loss, -np.mean(np.log(mean[np.arange(len(mean)), data.y_test])),
                                   rtol=1e-4)
        np.testing.assert_allclose(row.mean_test_accuracy, run.members.final_test_accuracy[ids].mean())
        assert row.members == 3
