"""``Results.soup``: the uniform soup against a hand average of the members' weights, BatchNorm
statistics recomputed against numpy, and the greedy soup on a held-out split."""

import jax
import numpy as np
import optax
import pytest

import jaxdyn
from jaxdyn.checkpoint import load_state
from jaxdyn.data import load_dataset
from jaxdyn.soup import average, recompute_batch_stats
from jaxdyn.study import expand
from jaxdyn.rundir import load_run_config

TRAIN = {"steps": 100, "chunk_steps": 100, "batch_size": 32}


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("soup") / "run"
    cfg = {"study": {"seeds": 3}, "model": {"hidden": [16]}, "optim": {"name": "sgd", "learning_rate": 0.1},
           "train": TRAIN, "probes": {"norms": {"every": 0}, "activations": {"every": 0}}}
    jaxdyn.run(cfg, out=out, progress=False, summary=False)
    return out


def test_the_uniform_soup_is_the_average_of_the_members_weights(plain_run):
    data = load_dataset("mnist1d")
    res = jaxdyn.load(plain_run)
    table = res.soup(held_out=(data.x_train[-500:], data.y_train[-500:]))
    assert len(table) == 1 and table.members[0] == 3
    state = load_state(plain_run)
    mean = jax.tree.map(lambda a: np.asarray(a, np.float64)[:3].mean(axis=0), state["params"])
    h = np.maximum(data.x_test @ mean["hidden_0"]["kernel"] + mean["hidden_0"]["bias"], 0)
    logits = h @ mean["head"]["kernel"] + mean["head"]["bias"]
    want = float(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_test).mean())
    assert table.soup_test_loss[0] == pytest.approx(want, rel=1e-4)
    assert table.soup_test_accuracy[0] == pytest.approx(float((logits.argmax(-1) == data.y_test).mean()), abs=1e-3)
    assert table.mean_test_loss[0] == pytest.approx(res.members.final_test_loss.mean(), rel=1e-6)
    assert {"ensemble_test_loss", "ensemble_test_accuracy"} <= set(table.columns)
    # greedy: at least the best member on the held-out split; alone, it scores as that member does
    assert 1 <= table.greedy_members[0] <= 3
    if table.greedy_members[0] == 1:  # no BatchNorm: the soup of one member is that member
        assert np.isclose(res.members.final_test_accuracy, table.greedy_test_accuracy[0], atol=1e-6).any()


def test_batchnorm_statistics_are_recomputed_for_the_soups_weights(tmp_path):
    cfg = {"study": {"seeds": 2}, "model": {"hidden": [16], "norm": "batch"}, "optim": {"name": "sgd"},
           "train": TRAIN, "probes": {"norms": {"every": 0}, "activations": {"every": 0}}}
    jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    (cohort,) = expand(load_run_config(tmp_path / "run"))
    state = load_state(tmp_path / "run")
    params = average([jax.tree.map(lambda a: np.asarray(a)[k], state["params"]) for k in range(2)])
    model_state = jax.tree.map(lambda a: np.asarray(a)[0], state["model_state"])
    hp = {name: np.float32(cohort.members.iloc[0][name]) for name in cohort.hparam_names}
    x = load_dataset("mnist1d").x_train[:4096]
    got = recompute_batch_stats(cohort.task(), params, model_state, hp, x)["batch_stats"]["norm_0"]
    h = x.astype(np.float64) @ params["hidden_0"]["kernel"]  # the first layer, before its BatchNorm
    np.testing.assert_allclose(got["mean"], h.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["var"], h.var(axis=0), rtol=1e-3, atol=1e-5)
    assert not np.allclose(got["mean"], model_state["batch_stats"]["norm_0"]["mean"])


def test_reading_checkpoints_through_the_api_is_quiet_unless_debugging(plain_run, caplog, monkeypatch):
    """Orbax's read-only managers warn through absl on every read; the API keeps that off a notebook
    as the CLI does, and ``JAXDYN_DEBUG=1`` lets it through."""
    import logging

    library = lambda: [r for r in caplog.records if r.name.split(".")[0] in ("absl", "orbax")]
    caplog.set_level(logging.WARNING)
    for name in ("absl", "orbax"):  # as a fresh process has them (a CLI test in this worker silences them)
        caplog.set_level(logging.WARNING, logger=name)
    jaxdyn.extract_member(plain_run, 0)
    assert library() == []
    monkeypatch.setenv("JAXDYN_DEBUG", "1")
    jaxdyn.extract_member(plain_run, 0)
    assert library(), "the control: with JAXDYN_DEBUG the library's warnings come through"
