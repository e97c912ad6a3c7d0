"""Step 0: a fresh run measures every member's initial state (its test scores and every probe)
before the first chunk, checked against the initial parameters made again from each member's
seeds and scored by hand (numpy forward passes, ``numpy.linalg.eigh`` of the full Hessian);
it only reads the state, a resume does not measure it twice, and a fork measures where it starts."""

import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.checkpoint import load_state
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.runner import CohortPrograms
from jaxdyn.study import expand
from conftest import assert_same_run

STUDY = {"study": {"name": "step0", "seeds": 2}, "data": {"name": "mnist1d", "n_train": 400},
         "model": {"hidden": [8]}, "optim": {"name": "adam"},
         "train": {"steps": 40, "batch_size": 16, "chunk_steps": 10, "log_every": 5, "eval_every": 2,
                   "checkpoint_every": 1},
         "probes": {"batch_size": 64, "norms": {"every": 1}, "activations": {"every": 0},
                    "hessian": {"every": 4}},
         "grid": {"optim.learning_rate": [0.01, 0.03]}}
TOL = 1e-5  # float32 scores of a forward pass against the same pass in float64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return jaxdyn.run(STUDY, out=tmp_path_factory.mktemp("step0") / "run", progress=False, summary=False)


def initial_params(cfg) -> tuple[list[dict], object]:
    """Each member's initial parameters, made again one member at a time by the task's own init
    from the member's seeds and hyperparameters, and the cohort."""
    cohort = expand(load_config(cfg))[0]
    seeds, hparams = cohort.member_arrays(lambda a: a)
    init = jax.jit(cohort.task().init)
    one = lambda i: jax.tree.map(lambda a: a[i], (seeds, hparams))
    return [jax.device_get(init(*one(i)).params) for i in range(len(cohort.members))], cohort


def forward(params, x, xp=np):
    """The MLP by hand: ReLU hidden layers ``hidden_0 ..``, then the linear ``head``."""
    x = x.reshape(len(x), -1)
    for i in range(len(params) - 1):
        layer = params[f"hidden_{i}"]
        x = xp.maximum(x @ layer["kernel"] + layer["bias"], 0)
    return x @ params["head"]["kernel"] + params["head"]["bias"]


def cross_entropy(logits, y, xp=np):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - xp.log(xp.exp(logits).sum(axis=1, keepdims=True))
    return -xp.take_along_axis(log_p, y[:, None], axis=1).mean()


def at(metrics, step, metric, layer=""):
    rows = metrics[(metrics.step == step) & (metrics.metric == metric) & (metrics.layer == layer)]
    return rows.set_index("member").value.sort_index()


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_step_0_scores_are_the_initial_params_on_the_test_set(run):
    params, cohort = initial_params(STUDY)
    data = load_dataset(cohort.config.data.source())
    x, y = np.asarray(data.x_test, np.float64), np.asarray(data.y_test)
    loss, accuracy = at(run.metrics, 0, "test_loss"), at(run.metrics, 0, "test_accuracy")
    assert list(loss.index) == list(cohort.members.member)
    for member, p in zip(loss.index, params):
        logits = forward(f64(p), x)
        assert loss[member] == pytest.approx(cross_entropy(logits, y), rel=TOL)
        # float32 and float64 may rank a near tie differently: one test example at most
        assert abs(accuracy[member] - np.mean(logits.argmax(1) == y)) <= 1 / len(y)
    # The curves start at 0, then every eval_every chunks; training windows start after the first.
    test = run.metrics[run.metrics.metric == "test_loss"]
    assert sorted(test.step.unique()) == [0, 20, 40]
    assert run.metrics[run.metrics.metric == "train_loss"].step.min() == 5
    assert sorted(run.metrics.groupby(["member", "metric", "layer"]).step.min().unique()) == [0, 5]


def test_step_0_norms_and_sharpness_are_those_of_the_initial_params(run):
    params, cohort = initial_params(STUDY)
    data = load_dataset(cohort.config.data.source())
    n = cohort.probe_batch_size()
    x, y = np.asarray(data.x_train[:n], np.float64), np.asarray(data.y_train[:n])
    m = run.metrics
    for member, p in zip(cohort.members.member, params):
        p = f64(p)
        for layer, sub in [("", p), *p.items()]:
            want = np.sqrt(sum(np.sum(np.square(a)) for a in jax.tree.leaves(sub)))
            assert at(m, 0, "weight_norm", layer)[member] == pytest.approx(want, rel=TOL)
            # Distance from the initial parameters: none yet, and none relative to them either.
            assert at(m, 0, "dist_from_init", layer)[member] == 0
            assert at(m, 0, "rel_dist_from_init", layer)[member] == 0
        # The full gradient and Hessian of the hand-written objective (float32, as the probes run).
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p))
        objective = lambda w: cross_entropy(forward(unravel(w), jnp.asarray(x, jnp.float32), jnp), jnp.asarray(y), jnp)
        grad = np.asarray(jax.grad(objective)(flat), np.float64)
        top = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(objective))(flat), np.float64))[-1]
        assert at(m, 0, "grad_norm")[member] == pytest.approx(np.linalg.norm(grad), rel=1e-4)
        assert at(m, 0, "sharpness")[member] == pytest.approx(top, rel=1e-3)
    # Adam's second moment holds no gradient at step 0: no preconditioned sharpness yet.
    assert at(m, 0, "preconditioned_sharpness").isna().all()
    assert np.isfinite(at(m, 40, "preconditioned_sharpness")).all()
    assert sorted(m[m.metric == "sharpness"].step.unique()) == [0, 40]  # every 4 chunks, and the last


def test_step_0_only_reads_the_state(run):
    """The run's final state is that of its chunks alone from the initial state, bit for bit."""
    cohort = expand(load_config(STUDY))[0]
    mesh = pop.make_mesh()
    layout = pop.plan_layout(len(cohort.members), mesh.size, 0, "cpu")
    programs = CohortPrograms.build(cohort, layout, mesh)
    data = pop.replicate(load_dataset(cohort.config.data.source()), mesh)
    state = programs.start()
    for _ in range(4):
        state, _ = programs.train_chunk(state, data)
    chex.assert_trees_all_equal(jax.device_get(state.params), load_state(run.run_dir)["params"])


def one_row_each(metrics) -> None:
    """Exactly one step-0 row per member, metric and layer, and every member has them."""
    zero = metrics[metrics.step == 0]
    counts = zero.groupby(["member", "metric", "layer"]).size()
    assert (counts == 1).all(), counts[counts != 1]
    assert len(counts) == zero.member.nunique() * len(zero.groupby(["metric", "layer"]))


def test_a_run_resumed_before_its_first_checkpoint_measures_step_0_once(run, tmp_path):
    """Killed after writing step 0 and before any checkpoint: the resume starts afresh, writes
    step 0 again in place, and ends as the uninterrupted run did."""
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    shutil.rmtree(copy / "checkpoints")
    for path in [*(copy / "parts").iterdir(), copy / "members.csv", copy / "metrics.parquet"]:
        if not path.name.endswith("_000000.parquet"):
            path.unlink()
    one_row_each(jaxdyn.load(copy).metrics)  # what the killed run left: step 0 only
    jaxdyn.run(resume=copy, progress=False, summary=False)
    got = assert_same_run(copy, run.run_dir)
    one_row_each(got.metrics)


def test_a_continued_run_keeps_its_step_0_and_equals_the_longer_run(run, tmp_path):
    short = tmp_path / "short"
    jaxdyn.run({**STUDY, "train": {**STUDY["train"], "steps": 20}}, out=short, progress=False, summary=False)
    jaxdyn.run(resume=short, overrides=["train.steps=40"], progress=False, summary=False)
    got = assert_same_run(short, run.run_dir)
    one_row_each(got.metrics)


def test_a_fork_is_measured_where_it_starts(run, tmp_path):
    """A fork starts from the parent's last checkpoint: its step 0 is the parent's last
    evaluation, and it has not moved from where it started."""
    child = {**STUDY, "study": {"name": "child", "seeds": 2}, "init": {"from": str(run.run_dir), "members": "all"},
             "probes": {**STUDY["probes"], "hessian": {"every": 0}}}
    forked = jaxdyn.run(child, out=tmp_path / "child", progress=False, summary=False).metrics
    for metric in ("test_loss", "test_accuracy", "weight_norm"):
        np.testing.assert_allclose(at(forked, 0, metric), at(run.metrics, 40, metric), rtol=TOL)
    assert (at(forked, 0, "dist_from_init") == 0).all()
    one_row_each(forked)


FEDERATED = {"study": {"seeds": 2}, "data": {"n_train": 400}, "model": {"hidden": [16]},
             "optim": {"name": "sgd", "learning_rate": 0.1}, "probes": {"norms": {"every": 0}, "activations": {"every": 0}},
             "train": {"steps": 4, "chunk_steps": 2, "batch_size": 8, "log_every": 1, "eval_every": 1},
             "federated": {"clients": 3, "local_steps": 2}}


def test_a_federated_step_0_scores_the_initial_global_model(tmp_path):
    params, cohort = initial_params(FEDERATED)
    res = jaxdyn.run(FEDERATED, out=tmp_path / "fed", progress=False, summary=False)
    data = load_dataset(cohort.config.data.source())
    x, y = np.asarray(data.x_test, np.float64), np.asarray(data.y_test)
    loss = at(res.metrics, 0, "test_loss")
    for member, federation, p in zip(cohort.members.member, cohort.members.federation, params):
        first = cohort.members.member[cohort.members.federation == federation].min()
        chex.assert_trees_all_equal(p, params[first])  # every client starts from the global model
        assert loss[member] == pytest.approx(cross_entropy(forward(f64(p), x), y), rel=TOL)
    assert sorted(res.metrics[res.metrics.metric == "test_loss"].step.unique()) == [0, 2, 4]  # then every round
    one_row_each(res.metrics)


GAN = {"study": {"seeds": 2}, "task": {"kind": "gan"}, "data": {"name": "ring"},
       "gan": {"generator": {"hidden": [16]}, "discriminator": {"hidden": [16]}},
       "train": {"steps": 20, "batch_size": 32, "chunk_steps": 10, "log_every": 5, "eval_every": 1},
       "probes": {"norms": {"every": 1}, "activations": {"every": 0}}}


def test_a_gan_step_0_scores_and_samples_its_initial_players(tmp_path):
    """Against each member's initial state scored alone (the task's own evaluate and samples,
    one member, not the population's programs)."""
    res = jaxdyn.run(GAN, out=tmp_path / "gan", progress=False, summary=False)
    cohort = expand(load_config(GAN))[0]
    task = cohort.task()
    data = load_dataset(cohort.config.data.source())
    seeds, hparams = cohort.member_arrays(lambda a: a)
    samples = pd.read_parquet(tmp_path / "gan" / "samples.parquet")
    assert sorted(samples.step.unique()) == [0, 10, 20]
    for i, member in enumerate(cohort.members.member):
        state = jax.jit(task.init)(*jax.tree.map(lambda a: a[i], (seeds, hparams)))
        scores = jax.device_get(jax.jit(task.evaluate)(state, data.x_test, data.y_test))
        for name, value in scores.items():
            assert at(res.metrics, 0, f"test_{name}")[member] == pytest.approx(float(value), rel=TOL, abs=1e-6)
        mine = samples[(samples.step == 0) & (samples.member == member)].sort_values("sample")
        np.testing.assert_allclose(mine[["x0", "x1"]].to_numpy(), np.asarray(jax.jit(task.snapshot)(state)),
                                   rtol=TOL, atol=1e-6)
        for player in ("g", "d"):
            assert at(res.metrics, 0, f"{player}_dist_from_init")[member] == 0
    # Step 0 has what every evaluation and probe writes, and none of the training windows' metrics
    # (step 15 has only those: no chunk ends there).
    named = lambda step: set(res.metrics[res.metrics.step == step].metric)
    assert named(0) == named(20) - named(15)
    one_row_each(res.metrics)
