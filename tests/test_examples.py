"""Every shipped example study is valid: it loads, expands and builds its models without compiling."""

import sys
from pathlib import Path

import pytest

import jaxdyn

from jaxdyn.config import load_config
from jaxdyn.memory import member_shapes
from jaxdyn.study import expand

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


def test_the_catalogue_is_there():
    names = {p.stem for p in EXAMPLES}
    assert {"mnist1d_linear", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru", "activation_init", "optimizers",
            "batchnorm_dropout", "l2_sweep", "lr_schedules", "adding_T10", "adding_T50", "adding_T100",
            "adding_T200", "gan_ring", "gan_grid", "gan_digits"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_expands_and_builds(path):
    cohorts = expand(load_config(path))
    for cohort in cohorts:
        member_shapes(cohort)  # jax.eval_shape of init, with each member's inputs: no compile


def test_paper_architectures():
    head = lambda name: expand(load_config(EXAMPLES[0].parent / f"mnist1d_{name}.toml"))[0]
    for name, features in (("cnn", 125), ("gru", 480), ("linear", 40), ("mlp", 100)):
        cohort = head(name)
        state = member_shapes(cohort)
        assert state.params["head"]["kernel"].shape == (features, 10), name
        assert len(cohort.members) == 8


def test_vanishing_gradient_script_runs_and_an_lstm_beats_the_baseline(tmp_path, capsys):
    import importlib.util

    path = EXAMPLES[0].parent.parent / "scripts" / "vanishing_gradients.py"
    spec = importlib.util.spec_from_file_location("vanishing_gradients", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--task", "adding", "--lengths", "10", "--arms", "elman,lstm,gru", "--seeds", "2",
                        "--steps", "500", "--out", str(tmp_path), "--results", ""])
    assert [r["arm"] for r in rows] == ["elman", "lstm", "gru"] and all(r["seeds"] == 2 for r in rows)
    lstm = next(r for r in rows if r["arm"] == "lstm")
    assert lstm["mean"] < script.ADDING_BASELINE / 2  # T = 10 is short enough to learn in 500 steps
    assert lstm["params"] == 17217  # 4 gates x (64 x (2 + 64) + 64) + the head's 64 + 1
    assert (tmp_path / "vanishing_gradients.png").stat().st_size > 0
    assert (tmp_path / "adding_T10" / "rnn" / "members.csv").exists()
    printed = capsys.readouterr().out
    assert "predict the mean (1/6): 0.167" in printed and "  lstm: " in printed


def test_edge_of_stability_script_sharpness_reaches_two_over_eta(tmp_path):
    import importlib.util

    path = EXAMPLES[0].parent.parent / "scripts" / "edge_of_stability.py"
    spec = importlib.util.spec_from_file_location("edge_of_stability", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--seeds", "1", "--steps", "600", "--out", str(tmp_path), "--results", ""])
    assert [r["learning_rate"] for r in rows] == [0.05, 0.07, 0.1, 0.14]
    fastest = rows[-1]  # η = 0.14 reaches 2/η within a few hundred steps and stays there
    assert 0.85 < fastest["plateau_x_lr_over_2"] < 1.15, fastest
    assert (tmp_path / "edge_of_stability.png").stat().st_size > 0


def test_gan_mode_collapse_script_covers_the_ring(tmp_path, capsys):
    import importlib.util

    path = EXAMPLES[0].parent.parent / "scripts" / "gan_mode_collapse.py"
    spec = importlib.util.spec_from_file_location("gan_mode_collapse", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.main(["--data", "ring", "--seeds", "2", "--steps", "2000", "--out", str(tmp_path), "--results", "",
                          "--overrides", "gan.loss=minimax", "gan.d_learning_rate=0.001", "train.chunk_steps=500"])
    rows = report["ring"]["rows"]
    assert [(r["loss"], r["g_learning_rate"]) for r in rows] == [("minimax", 0.0003), ("minimax", 0.001)]
    assert all(r["seeds"] == 2 for r in rows) and max(r["modes"] for r in rows) >= 6  # a learning check, not a smoke test
    assert (tmp_path / "gan_mode_collapse.png").stat().st_size > 0 and (tmp_path / "ring" / "samples.png").exists()
    printed = capsys.readouterr().out
    assert "best objective on the ring: minimax" in printed and "published on the 2D ring" in printed


def test_pbt_toy_reaches_the_optimum_that_members_alone_miss(tmp_path, capsys):
    """Jaderberg et al. (2017, Fig. 2): alone, each member shrinks one coordinate and Q stops at
    1.2 - 0.81 = 0.39; with exploit and explore, Q climbs to near its maximum 1.2."""
    import importlib.util

    path = EXAMPLES[0].parent / "pbt_toy.py"
    spec = importlib.util.spec_from_file_location("pbt_toy", path)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    sys.modules["pbt_toy"] = toy  # the config names the task "pbt_toy:MIXED"
    best = toy.main(tmp_path)
    assert best["alone"] <= 0.4 and best["pbt"] >= 1.1, best
    lineage = jaxdyn.load(tmp_path / "pbt").lineage()
    assert lineage.copied.any() and set(lineage.member) == {0, 1}
