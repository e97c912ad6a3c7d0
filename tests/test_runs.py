"""Whole runs: CLI end to end, outputs, SIGTERM/SIGKILL + resume bitwise, refusing changed configs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.cli import main

TINY_TOML = """
[study]
name = "tiny"
seeds = 2
[model]
hidden = [16]
[optim]
name = "sgd"
[train]
steps = 40
batch_size = 16
chunk_steps = 10
log_every = 5
eval_every = 2
checkpoint_every = 2
[grid]
"optim.learning_rate" = [0.1, 10000.0]
"model.activation" = ["relu", "tanh"]
"""

# Long enough (20 chunks of a few tenths of a second) that a signal sent after the
# first committed checkpoint lands well before the end.
SLOW_TOML = """
[study]
name = "slow"
seeds = 2
[train]
steps = 6000
batch_size = 100
chunk_steps = 300
log_every = 100
eval_every = 3
checkpoint_every = 2
[grid]
"optim.learning_rate" = [1e-3, 1e-2]
"""


def test_cli_runs_a_tiny_study(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--set", "study.seeds=3"]) == 0
    printed = capsys.readouterr().out
    assert "final test accuracy over seeds" in printed and "results in" in printed
    # jaxdyn run ends with the report (no --no-report): every view with data, divergence included.
    assert f"report: {out / 'report.html'} (" in printed and (out / "report" / "divergence.png").exists()

    res = jaxdyn.load(out)
    m = res.members
    assert len(m) == 2 * 2 * 3  # cohorts (activation) x learning rates x seeds
    assert list(m.columns[:5]) == ["member", "cohort", "model.activation", "init_seed", "data_seed"]
    assert {"learning_rate", "final_train_loss", "final_test_loss", "final_test_accuracy", "diverged_at"} <= set(m.columns)
    assert sorted(m.member) == list(range(12)) and sorted(m.cohort.unique()) == [0, 1]
    # lr 1e4 with plain SGD blows a ReLU net up: flagged, not fatal. tanh saturates instead.
    blown = (m.learning_rate == 1e4) & (m["model.activation"] == "relu")
    assert (m[blown].diverged_at >= 0).all() and (m[~blown].diverged_at == -1).all()
    assert m[blown].final_test_accuracy.notna().all()  # frozen members are still evaluated
    assert m[blown].final_train_loss.isna().all()  # the last train window, after divergence: NaN
    assert list(res.metrics.columns) == ["cohort", "member", "step", "metric", "layer", "value"]
    train = res.metrics[(res.metrics.metric == "train_loss") & (res.metrics.member == 0)]
    assert list(train.step) == list(range(5, 45, 5))
    test = res.metrics[res.metrics.metric == "test_accuracy"]
    assert sorted(test.step.unique()) == [0, 20, 40]  # the initial state, then every eval_every = 2 chunks
    last = test[test.step == 40].set_index("member").value.sort_index()
    # members.csv keeps float32 values exactly (shortest round-trip repr).
    final = m.set_index("member").final_test_accuracy.sort_index().to_numpy().astype(np.float32)
    np.testing.assert_array_equal(last.to_numpy(), final)
    assert (out / "config.toml").read_text().count("seeds = 3") == 1
    assert (out / "checkpoints" / "cohort_001").is_dir()
    assert (out / "curves.png").stat().st_size > 10_000

    summary = res.summary()
    assert len(summary) == 4 and (summary.members == 3).all()
    assert summary[summary.learning_rate == 1e4].diverged.tolist() == [3, 0]
    sane = summary[summary.learning_rate == 0.1]
    expected = m[m.learning_rate == 0.1].groupby("cohort").final_test_accuracy.agg(["mean", "std"])
    np.testing.assert_allclose(sane.test_accuracy_mean, expected["mean"])
    np.testing.assert_allclose(sane.test_accuracy_std, expected["std"])


def test_console_script_lists_registries():
    out = subprocess.run(["jaxdyn", "list"], capture_output=True, text=True, check=True).stdout
    assert "adamw" in out and "mnist1d" in out and "lecun_normal" in out


def _start(args, tmp_path, **env_vars):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    return subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", *args, "--no-progress", "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)


def _start_paused(args, tmp_path, **env_vars):
    """A run that stops itself (SIGSTOP, the runner's test hook) right after its first committed
    checkpoint: ``_wait_for_commit`` then returns with it paused there, however fast the machine."""
    proc = _start(args, tmp_path, JAXDYN_PAUSE_AFTER_COMMIT="1", **env_vars)
    proc.paused_at_commit = True
    return proc


def _wait_for_commit(proc):
    """Read ``proc``'s output up to its first committed checkpoint; a run started with
    ``_start_paused`` is then stopped there (waited for through /proc, not a timer)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "checkpoint committed after chunk" in line:
            _wait_until_stopped(proc)
            return lines
    proc.wait()
    raise AssertionError("run ended before a checkpoint was committed:\n" + "".join(lines))


def sigterm_and_resume(args, tmp_path, run: str) -> None:
    """Start ``args`` paused at its first committed checkpoint, stop it with SIGTERM (exit 143),
    then ``--resume run`` to the end."""
    cut = _start_paused(args, tmp_path)
    _wait_for_commit(cut)
    cut.send_signal(signal.SIGTERM)  # taken at the next chunk boundary, once continued
    cut.send_signal(signal.SIGCONT)
    rest, _ = cut.communicate()
    assert cut.returncode == 128 + signal.SIGTERM, rest
    resumed = _start(["--resume", run], tmp_path)
    out, _ = resumed.communicate()
    assert resumed.returncode == 0 and "resumed after chunk" in out, out


def _wait_until_stopped(proc) -> None:
    """Block until ``proc`` is in the stopped state (``T`` in /proc/PID/stat), if it was started paused."""
    if not getattr(proc, "paused_at_commit", False):
        return
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.01)  # a poll for a state, not a wait for time to pass


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run that interrupted-and-resumed runs must match bit for bit."""
    tmp = tmp_path_factory.mktemp("ref")
    (tmp / "slow.toml").write_text(SLOW_TOML)
    proc = _start(["slow.toml", "--out", "ref"], tmp)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    return tmp / "ref"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupt_and_resume_is_bitwise(sig, reference_run, tmp_path):
    (tmp_path / "slow.toml").write_text(SLOW_TOML)
    proc = _start_paused(["slow.toml", "--out", "run"], tmp_path)
    _wait_for_commit(proc)  # paused after its first checkpoint, its lock held
    if sig == signal.SIGKILL:  # mid-run: the report draws what is written so far
        report = jaxdyn.write_report(tmp_path / "run")
        page = report.path.read_text()
        assert report.failed == {} and report.views[:2] == ["summary", "curves"], report.failed
        assert "not finished (still running or interrupted)" in page and "1 of 1" in page
    proc.send_signal(sig)  # taken at the next chunk boundary, once continued
    proc.send_signal(signal.SIGCONT)
    rest, _ = proc.communicate()
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, rest
        assert f"stopped by {sig.name}; checkpoint committed" in rest
        assert "continue with: jaxdyn run --resume run" in rest
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "members.csv").exists()

    if sig == signal.SIGTERM:  # a resume on another device count is refused, and harmless
        other = _start(["--resume", "run"], tmp_path, JAXDYN_CPU_DEVICES="1")
        out, _ = other.communicate()
        assert other.returncode == 2, out
        assert "cannot resume" in out and "it ran on 2 cpu device(s), this process has 1 cpu" in out

    resumed = _start(["--resume", "run"], tmp_path)
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert "resumed after chunk" in out

    got, want = jaxdyn.load(tmp_path / "run"), jaxdyn.load(reference_run)
    pd.testing.assert_frame_equal(got.members, want.members, check_exact=True)
    pd.testing.assert_frame_equal(got.metrics, want.metrics, check_exact=True)
    chex.assert_trees_all_equal(load_state(tmp_path / "run"), load_state(reference_run))


def test_resume_refuses_changed_config(reference_run, tmp_path, capsys):
    changed = tmp_path / "changed.toml"
    changed.write_text(SLOW_TOML.replace("seeds = 2", "seeds = 3"))
    assert main(["run", str(changed), "--resume", str(reference_run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "-seeds = 2" in err and "+seeds = 3" in err
    assert main(["run", "--resume", str(reference_run), "--set", "train.steps=900", "--no-progress"]) == 2


def test_resume_of_finished_run_changes_nothing(reference_run):
    before = jaxdyn.load(reference_run)
    again = jaxdyn.run(resume=reference_run, progress=False)
    pd.testing.assert_frame_equal(again.members, before.members, check_exact=True)
    pd.testing.assert_frame_equal(again.metrics, before.metrics, check_exact=True)


def test_default_study_learns(tmp_path):
    """The default study (MLP 40-100-100-10, ReLU, Adam, 4 lrs x 8 seeds, 6000 steps)."""
    res = jaxdyn.run(out=tmp_path / "default", progress=False)
    m = res.members
    assert len(m) == 32 and (m.diverged_at == -1).all()
    assert m.final_test_accuracy.mean() >= 0.55
    by_lr = m.groupby("learning_rate").final_test_accuracy.mean()
    assert by_lr.min() >= 0.5, by_lr
    curve = res.metrics[res.metrics.metric == "train_loss"].groupby("step").value.mean()
    assert curve.iloc[-1] < 0.5 * curve.iloc[0]


def _as_interrupted(reference_run, dest):
    """A copy of the finished reference run that looks killed after its last checkpoint."""
    import shutil

    shutil.copytree(reference_run, dest)
    for name in ("members.csv", "metrics.parquet", "curves.png", "parts/members_c000.csv"):
        (dest / name).unlink()
    return dest


def _truncate_largest(checkpoint_dir):
    files = [p for p in checkpoint_dir.rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(1000)
    return largest


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "orbax-readback"])
def test_damaged_newest_checkpoint_is_set_aside_and_resume_is_bitwise(manifest, reference_run, tmp_path):
    run = _as_interrupted(reference_run, tmp_path / "run")
    ckpts = cohort_checkpoint_dir(run, 0)
    assert committed_steps(ckpts) == [18, 20]
    if not manifest:  # as if killed between Orbax's commit and the manifest write
        (run / "checkpoints" / "cohort_000.manifest.json").unlink()
    damaged_file = _truncate_largest(ckpts / "20")

    proc = _start(["--resume", "run"], tmp_path)
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    named = f"checkpoint {ckpts.absolute()}/20 is damaged ("
    assert named in out and "resumed after chunk 18 of 20" in out
    if manifest:
        assert f"{damaged_file.absolute()} has 1,000 bytes" in out
    assert "Traceback" not in out
    set_aside = run / "checkpoints" / "damaged" / "cohort_000_chunk20"
    assert set_aside.is_dir() and f"moved to {set_aside.absolute()}" in out  # kept, not deleted

    got, want = jaxdyn.load(run), jaxdyn.load(reference_run)
    pd.testing.assert_frame_equal(got.members, want.members, check_exact=True)
    pd.testing.assert_frame_equal(got.metrics, want.metrics, check_exact=True)
    chex.assert_trees_all_equal(load_state(run), load_state(reference_run))


def test_no_checkpoint_reads_back(reference_run, tmp_path):
    run = _as_interrupted(reference_run, tmp_path / "run")
    for step in (18, 20):
        _truncate_largest(cohort_checkpoint_dir(run, 0) / str(step))
    proc = _start(["--resume", "run"], tmp_path)
    out, _ = proc.communicate()
    assert proc.returncode == 1, out
    assert f"no checkpoint in {cohort_checkpoint_dir(run, 0).absolute()} reads back whole" in out
    assert "Start the study over with a new --out folder" in out and "Traceback" not in out
    assert sorted(p.name for p in (run / "checkpoints" / "damaged").iterdir()) == ["cohort_000_chunk18", "cohort_000_chunk20"]
    again = _start(["--resume", "run"], tmp_path)  # never a silent restart from scratch
    out, _ = again.communicate()
    assert again.returncode == 1 and "every checkpoint of" in out and "was set aside as damaged" in out, out
    assert len(list((run / "parts").glob("c000_*.parquet"))) == 21  # nothing dropped: step 0 and 20 chunks


def test_second_writer_is_refused_and_kill_9_frees_the_lock(reference_run, tmp_path):
    (tmp_path / "slow.toml").write_text(SLOW_TOML)
    first = _start_paused(["slow.toml", "--out", "run"], tmp_path)
    _wait_for_commit(first)  # paused: alive and holding the lock for as long as the checks take
    for args in (["--resume", "run"], ["slow.toml", "--out", "run"]):
        second = _start(args, tmp_path)
        out, _ = second.communicate()
        assert second.returncode == 2, out
        assert f"jaxdyn: error: run is in use by process {first.pid}" in out
    first.send_signal(signal.SIGKILL)
    first.communicate()

    resumed = _start(["--resume", "run"], tmp_path)  # the kernel dropped the dead holder's lock
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    got, want = jaxdyn.load(tmp_path / "run"), jaxdyn.load(reference_run)
    pd.testing.assert_frame_equal(got.members, want.members, check_exact=True)
    pd.testing.assert_frame_equal(got.metrics, want.metrics, check_exact=True)


def test_resume_under_other_xla_settings_warns(reference_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    n_devices = json.loads((run / "run.json").read_text())["n_devices"]
    proc = _start(["--resume", "run"], tmp_path, JAXDYN_CPU_DEVICES=str(n_devices))
    out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "the XLA settings differ" in out and f"JAXDYN_CPU_DEVICES was None, now '{n_devices}'" in out
