"""The memory promise: an estimate never below a real run's peak resident memory, a study that
cannot fit refused before any run folder, and a stop request honoured within a bounded time."""

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from jaxdyn import memory
from jaxdyn.cli import main
from jaxdyn.stopping import StopFlag

# Each run's estimate is at most this many times its measured peak RSS (and never below it).
FACTOR = 1.5

COMMON = """
[train]
steps = 20
batch_size = 32
chunk_steps = 10
log_every = 5
eval_every = 1
checkpoint_every = 1
"""
STUDIES = {
    "mlp": '[model]\nkind = "mlp"\nhidden = [64]\n',
    "cnn": '[model]\nkind = "cnn"\nchannels = [8, 8]\nkernels = [3, 3]\nstrides = [1, 1]\npadding = [1, 1]\nhidden = [32]\n',
    "lstm": '[model]\nkind = "rnn"\ncell = "lstm"\nhidden_size = 16\n',
}
# (study, seeds), two runs at a time (2 cores; under 2.5 GiB together): a few members, where
# the runtime dominates, and many, where the programs' buffers do (the MLP's and the CNN's
# evaluation, the LSTM's activation probe). The CNN and LSTM with 2 members measured 1.15 and
# 1.14 as the MLP's does; they are left out to keep the suite short.
PAIRS = [(("mlp", 2), ("cnn", 80)), (("lstm", 30), ("mlp", 600))]


def _study(tmp_path, kind: str, seeds: int):
    path = tmp_path / f"{kind}{seeds}.toml"
    path.write_text(f'[study]\nname = "{kind}"\nseeds = {seeds}\n' + STUDIES[kind] + COMMON)
    return path


# A forked child's peak RSS (ru_maxrss) counts the pages it shared with its parent at the fork,
# and exec keeps that count: a run forked from a big test worker would read as big as the worker.
# So each run is started by a small launcher process, which reports its child's own ru_maxrss.
LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, usage = os.wait4(p.pid, 0); "
            "print(f'peak_rss_kib={usage.ru_maxrss}', flush=True); sys.exit(os.waitstatus_to_exitcode(status))")


def _run(path, out):
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "jaxdyn", "run", str(path),
                             "--out", str(out), "--no-progress", "--no-report"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(proc) -> tuple[str, int]:
    """The run's output and its peak RSS in bytes, as the launcher measured it (``wait4``)."""
    output, _ = proc.communicate()
    assert proc.returncode == 0, output
    return output, int(re.search(r"peak_rss_kib=(\d+)", output).group(1)) * 1024


def _logged_estimate(output: str) -> int:
    """The smallest value the logged estimate (rounded to 0.01 GiB or 0.1 MiB) can stand for."""
    number, unit = re.search(r"memory: cohort 0 needs about ([\d.]+) (GiB|MiB)", output).groups()
    return int((float(number) - (0.005 if unit == "GiB" else 0.05)) * (2**30 if unit == "GiB" else 2**20))


def test_estimate_is_never_below_the_peak_rss_of_real_runs(tmp_path):
    results = {}
    for pair in PAIRS:
        procs = {size: _run(_study(tmp_path, *size), tmp_path / f"run_{size[0]}{size[1]}") for size in pair}
        for size, proc in procs.items():
            output, peak = _finish(proc)
            results[size] = (_logged_estimate(output), peak)
    table = "\n".join(f"{k} x{s}: estimate {e / 2**20:.0f} MiB, peak {p / 2**20:.0f} MiB, ratio {e / p:.2f}"
                      for (k, s), (e, p) in results.items())
    print(table)
    for estimate, peak in results.values():
        assert peak <= estimate <= FACTOR * peak, table


TINY = '[study]\nname = "tiny"\nseeds = 2\n[model]\nhidden = [8]\n' + COMMON


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_study_that_cannot_fit_is_refused_before_any_folder(dry_run, tmp_path, monkeypatch, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "run"
    monkeypatch.setattr(memory, "available_bytes", lambda: 0)  # only what the process holds already
    assert main(["run", str(path), "--out", str(out), *(["--dry-run"] if dry_run else [])]) == 2
    err = capsys.readouterr().err
    assert re.search(r"cohort 0 needs about [\d.]+ [GM]iB at its peak but [\d.]+ [GM]iB is available: 2 members; "
                     r"runtime after compiling .*population state .* program \(XLA temporaries", err), err
    assert "fewer seeds or grid values" in err and "train.chunk_steps" in err and "smaller model" in err
    assert not out.exists()


def test_dry_run_shows_the_estimate(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert main(["run", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    number, unit = re.search(r"memory: cohort 0 needs about ([\d.]+) (GiB|MiB)", printed).groups()
    header, row = printed.splitlines()[1:3]
    shown = float(row.split()[header.split().index("GiB_peak")])  # the table, in GiB to 2 places
    assert shown == pytest.approx(float(number) / (1 if unit == "GiB" else 1024), abs=0.006)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_stop_grace_follows_the_slowest_chunk_within_bounds():
    clock = FakeClock()
    stop = StopFlag(clock=clock)
    assert stop.grace() == StopFlag.GRACE_CAP  # before any chunk: compiling, first chunk
    stop.chunks_start()
    clock.now += 1.0
    stop.chunk_done()
    assert stop.grace() == StopFlag.GRACE_FLOOR
    clock.now += 4.0
    stop.chunk_done()
    assert stop.grace() == 8.0  # twice the slowest chunk
    clock.now += 60.0
    stop.chunk_done()
    assert stop.grace() == StopFlag.GRACE_CAP


def test_a_chunk_past_its_grace_is_abandoned_naming_the_checkpoint_kept(tmp_path, capsys):
    clock, exits = FakeClock(), []
    stop = StopFlag(clock=clock, exit=exits.append)
    stop.chunks_start()
    clock.now += 3.0
    stop.chunk_done()
    stop.committed(0, 2, tmp_path)
    stop.on_signal(signal.SIGTERM)
    assert stop.requested and stop.deadline == clock.now + 6.0
    clock.now += 5.9
    stop.check_deadline()
    assert exits == []  # still within its grace: the chunk may finish and be saved
    clock.now += 0.1
    stop.check_deadline()
    assert exits == [143]
    log = capsys.readouterr().out
    assert "SIGTERM: the chunk in flight did not finish within 6 s: it is abandoned; cohort 0's last committed " \
           f"checkpoint is after chunk 2, which jaxdyn run --resume {tmp_path} continues from" in log


def test_a_second_signal_ends_the_process_at_once(capsys):
    exits = []
    stop = StopFlag(clock=FakeClock(), exit=exits.append)
    stop.on_signal(signal.SIGINT)
    stop.on_signal(signal.SIGTERM)
    assert exits == [143]
    assert "a second SIGTERM: it is abandoned; no checkpoint was committed yet" in capsys.readouterr().out


def test_the_watchdog_hears_signals_while_the_main_thread_waits():
    # The main thread blocks as it does inside XLA's wait for a chunk; the signal's byte wakes
    # the watchdog, and a second signal ends the (here pretended) process at once.
    ended = threading.Event()
    codes = []
    before = signal.getsignal(signal.SIGTERM)
    with StopFlag(exit=lambda code: (codes.append(code), ended.set())) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert ended.wait(timeout=60), "the watchdog did not react"  # a hang guard, not a timing
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert codes == [143]
    assert signal.getsignal(signal.SIGTERM) is before
