"""benchmarks/run_all.py: every benchmark has a plan on every backend, and one that hangs is stopped."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import run_all  # noqa: E402  (benchmarks/ is not a package)


def test_every_benchmark_has_a_plan_and_a_smoke_size():
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"timing", "run_all"}
    for plan in run_all.PLANS.values():
        assert set(plan) == scripts
    assert set(run_all.QUICK) == scripts


def test_a_hanging_benchmark_is_stopped_and_recorded(tmp_path, monkeypatch):
    (tmp_path / "hangs.py").write_text("import time\nprint('started', flush=True)\nwhile True: time.sleep(1)\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    record = run_all.run_one("hangs", [], tmp_path / "out", timeout=3)
    assert record["status"] == "stopped at its time limit"
    assert record["last_lines"] == ["started"]


def test_a_failing_benchmark_is_recorded_with_its_last_lines(tmp_path, monkeypatch):
    (tmp_path / "fails.py").write_text("import sys\nprint('wrote x.json')\nsys.exit('no device')\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    record = run_all.run_one("fails", [], tmp_path / "out", timeout=30)
    assert record["status"] == "failed (exit 1)" and record["exit_code"] == 1
    assert record["wrote"] == ["x.json"] and record["last_lines"][-1] == "no device"


def test_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--only", "population_thruput"])
    assert "no benchmark named population_thruput" in capsys.readouterr().err
