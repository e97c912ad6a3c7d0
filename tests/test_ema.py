"""``train.ema_decay``: the weights' exponential moving average, kept in the optimizer state and
evaluated beside the raw weights (``test_loss_ema``, ``test_accuracy_ema``)."""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import jaxdyn
from jaxdyn.checkpoint import load_state
from jaxdyn.data import load_dataset
from conftest import make_task, member_arrays


def test_the_average_follows_its_recurrence_from_the_initial_weights(dataset):
    """ema_t = d ema_{t-1} + (1 - d) w_t with ema_0 = w_0, i.e. d^t w_0 + sum_s (1 - d) d^(t - s) w_s."""
    task = dataclasses.replace(make_task("sgd"), ema=True)
    seeds, hp = member_arrays("sgd", [3], [4], ema_decay=0.8, learning_rate=0.1)
    state = task.init(jax.tree.map(lambda a: a[0], seeds), {k: v[0] for k, v in hp.items()})
    step = jax.jit(task.step)
    weights = [state.params]
    for _ in range(6):
        state, _ = step(state, dataset)
        weights.append(state.params)
    t, d = len(weights) - 1, 0.8
    want = jax.tree.map(lambda *ws: d ** t * np.asarray(ws[0], np.float64)
                        + sum((1 - d) * d ** (t - s) * np.asarray(ws[s], np.float64) for s in range(1, t + 1)),
                        *weights)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), state.opt_state.ema, want)
    assert not np.allclose(state.opt_state.ema["head"]["kernel"], state.params["head"]["kernel"])


def test_the_average_is_evaluated_beside_the_raw_weights(tmp_path):
    cfg = {"study": {"seeds": 1}, "model": {"hidden": [16]}, "optim": {"name": "sgd", "learning_rate": 0.1},
           "train": {"steps": 40, "chunk_steps": 20, "batch_size": 16, "log_every": 10, "eval_every": 1},
           "probes": {"norms": {"every": 0}, "activations": {"every": 0}},
           "grid": {"train.ema_decay": [0.0, 0.9]}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    m = res.members.set_index("member")
    # decay 0: the average is the weights themselves, bit for bit
    assert m.loc[0, "final_loss_ema"] == m.loc[0, "final_test_loss"]
    assert m.loc[0, "final_accuracy_ema"] == m.loc[0, "final_test_accuracy"]
    # decay 0.9: the test loss of the averaged weights in the checkpoint, computed here
    state = load_state(tmp_path / "run")
    ema = jax.tree.map(lambda a: np.asarray(a)[1], state["opt_state"]["ema"])
    data = load_dataset("mnist1d")
    model = jaxdyn.extract_member(tmp_path / "run", 1).model
    logits = model.apply({"params": ema}, data.x_test)
    want = float(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_test).mean())
    assert m.loc[1, "final_loss_ema"] == pytest.approx(want, rel=1e-5)
    assert m.loc[1, "final_loss_ema"] != pytest.approx(m.loc[1, "final_test_loss"], rel=1e-3)
    assert set(res.frame("test_accuracy_ema").member) == {0, 1}
    assert jaxdyn.results.headline(res.members) == "test_accuracy"


def test_a_decay_of_one_or_more_is_refused_and_federations_refuse_it():
    from jaxdyn.config import load_config
    from jaxdyn.study import expand

    with pytest.raises(jaxdyn.ConfigError, match="train.ema_decay"):
        expand(load_config({"train": {"ema_decay": 1.0}}))
    fed = {"train": {"ema_decay": 0.9, "steps": 20, "chunk_steps": 10, "log_every": 5}, "federated": {"clients": 2, "local_steps": 5}}
    cohort = expand(load_config(fed))[0]
    with pytest.raises(jaxdyn.ConfigError, match="ema_decay > 0 with \\[federated\\]"):
        cohort.task()
