"""A task of your own plugs in as jaxdyn's do: the PBT toy quadratic (examples/custom_task.py)
checked against its closed form, its declared numbers as member axes, and its messages."""

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import jaxdyn
from jaxdyn.config import load_config, to_toml
from jaxdyn.study import expand

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # "custom_task:QUADRATIC" names examples/custom_task.py

import custom_task  # noqa: E402

TOL = 1e-5  # float32 steps of a contraction: a few ulps of θ


def closed_form(h0, h1, lr, t):
    """θ_i(t) = θ_i(0) (1 − 2 lr h_i)^t: gradient ascent on 1.2 − Σ h_i θ_i² is a per-coordinate contraction."""
    return np.asarray(custom_task.THETA0) * (1 - 2 * lr * np.array([h0, h1])) ** t


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return jaxdyn.run(custom_task.STUDY, out=tmp_path_factory.mktemp("toy") / "run", progress=False, summary=False)


def test_members_follow_the_closed_form(toy_run):
    lr, steps = custom_task.STUDY["task"]["learning_rate"], custom_task.STUDY["train"]["steps"]
    m = toy_run.members
    assert len(m) == 4 and sorted(zip(m.h0, m.h1)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert np.allclose(m.learning_rate, lr) and (m.diverged_at == -1).all()
    q = toy_run.frame("test_Q", by=["h0", "h1"])
    for (h0, h1), rows in q.groupby(["h0", "h1"]):
        for step, value in zip(rows.step, rows.value):  # after each chunk: steps 20 and 40
            theta = closed_form(h0, h1, lr, step)
            assert abs(value - (1.2 - np.sum(theta ** 2))) < TOL, (h0, h1, step)
    # Only h = (1, 1) climbs the true objective along every coordinate (the paper's Fig. 2).
    final = q[q.step == steps].set_index(["h0", "h1"]).value
    assert final.idxmax() == (1.0, 1.0) and final[(0.0, 0.0)] == pytest.approx(1.2 - 0.81 - 0.25, abs=TOL)


def test_extract_member_gives_theta(toy_run):
    lr, steps = custom_task.STUDY["task"]["learning_rate"], custom_task.STUDY["train"]["steps"]
    for member in toy_run.members.itertuples():
        got = jaxdyn.extract_member(toy_run.run_dir, member.member)
        assert got.model is None and got.step == steps
        np.testing.assert_allclose(np.asarray(got.variables), closed_form(member.h0, member.h1, lr, steps),
                                   atol=TOL)
        assert float(got.hparams["h0"]) == member.h0


def test_task_numbers_are_member_axes_and_round_trip():
    cfg = load_config(custom_task.STUDY)
    assert not cfg.is_cohort_axis("task.h0") and cfg.member_hparams() == {"h0": 1.0, "h1": 1.0,
                                                                          "learning_rate": 0.01}
    assert load_config(tomllib.loads(to_toml(cfg))) == cfg
    cohorts = expand(cfg)
    assert len(cohorts) == 1 and list(cohorts[0].hparam_names) == ["h0", "h1", "learning_rate"]


@pytest.mark.parametrize("change, message", [
    ({"task": {"kind": "custom_task:QUADRATIC", "h2": 1.0}}, "unknown key task.h2; did you mean 'h1'?"),
    ({"task": {"kind": "custom_task:true_objective"}}, "is a function, not a jaxdyn.tasks.TaskKind"),
    ({"task": {"kind": "custom_task:NOPE"}}, "module 'custom_task' has no attribute 'NOPE'"),
    ({"task": {"kind": "supervise"}}, "task.kind = 'supervise' is not known; did you mean 'supervised'?"),
    ({"grid": {"task.h0": [1.0, -1.0]}}, "task.h0 = -1.0: must lie in [0, inf)"),
    ({"task": {"kind": "custom_task:QUADRATIC", "learning_rate": 0.0}},
     "task.learning_rate = 0.0: must lie in (0, inf)"),
])
def test_bad_task_settings_fail_before_compiling(change, message):
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({**custom_task.STUDY, **change}))
    assert message in str(err.value), str(err.value)
