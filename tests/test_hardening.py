"""A fully diverged cohort, plots of bad values, the run-folder lock, a full disk, error output."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import chex
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn import rundir
from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.cli import main
from jaxdyn.errors import causes, is_disk_full
from jaxdyn.report import plot_curves
from jaxdyn.tables import MetricParts

# ReLU with plain SGD at lr 1e6 blows up within the first chunk; tanh saturates and lives.
DIVERGING = """
[study]
name = "blowup"
seeds = 2
[model]
hidden = [16]
[optim]
name = "sgd"
learning_rate = 1e6
[train]
steps = 40
batch_size = 16
chunk_steps = 10
log_every = 5
eval_every = 2
checkpoint_every = 2
[grid]
"model.activation" = ["relu", "tanh"]
"""


def test_fully_diverged_cohort_stops_and_the_study_goes_on(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(DIVERGING)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "--no-progress", "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert not (out / "report.html").exists() and "report:" not in printed
    assert "every member has diverged; stopped after chunk 1 of 4" in printed
    assert "Diverged entirely" in printed and "model.activation=relu" in printed and "2 of 2 members" in printed

    res = jaxdyn.load(out)
    relu, tanh = (res.members[res.members["model.activation"] == a] for a in ("relu", "tanh"))
    assert (relu.diverged_at >= 0).all() and (relu.diverged_at < 10).all() and (tanh.diverged_at == -1).all()
    # No compute after the chunk in which the last member died: step 0's part and one chunk's, one checkpoint.
    assert [p.name for p in sorted((out / "parts").glob("c000_*.parquet"))] == ["c000_000000.parquet",
                                                                               "c000_000001.parquet"]
    assert committed_steps(cohort_checkpoint_dir(out, 0)) == [1]
    rows = res.metrics[res.metrics.cohort == 0]
    assert rows.step.max() == 10
    assert sorted(rows[rows.metric.str.startswith("test_")].step.unique()) == [0, 10]  # at the start, and where it stopped
    assert relu.final_test_accuracy.notna().all()
    assert res.metrics[res.metrics.cohort == 1].step.max() == 40  # the next cohort ran to the end
    # The checkpoint holds the frozen state: finite, all members dead.
    state = load_state(out, cohort=0)
    assert not np.asarray(state["alive"]).any()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax_leaves(state["params"]))
    assert (out / "curves.png").stat().st_size > 10_000

    # Killed after the stop's checkpoint but before the cohort was marked done: a resume
    # trains nothing more and writes the same tables.
    before = res
    for name in ("members.csv", "metrics.parquet", "parts/members_c000.csv", "parts/members_c001.csv"):
        (out / name).unlink()
    again = jaxdyn.run(resume=out, progress=False, summary=False)
    assert [p.name for p in sorted((out / "parts").glob("c000_*.parquet"))] == ["c000_000000.parquet",
                                                                               "c000_000001.parquet"]
    pd.testing.assert_frame_equal(again.members, before.members, check_exact=True)
    pd.testing.assert_frame_equal(again.metrics, before.metrics, check_exact=True)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def _members(n_settings=3, seeds=2):
    rows = []
    for s in range(n_settings):
        for seed in range(seeds):
            rows.append({"member": len(rows), "cohort": 0, "init_seed": seed, "data_seed": seed,
                         "learning_rate": 10.0 ** -s, "final_test_accuracy": 0.5, "diverged_at": -1})
    return pd.DataFrame(rows)


def test_plots_skip_what_cannot_be_drawn_and_say_so(tmp_path):
    members = _members()
    rows = []
    for m in members.member:
        setting = m // 2
        for step in (10, 20, 30):
            train = {0: 1.0 / step, 1: np.nan, 2: np.inf}[setting]  # 1: all NaN, 2: all inf
            test = {0: 2.0, 1: 0.0, 2: -1.0}[setting]  # zero and negative: not on a log axis
            rows += [(0, m, step, "train_loss", train), (0, m, step, "test_loss", test),
                     (0, m, step, "test_accuracy", 0.1 * (setting + 1))]
    metrics = pd.DataFrame(rows, columns=["cohort", "member", "step", "metric", "value"])
    fig = plot_curves(members, metrics, tmp_path / "curves.png")
    train_ax, test_ax, acc_ax = fig.axes
    assert [line.get_label() for line in train_ax.lines] == ["learning_rate=1"]
    np.testing.assert_allclose(train_ax.lines[0].get_ydata(), [0.1, 0.05, 1 / 30])
    assert "2 of 3 settings not drawn" in train_ax.get_title() and train_ax.get_yscale() == "log"
    assert "2 of 3 settings not drawn: no finite positive values" in test_ax.get_title()
    assert len(acc_ax.lines) == 3 and "not drawn" not in acc_ax.get_title()

    # Every value NaN: the panels say so, nothing is drawn on a log axis, no crash.
    metrics["value"] = np.nan
    fig = plot_curves(members, metrics, tmp_path / "nan.png")
    for ax in fig.axes[:3]:
        assert not ax.lines and ax.get_yscale() == "linear"
        assert any("nothing to draw" in t.get_text() for t in ax.texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [f"learning_rate={lr:g} (nothing to draw)" for lr in (1, 0.1, 0.01)]
    # Finite float32 losses near its maximum: their mean overflows float32, not float64.
    metrics["value"] = np.float32(2e38)
    fig = plot_curves(members, metrics.astype({"value": np.float32}), tmp_path / "huge.png")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2e38] * 3, rtol=1e-6)
    # No rows at all (a run stopped before its first chunk was written).
    plot_curves(members, metrics.iloc[:0], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


TINY = {"study": {"seeds": 1}, "model": {"hidden": [8]},
        "train": {"steps": 20, "batch_size": 8, "chunk_steps": 10, "log_every": 5}}


def test_a_lock_left_behind_frees_the_folder_and_a_used_folder_is_not_empty(tmp_path):
    out = tmp_path / "run"  # held, it is refused before compiling: test_config.py
    out.mkdir()
    rundir._Lock(out / rundir.LOCK_NAME).release()  # a lock file its holder left behind
    res = jaxdyn.run(TINY, out=out, progress=False, summary=False)  # free again
    assert len(res.members) == 1
    with pytest.raises(jaxdyn.ConfigError, match="is not empty"):
        jaxdyn.run(TINY, out=out, progress=False)
    someones = tmp_path / "someones"
    someones.mkdir()
    (someones / "notes.txt").write_text("mine")
    with pytest.raises(jaxdyn.ConfigError, match="is not empty"):
        jaxdyn.run(TINY, out=someones, progress=False)
    assert [p.name for p in someones.iterdir()] == ["notes.txt"]  # no .lock left behind


def test_injected_disk_full_gives_one_short_message(tmp_path, monkeypatch, capsys):
    real_write = MetricParts.write

    def write(self, cohort, chunks_done, frame):
        if chunks_done == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.dir / "c000_000002.parquet"))
        real_write(self, cohort, chunks_done, frame)

    monkeypatch.setattr(MetricParts, "write", write)
    monkeypatch.delenv("JAXDYN_DEBUG", raising=False)
    cfg = dict(TINY, train={**TINY["train"], "checkpoint_every": 1})
    (tmp_path / "c.toml").write_text(_toml(cfg))
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"jaxdyn: error: no space left on device while writing {out}.")
    assert f"The last complete checkpoint is {out.absolute()}/checkpoints/cohort_000/1" in err
    assert f"Free space on that disk, then continue with: jaxdyn run --resume {out}" in err
    assert "Traceback" not in err and len(err.splitlines()) == 2

    monkeypatch.setenv("JAXDYN_DEBUG", "1")
    out2 = tmp_path / "run2"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out2), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "OSError: [Errno 28]" in err
    assert "no space left on device while writing" in err


def test_disk_full_is_recognised_through_wrappers():
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped)
    assert is_disk_full(ValueError("RESOURCE_EXHAUSTED: Failed to write: No space left on device [os_error_code='28']"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    looped, inner = RuntimeError("outer"), OSError(errno.EACCES, "Permission denied")
    looped.__context__, inner.__context__ = inner, looped  # a cycle (a handler re-raising what it caught)
    assert causes(looped) == [looped, inner] and not is_disk_full(looped)


def _toml(raw: dict) -> str:
    import tomli_w

    return tomli_w.dumps(raw)


DISK_TOML = """
[study]
name = "disk"
seeds = 2
[model]
hidden = [32]
[train]
steps = 6000
batch_size = 32
chunk_steps = 100
log_every = 50
eval_every = 5
checkpoint_every = 2
"""

# Inside a private mount namespace: a 4 MiB tmpfs; run until the first checkpoint is
# committed, fill the disk, let the run fail; keep a copy; free the space; resume.
FILL_SCRIPT = textwrap.dedent("""
    set -u
    mnt=$1; out=$2; cfg=$3
    mount -t tmpfs -o size=4m tmpfs "$mnt" || exit 77
    "$PYTHON" -m jaxdyn run "$cfg" --out "$mnt/run" --no-progress 2>"$out/stderr.txt" |
    while IFS= read -r line; do
      printf '%s\\n' "$line" >> "$out/stdout.txt"
      case "$line" in *"checkpoint committed"*)
        [ -e "$mnt/filler" ] || dd if=/dev/zero of="$mnt/filler" bs=64k 2>/dev/null;; esac
    done
    echo "${PIPESTATUS[0]}" > "$out/rc_full.txt"
    cp -a "$mnt/run" "$out/failed"
    rm -f "$mnt/filler"
    "$PYTHON" -m jaxdyn run --resume "$mnt/run" --no-progress --no-report > "$out/resume.txt" 2>&1
    echo $? > "$out/rc_resume.txt"
    cp -a "$mnt/run" "$out/resumed"
""")


def test_full_disk_on_a_small_filesystem_then_resume(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux `unshare` to make a private 4 MiB tmpfs")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.decode().strip()}")
    (tmp_path / "disk.toml").write_text(DISK_TOML)
    (tmp_path / "fill.sh").write_text(FILL_SCRIPT)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "res").mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    env.pop("JAXDYN_DEBUG", None)
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", str(tmp_path / "fill.sh"),
                           str(tmp_path / "mnt"), str(tmp_path / "res"), str(tmp_path / "disk.toml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    if proc.returncode == 77:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here")
    res = tmp_path / "res"
    err = (res / "stderr.txt").read_text()
    run = tmp_path / "mnt" / "run"
    assert (res / "rc_full.txt").read_text().strip() == "1", err
    assert err.startswith(f"jaxdyn: error: no space left on device while writing {run}."), err
    assert f"jaxdyn run --resume {run}" in err and "Traceback" not in err and len(err.splitlines()) <= 3, err
    last = int(err.split("checkpoints/cohort_000/")[1].split(";")[0])
    assert last in committed_steps(cohort_checkpoint_dir(res / "failed", 0))
    load_state(res / "failed")  # the last complete checkpoint reads back

    # Resumed after freeing space: bitwise equal to a run that never hit a full disk.
    assert (res / "rc_resume.txt").read_text().strip() == "0", (res / "resume.txt").read_text()
    reference = jaxdyn.run(tmp_path / "disk.toml", out=tmp_path / "ref", progress=False, summary=False)
    got = jaxdyn.load(res / "resumed")
    pd.testing.assert_frame_equal(got.members, reference.members, check_exact=True)
    pd.testing.assert_frame_equal(got.metrics, reference.metrics, check_exact=True)
    chex.assert_trees_all_equal(load_state(res / "resumed"), load_state(tmp_path / "ref"))


def test_run_json_records_the_xla_environment(tmp_path):
    res = jaxdyn.run(TINY, out=tmp_path / "run", progress=False, summary=False)
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["env"] == {"XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                           "JAXDYN_CPU_DEVICES": os.environ.get("JAXDYN_CPU_DEVICES")}


@pytest.mark.parametrize("env, before, devices, warns", [
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=5", "JAXDYN_CPU_DEVICES": "3"}, "", 3, False),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=5"}, "", 5, False),  # the user's own count is kept
    ({"JAXDYN_CPU_DEVICES": "3"}, "jax.devices(); ", 1, True),  # too late: jax already started
])
def test_cpu_device_count_is_set_before_jax_starts(env, before, devices, warns):
    settings = ("XLA_FLAGS", "JAXDYN_CPU_DEVICES", "JAX_NUM_CPU_DEVICES")
    env = {k: v for k, v in os.environ.items() if k not in settings} | env
    code = f"import warnings, jax; warnings.simplefilter('always'); {before}import jaxdyn; print(len(jax.devices()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.split() == [str(devices)], proc.stderr
    assert ("jax was initialised before jaxdyn was imported" in proc.stderr) == warns, proc.stderr


def test_progress_bar_marks_a_stopped_cohort():
    import io
    import types

    from rich.console import Console

    from jaxdyn.progress import StudyProgress

    sink = io.StringIO()
    cohort = types.SimpleNamespace(index=0, settings={"model.activation": "relu"}, members=_members(1),
                                   config=types.SimpleNamespace(train=types.SimpleNamespace(steps=1000)))
    with StudyProgress(1, console=Console(file=sink, width=200)) as bar:
        bar.start_cohort(cohort, None, 0)
        bar.advance(500, 10.0, 0)
        bar.stop_cohort("every member diverged")
    assert "cohort 1/1 model.activation=relu (every member diverged)" in sink.getvalue()
    assert "step 500/1000" in sink.getvalue() and "alive 0/2" in sink.getvalue()
