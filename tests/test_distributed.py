"""Several processes, one population (jax.distributed, CPU collectives through gloo).

Each process here has one CPU device (two in the federated test); the reference is one
process with the same global devices and member layout, so the rows and the checkpoints must
agree bit for bit."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from jaxdyn.checkpoint import load_state
from jaxdyn.distributed import LOST_PEER_EXIT, Settings
from jaxdyn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STUDY = """
[study]
name = "two-processes"
seeds = 3

[data]
name = "digits"

[model]
kind = "mlp"
hidden = [16]

[optim]
name = "adam"

[train]
steps = {steps}
chunk_steps = 10
log_every = 5
batch_size = 32
eval_every = 2
checkpoint_every = 1

[grid]
"optim.learning_rate" = [1e-3, 3e-3]
"model.activation" = ["relu", "tanh"]

[probes.hessian]
every = 3
iters = 5
"""
TABLES = ("metrics.parquet", "histograms.parquet", "members.csv")
WAIT = 300  # a hang guard for communicate(); the runs take seconds


def _env(devices: int, **extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "JAXDYN_CPU_DEVICES": str(devices), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(i: int, n: int, port: int, args, cwd, init_timeout: int = 120, **env):
    command = [sys.executable, "-m", "jaxdyn", "run", *args, "--no-progress", "--no-report", "--distributed",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i),
               "--init-timeout", str(init_timeout), "--heartbeat-timeout", "20"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env=_env(1, **env))


def _wait_until_stopped(proc) -> None:
    """Block until ``proc`` has stopped itself (``T`` in /proc/PID/stat: the runner's test hook)."""
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.01)  # a poll for a state, not a wait for time to pass


def _read_until_commit(proc) -> list[str]:
    """``proc``'s output up to its first committed checkpoint."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "checkpoint committed after chunk" in line:
            return lines
    raise AssertionError("the run ended before a checkpoint was committed:\n" + "".join(lines))


def _finish(procs) -> list[str]:
    return [p.communicate(timeout=WAIT)[0] for p in procs]


def _study(tmp_path, steps: int = 40) -> str:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(steps=steps))
    return str(path)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the study as one process with two CPU devices."""
    tmp = tmp_path_factory.mktemp("one")
    done = subprocess.run([sys.executable, "-m", "jaxdyn", "run", _study(tmp), "--out", "run", "--no-progress",
                           "--no-report"], cwd=tmp, env=_env(2), capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "run"


def _assert_same_run(a: Path, b: Path) -> None:
    for name in TABLES:
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        left, right = read(a / name), read(b / name)
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)
    assert len(pd.read_parquet(a / "metrics.parquet").query("metric == 'sharpness'")) > 0
    cohorts = sorted(p.name for p in (a / "checkpoints").glob("cohort_*") if p.is_dir())
    assert cohorts == sorted(p.name for p in (b / "checkpoints").glob("cohort_*") if p.is_dir()) and len(cohorts) == 2
    for cohort in range(len(cohorts)):
        left, right = load_state(a, cohort), load_state(b, cohort)
        assert jax.tree.structure(left) == jax.tree.structure(right)
        for x, y in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_processes_equal_one_process_with_two_devices(tmp_path, one_process):
    """``scripts/launch_local.sh 2``: the rows, the member tables and every checkpointed array
    are bitwise those of one process with the same two devices; process 0 writes the report."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "launch_local.sh"), "2", _study(tmp_path), "--out", "run",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(1, PYTHON=sys.executable, JAXDYN_LOG_DIR=str(tmp_path / "logs")), timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "results in run" in done.stdout
    # the report (its ensemble evaluates checkpoints) is written after the processes part, by one process
    assert "report: run/report.html" in done.stdout
    assert "2 × cpu (cpu), over 2 processes (jax.distributed)" in (tmp_path / "run" / "report.html").read_text()
    assert (tmp_path / "logs" / "process_1.log").is_file()
    assert "results in" not in (tmp_path / "logs" / "process_1.log").read_text()  # process 0 speaks
    info = pd.read_json(tmp_path / "run" / "run.json", typ="series")
    assert info["n_processes"] == 2 and info["n_devices"] == 2
    assert not list(tmp_path.glob("run/parts/*process*"))
    _assert_same_run(one_process, tmp_path / "run")


FEDERATED = """
[study]
name = "federated-processes"
seeds = 1

[data]
name = "digits"

[model]
hidden = [16]

[optim]
name = "sgd"
learning_rate = 0.05

[train]
steps = 40
batch_size = 10
chunk_steps = 20
log_every = 10
eval_every = 1

[federated]
clients = 12
local_steps = 5
client_fraction = 0.75
partition = "dirichlet"
"""


def test_a_federation_across_processes_averages_as_one_process_does(tmp_path):
    """2 processes of 2 devices each against one process of 4: the federation's 12 clients lie 3 on
    each device, and the round's average adds the 4 devices' partial sums in the same order
    whatever the layout (with ``psum``, whose order is the collective's, the rows differed in the
    last bits from the second round on)."""
    (tmp_path / "study.toml").write_text(FEDERATED)
    alone = subprocess.run([sys.executable, "-m", "jaxdyn", "run", "study.toml", "--out", "one", "--no-progress",
                            "--no-report"], cwd=tmp_path, env=_env(4), capture_output=True, text=True, timeout=WAIT)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    done = subprocess.run(["bash", str(ROOT / "scripts" / "launch_local.sh"), "2", "study.toml", "--out", "two",
                           "--no-progress", "--no-report"], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(2, PYTHON=sys.executable, JAXDYN_LOG_DIR=str(tmp_path / "logs")), timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr
    info = pd.read_json(tmp_path / "two" / "run.json", typ="series")
    assert info["n_processes"] == 2 and info["n_devices"] == 4
    members = pd.read_csv(tmp_path / "one" / "members.csv")
    assert len(members) == 12 and (members.federation == 0).all()
    for name in ("metrics.parquet", "members.csv", "partition.parquet"):
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        pd.testing.assert_frame_equal(read(tmp_path / "one" / name), read(tmp_path / "two" / name), check_exact=True,
                                      obj=name)
    for x, y in zip(jax.tree.leaves(load_state(tmp_path / "one", 0)), jax.tree.leaves(load_state(tmp_path / "two", 0))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_then_resume_in_two_processes(tmp_path, one_process):
    """A SIGTERM that reaches one process stops both after the same chunk (exit 143, checkpoint
    committed); a 2-process resume finishes the run bitwise as the uninterrupted one."""
    port, study = _free_port(), _study(tmp_path)
    first = _process(0, 2, port, [study, "--out", "run"], tmp_path, JAXDYN_PAUSE_AFTER_COMMIT="1")
    second = _process(1, 2, port, [study, "--out", "run"], tmp_path)
    lines = _read_until_commit(first)
    _wait_until_stopped(first)
    first.send_signal(signal.SIGTERM)  # process 1 hears nothing: the processes agree at the chunk's end
    first.send_signal(signal.SIGCONT)
    outs = _finish([first, second])
    assert [first.returncode, second.returncode] == [143, 143], "".join(lines) + "\n".join(outs)
    assert "stopped after chunk" in outs[0]
    assert "continue with: scripts/launch_local.sh 2 --resume run" in outs[0]  # all processes, not one
    assert not (tmp_path / "run" / "members.csv").exists()
    port = _free_port()
    resumed = [_process(i, 2, port, ["--resume", "run"], tmp_path) for i in range(2)]
    outs = _finish(resumed)
    assert [p.returncode for p in resumed] == [0, 0], "\n".join(outs)
    assert "resumed after chunk" in outs[0]
    _assert_same_run(one_process, tmp_path / "run")

    # another process count: refused before anything runs, saying how it ran
    alone = subprocess.run([sys.executable, "-m", "jaxdyn", "run", "--resume", "run", "--set", "train.steps=60",
                            "--no-progress", "--no-report"], cwd=tmp_path, env=_env(2), capture_output=True,
                           text=True, timeout=WAIT)
    assert alone.returncode == ConfigError.exit_code, alone.stdout + alone.stderr
    assert "ran as 2 process(es) and this run has 1" in alone.stderr
    assert "memory:" not in alone.stderr  # refused before the memory check compiles anything
    assert "scripts/launch_local.sh 2 --resume run (on one machine)" in alone.stderr
    assert "jaxdyn run --resume run --distributed --coordinator HOST:PORT --num-processes 2 --process-id I" in alone.stderr


def test_a_lost_process_ends_the_others_with_a_message(tmp_path):
    """Process 1 killed (-9) mid-run: process 0 stops with exit 75 and says why and how to go on,
    instead of waiting for ever in its next collective."""
    port, study = _free_port(), _study(tmp_path, steps=4000)
    first = _process(0, 2, port, [study, "--out", "run"], tmp_path)
    second = _process(1, 2, port, [study, "--out", "run"], tmp_path)
    lines = _read_until_commit(first)
    second.kill()
    second.communicate(timeout=WAIT)
    out = "".join(lines) + first.communicate(timeout=WAIT)[0]
    assert first.returncode == LOST_PEER_EXIT, out
    assert "another process of this run stopped or cannot be reached" in out
    assert "continue with: scripts/launch_local.sh 2 --resume run (on one machine)" in out


def test_a_process_that_never_starts_ends_the_others(tmp_path):
    """Process 0 of 2 alone: it gives up after --init-timeout with a message, not a hang."""
    proc = _process(0, 2, _free_port(), [_study(tmp_path), "--out", "run"], tmp_path, init_timeout=3)
    out = proc.communicate(timeout=WAIT)[0]
    assert proc.returncode == LOST_PEER_EXIT, out
    assert "waited 3 s" in out and "not every process joined" in out and "--init-timeout" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    (Settings("127.0.0.1:1234", 2, 2), "--process-id 2: give this process's index, 0 to 1"),
    (Settings("127.0.0.1:1234", 0, 0), "--num-processes 0"),
    (Settings("localhost", 2, 0), "give host:port"),
    # each of these crashed the process inside gRPC (port not a number) or waited out the timeout
    (Settings("127.0.0.1:abc", 2, 0), "the port 'abc' is not a number from 1 to 65535"),
    (Settings("127.0.0.1:99999", 2, 0), "the port '99999' is not a number from 1 to 65535"),
    (Settings("http://127.0.0.1:1234", 2, 0), "without a scheme such as http://"),
    (Settings(":1234", 2, 0), "--coordinator ':1234': give host:port"),
    (Settings("::1:1234", 2, 0), r"write an IPv6 host in brackets, e.g. \[::1\]:1234"),
    (Settings("no-such-host.invalid:1234", 2, 0), "cannot resolve the host 'no-such-host.invalid'"),
    (Settings("127.0.0.1:1234", 2, None), "give all of --coordinator, --num-processes and --process-id"),
    (Settings("127.0.0.1:1234", 2, 0, init_timeout=0), "--init-timeout 0: give seconds"),
])
def test_bad_settings_are_refused(settings, message, monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=message):
        settings.resolved()


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:5000")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    monkeypatch.setenv("JAXDYN_INIT_TIMEOUT", "60")
    s = Settings().resolved()
    assert (s.coordinator, s.num_processes, s.process_id, s.init_timeout) == ("10.0.0.1:5000", 4, 3, 60)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:port")
    with pytest.raises(ConfigError, match="JAX_COORDINATOR_ADDRESS '10.0.0.1:port': the port 'port'"):
        Settings().resolved()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:5000")
    monkeypatch.setenv("JAX_PROCESS_ID", "four")
    with pytest.raises(ConfigError, match="JAX_PROCESS_ID='four'"):
        Settings().resolved()


def test_cli_needs_distributed_for_its_options(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jaxdyn", "run", "--num-processes", "2", "--no-progress"],
                          cwd=tmp_path, env=_env(1), capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == ConfigError.exit_code and "add --distributed" in done.stderr


def test_a_folder_process_0_cannot_open_stops_every_process(tmp_path):
    """Process 0 refuses a non-empty --out before anything compiles; process 1 stops too, saying
    why, instead of waiting."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("someone else's")
    port, study = _free_port(), _study(tmp_path)
    procs = [_process(i, 2, port, [study, "--out", "run"], tmp_path) for i in range(2)]
    outs = _finish(procs)
    assert [p.returncode for p in procs] == [ConfigError.exit_code] * 2, "\n".join(outs)
    assert "output folder run is not empty" in outs[0]
    assert "process 0 refused the run folder: output folder run is not empty" in outs[1]
    assert "memory:" not in outs[0]  # the memory check, which compiles the programs, never ran


@pytest.mark.parametrize("writer", [False, True])
def test_a_process_that_cannot_see_the_run_folder_stops_every_process(tmp_path, monkeypatch, writer):
    """The run folder must be on a filesystem every process sees (Orbax writes each process's
    shards there). A follower that cannot find process 0's folder says so, and process 0, told
    through the collective that some process missed it, refuses too: both name --out."""
    from jaxdyn import distributed, processes
    from jaxdyn.errors import ConfigError as Refused

    run_dir = tmp_path / "on-process-0s-disk"
    answers = []
    monkeypatch.setattr(distributed, "count", lambda: 2)
    monkeypatch.setattr(distributed, "index", lambda: 0 if writer else 1)
    monkeypatch.setattr(distributed, "is_writer", lambda: writer)
    monkeypatch.setattr(distributed, "writer_text", lambda text: text if writer else str(run_dir))
    # the other process's answer: when this is the writer, the follower missed the folder
    monkeypatch.setattr(distributed, "any_process", lambda flag: answers.append(flag) or True)
    monkeypatch.setattr(distributed, "wait_for", lambda path, seconds=30.0: path.exists())
    monkeypatch.setattr(distributed, "barrier", lambda name: pytest.fail("no barrier after a refusal"))

    def open_folder():
        run_dir.mkdir()
        (run_dir / "run.json").write_text("{}")
        return contextlib.nullcontext(run_dir)

    with pytest.raises(Refused) as refused:
        with processes.open_run(open_folder, lambda d: None):
            pytest.fail("the run went on")
    who = "another process" if writer else "process 1"
    assert f"{who} cannot see the run folder {run_dir}" in str(refused.value)
    assert "put --out on a filesystem every process shares" in str(refused.value)
    assert answers == [not writer]  # the follower reports its miss; the writer sees its own folder


@pytest.mark.parametrize("sent, raised, text", [
    ("ConfigError\0output folder run is not empty", ConfigError, "process 0 refused the run folder: output folder"),
    ("RunInUse\0run is in use by process 7", "RunInUse", "process 0 refused the run folder: run is in use"),
    ("PermissionError\0[Errno 13] denied", "RunError", "process 0 refused the run folder: PermissionError: "),
])
def test_a_follower_raises_what_process_0_met_in_its_folder_check(monkeypatch, sent, raised, text):
    """Whatever process 0's check of the run folder raised, each follower raises it too (an error it
    does not know as a RunError naming it), rather than waiting for an answer that never comes."""
    import jaxdyn
    from jaxdyn import distributed, processes

    monkeypatch.setattr(distributed, "count", lambda: 2)
    monkeypatch.setattr(distributed, "is_writer", lambda: False)
    monkeypatch.setattr(distributed, "writer_text", lambda text: processes._ERROR + sent)
    kind = getattr(jaxdyn, raised) if isinstance(raised, str) else raised
    with pytest.raises(kind) as refused:
        processes.check_first(lambda: pytest.fail("only process 0 checks"))
    assert type(refused.value) is kind and str(refused.value).startswith(text)
