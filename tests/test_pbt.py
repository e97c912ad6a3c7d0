"""Population-based training in a run: rounds at the right chunks, lineage rows that agree with
the metrics, the members' hyperparameters, and a resume across rounds that is bitwise."""

import numpy as np
import pandas as pd
import pytest
import tomli_w

import jaxdyn
from jaxdyn.config import load_config
from jaxdyn.study import expand

from conftest import assert_same_run
from test_runs import _start, sigterm_and_resume

PBT = {"study": {"name": "pbt", "seeds": 2}, "data": {"name": "digits"}, "model": {"hidden": [16]},
       "optim": {"name": "sgd"},
       "train": {"steps": 200, "batch_size": 32, "chunk_steps": 20, "log_every": 10, "eval_every": 1,
                 "checkpoint_every": 2},
       "grid": {"optim.learning_rate": [1e-4, 1e-3, 1e-2, 1e-1]},
       "pbt": {"every": 2, "ready_after": 1, "metric": "test_accuracy", "fraction": 0.25,
               "hparams": ["optim.learning_rate"], "factors": [0.5, 2.0],
               "bounds": {"optim.learning_rate": [1e-5, 0.3]}}}


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pbt")
    (tmp / "pbt.toml").write_text(tomli_w.dumps(PBT))
    proc = _start(["pbt.toml", "--out", "whole"], tmp)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    return tmp


def test_rounds_come_after_the_burn_in_every_few_chunks_and_never_after_the_last(pbt_run):
    lineage = pd.read_parquet(pbt_run / "whole" / "lineage.parquet")
    assert sorted(lineage.chunk.unique()) == [3, 5, 7, 9]  # ready_after 1, every 2; chunk 10 is the last
    assert (lineage.groupby("chunk").member.count() == 8).all()
    assert list(lineage["round"].unique()) == [1, 2, 3, 4]


def test_lineage_agrees_with_the_logged_metric_and_the_choice_rule(pbt_run):
    lineage = pd.read_parquet(pbt_run / "whole" / "lineage.parquet")
    metrics = jaxdyn.load(pbt_run / "whole").metrics
    accuracy = metrics[metrics.metric == "test_accuracy"].set_index(["member", "step"]).value
    for row in lineage.itertuples():
        assert row.score == accuracy[(row.member, row.step)]
        assert row.parent_score == accuracy[(row.parent, row.step)]
    for _, one in lineage.groupby("chunk"):
        copied = one[one.copied]
        assert len(copied) == 2  # the bottom quarter of 8
        # Truncation: the copiers are the two worst, their donors among the two best (ties by member order).
        ranked = one.sort_values(["score", "member"], ascending=[True, False]).member.to_numpy()
        assert set(copied.member) == set(ranked[:2]) and set(copied.parent) <= set(ranked[-2:])
        kept = one[~one.copied]
        np.testing.assert_array_equal(kept.learning_rate_after, kept.learning_rate_before)
        donors = one.set_index("member").learning_rate_before
        ratio = copied.learning_rate_after.to_numpy() / donors[copied.parent].to_numpy()
        clipped = np.clip(donors[copied.parent].to_numpy()[:, None] * [0.5, 2.0], 1e-5, 0.3)
        assert all(np.isclose(r * d, c).any() for r, d, c in zip(ratio, donors[copied.parent], clipped))


def test_a_round_changes_what_members_train_with(pbt_run):
    """A copied member's learning rate after the round is what its next chunk trains with: the
    member's next round reports it as its value before."""
    lineage = pd.read_parquet(pbt_run / "whole" / "lineage.parquet").sort_values(["member", "chunk"])
    for _, member in lineage.groupby("member"):
        np.testing.assert_array_equal(member.learning_rate_before.to_numpy()[1:],
                                      member.learning_rate_after.to_numpy()[:-1])


def test_a_pbt_run_interrupted_between_rounds_resumes_bitwise(pbt_run, tmp_path):
    (tmp_path / "pbt.toml").write_text(tomli_w.dumps(PBT))
    # Paused after its first committed checkpoint (chunk 2); the SIGTERM lands after chunk 3 and its
    # round, so the resume starts from a state a round made.
    sigterm_and_resume(["pbt.toml", "--out", "cut"], tmp_path, "cut")
    assert_same_run(tmp_path / "cut", pbt_run / "whole")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cut" / "lineage.parquet"),
                                  pd.read_parquet(pbt_run / "whole" / "lineage.parquet"), check_exact=True)


@pytest.mark.parametrize("pbt, message", [
    ({"hparams": ["optim.lr"]}, "pbt.hparams: 'optim.lr' is not a member hyperparameter of this study"),
    ({"every": 3, "metric": "test_accuracy"}, "pbt.metric = 'test_accuracy' is evaluated every train.eval_every = 2"),
    ({"explore": "resample"}, "pbt.explore = \"resample\" draws optim.learning_rate from its range, which is "
                              "unbounded; give [pbt.bounds]"),
    ({"fraction": 0.75}, "pbt.fraction = 0.75: the share copied and copied from, in (0, 0.5]"),
    ({"every": 100}, "pbt: the first round would come after chunk 100, but the run has 10 chunks"),
    ({"metric": "accuracy"}, "pbt.metric = 'accuracy': rank members by a logged train_* or test_* metric"),
    ({"bounds": {"optim.momentum": [0, 1]}}, "pbt.bounds.\"optim.momentum\" bounds a hyperparameter pbt.hparams "
                                             "does not explore"),
])
def test_bad_pbt_settings_are_refused_before_anything_runs(pbt, message):
    cfg = {"train": {"steps": 200, "chunk_steps": 20, "log_every": 10, "eval_every": 2}, "pbt": pbt}
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config(cfg))
    assert message in str(err.value)


def test_a_members_schedule_follows_its_ancestors(pbt_run):
    """``Results.schedule`` walks the lineage back from the end; here the same paths are built
    forward, round by round (a member's path is its parent's path so far, then its new value)."""
    res = jaxdyn.load(pbt_run / "whole")
    lineage = res.lineage()
    start = res.members.set_index("member").learning_rate
    paths = {m: [(0, m, np.float32(start[m]))] for m in res.members.member}
    for _, rows in lineage.sort_values("round").groupby("round"):
        paths = {row.member: [*paths[row.parent], (row.step, row.member, row.learning_rate_after)]
                 for row in rows.itertuples()}
    for member, path in paths.items():
        got = res.schedule(member)
        assert list(got.step) == [s for s, _, _ in path] and list(got.member) == [m for _, m, _ in path]
        np.testing.assert_array_equal(got.learning_rate.to_numpy(np.float32), [v for _, _, v in path])
    with pytest.raises(KeyError, match="no member 99"):
        res.schedule(99)


def test_dry_run_shows_the_pbt_plan(tmp_path, capsys):
    from jaxdyn.cli import main

    (tmp_path / "pbt.toml").write_text(tomli_w.dumps(PBT))
    assert main(["run", str(tmp_path / "pbt.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("PBT: rounds after chunks 3, 5, 7, 9, ranking by test_accuracy (max), 1 population(s) per cohort; "
            "exploit: the bottom 0.25 copy from the top 0.25; explore: perturb by [0.5, 2.0]; "
            "optim.learning_rate in [1e-05, 0.3]") in out
    assert "GiB_peak" in out and not (tmp_path / "runs").exists()


def test_a_diverged_member_is_exploited_and_trains_on(tmp_path):
    """A member frozen by the divergence guard (score NaN) always copies a donor at the next round,
    is never one, and trains on from the donor's state with an explored, bounded rate."""
    cfg = {"study": {"name": "div", "seeds": 2}, "data": {"name": "digits"}, "model": {"hidden": [8]},
           "optim": {"name": "sgd"},
           "train": {"steps": 60, "batch_size": 32, "chunk_steps": 10, "log_every": 10, "eval_every": 1},
           "grid": {"optim.learning_rate": [1e-2, 1e-1, 1e30]},
           "pbt": {"every": 2, "metric": "train_loss", "mode": "min", "hparams": ["optim.learning_rate"],
                   "bounds": {"optim.learning_rate": [1e-4, 1.0]}}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    first = res.lineage().query("chunk == 2").set_index("member")
    wild = res.members.member[res.members.learning_rate == 1e30].to_list()
    assert first.loc[wild].score.isna().all() and first.loc[wild].copied.all()
    assert not set(first.parent) & set(wild)  # never a donor
    assert (first.loc[wild].learning_rate_after <= 1.0).all()
    assert np.isfinite(res.members.set_index("member").loc[wild].final_train_loss).all()


def test_a_finished_run_continued_for_more_steps_equals_the_longer_run(pbt_run, tmp_path):
    """140 steps, then ``--resume --set train.steps=200``: chunk 7 was the short run's last (its
    probes all due, no round); the continued run writes it again as the longer run did, runs the
    round due there, and ends bit for bit where the 200-step run ended."""
    short = {**PBT, "train": {**PBT["train"], "steps": 140}}
    (tmp_path / "pbt.toml").write_text(tomli_w.dumps(short))
    proc = _start(["pbt.toml", "--out", "grown"], tmp_path)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert 7 not in set(pd.read_parquet(tmp_path / "grown" / "lineage.parquet").chunk)
    proc = _start(["--resume", "grown", "--set", "train.steps=200"], tmp_path)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "continuing grown from 140 to 200 steps" in out and "chunk 7 reopened" in out
    assert_same_run(tmp_path / "grown", pbt_run / "whole")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "grown" / "lineage.parquet"),
                                  pd.read_parquet(pbt_run / "whole" / "lineage.parquet"), check_exact=True)
    assert load_config(tmp_path / "grown" / "config.toml").train.steps == 200


@pytest.mark.parametrize("change, message", [
    (["--set", "train.steps=100"], "fewer than the run's 200"),
    (["--set", "train.steps=400", "--set", "train.batch_size=16"], "refusing to resume"),
])
def test_a_resume_changes_nothing_but_more_steps(pbt_run, change, message):
    proc = _start(["--resume", "whole", *change], pbt_run)
    out, _ = proc.communicate()
    assert proc.returncode == 2 and message in out, out


def test_more_steps_are_refused_when_the_schedule_decays_over_the_run(tmp_path):
    from jaxdyn.rundir import resume_change

    cosine = {**PBT, "optim": {"name": "sgd", "schedule": "cosine"}}
    saved = load_config(cosine)
    with pytest.raises(jaxdyn.ConfigError, match="decays over train.steps"):
        resume_change(saved, load_config(cosine, ["train.steps=400"]), tmp_path)
    fixed = load_config(cosine, ["optim.decay_steps=300"])
    assert resume_change(fixed, load_config(fixed, ["train.steps=400"]), tmp_path) == 200


def test_a_replay_trains_with_the_recorded_schedule(pbt_run):
    whole = jaxdyn.load(pbt_run / "whole")
    lineage = whole.lineage()
    copied = lineage[lineage.copied].member.unique()
    member = int(lineage[lineage.member.isin(copied)].sort_values("step").member.iloc[-1])  # copied at least once
    proc = _start(["--replay", f"whole:{member}", "--out", "replay"], pbt_run)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    replay = jaxdyn.load(pbt_run / "replay")
    want = whole.schedule(member)
    assert len(replay.members) == 1
    root = whole.members.set_index("member").loc[want.member.iloc[0]]
    got_member = replay.members.iloc[0]
    assert (got_member.init_seed, got_member.data_seed) == (root.init_seed, root.data_seed)
    # The replay's own lineage rows read the values back from its training state between chunks.
    got = replay.schedule(0)
    np.testing.assert_array_equal(got.step, want.step)
    np.testing.assert_array_equal(got.learning_rate.to_numpy(np.float32), want.learning_rate.to_numpy(np.float32))
    rounds = replay.lineage()
    np.testing.assert_array_equal(rounds.learning_rate_before.to_numpy()[1:],
                                  rounds.learning_rate_after.to_numpy()[:-1])


def test_a_replay_of_a_member_never_copied_retraces_it(pbt_run):
    """A member that never copied anyone trained on its own schedule alone: its replay (one
    member, the same seeds and values) follows the same loss curve, to float32 rounding."""
    whole = jaxdyn.load(pbt_run / "whole")
    lineage = whole.lineage()
    never = sorted(set(lineage.member) - set(lineage[lineage.copied].member))
    proc = _start(["--replay", f"whole:{never[0]}", "--out", f"replay{never[0]}"], pbt_run)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    got = jaxdyn.load(pbt_run / f"replay{never[0]}").frame("train_loss").value.to_numpy()
    want = whole.frame("train_loss")
    np.testing.assert_allclose(got, want[want.member == never[0]].value.to_numpy(), rtol=1e-4)


@pytest.mark.parametrize("target, message", [
    ("whole", "give RUN_DIR:MEMBER"), ("whole:99", "no member 99"), ("nowhere:1", "no config.toml there"),
])
def test_a_bad_replay_target_is_refused(pbt_run, target, message):
    proc = _start(["--replay", target], pbt_run)
    out, _ = proc.communicate()
    assert proc.returncode == 2 and message in out, out
