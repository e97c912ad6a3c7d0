"""Bring your own model, data, loss and probe: each checked against plain flax + optax, a formula,
or the same input through jaxdyn's own .npz path."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.errors import ConfigError
from jaxdyn.handover import handed_over
from jaxdyn.study import expand

from conftest import assert_same_run, assert_within_a_step, traced_once
from test_runs import _wait_for_commit
from userparts import GatedMLP, Plain, blobs, margin, squared_hinge

TESTS = Path(__file__).parent
QUIET = {"progress": False, "summary": False}
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}


def small(steps=20, chunk=10, batch=16, **sections):
    return {"study": {"seeds": 2}, "train": {"steps": steps, "chunk_steps": chunk, "batch_size": batch,
                                             "log_every": chunk // 2}, **sections}


def plain_solo(module, data, init_seed, data_seed, steps, batch, lr, hparams):
    """One member trained with flax and optax alone: jaxdyn's documented batch draw (uniform with
    replacement from fold_in(fold_in(PRNGKey(data_seed), Stream.BATCH = 2), step); init from Stream.INIT = 1), cross-entropy, Adam, BatchNorm in train mode."""
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    hp = {k: jnp.float32(v) for k, v in hparams.items()}
    variables = module.init(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(init_seed), 1), 0), x[:1], train=False, hparams=hp)
    params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
    tx = optax.adam(lr)
    opt = tx.init(params)
    for step in range(steps):
        before = {"params": params, **stats}
        idx = jax.random.randint(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(data_seed), 2), step), (batch,), 0, len(x))

        def loss(p):
            out, new = module.apply({"params": p, **stats}, x[idx], train=True, hparams=hp, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(out, y[idx]).mean(), new

        grads, stats = jax.grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
    return {"params": params, **stats}, before


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gated") / "run"
    cfg = small(optim={"name": "adam", "learning_rate": 0.01}, probes=NO_PROBES,
                grid={"model.temperature": [1.0, 2.5]})
    return jaxdyn.run(cfg, model=GatedMLP(width=8, n_out=4), data=blobs(), out=out, **QUIET)


def test_user_module_member_equals_its_plain_flax_optax_solo_run(gated_run):
    members = gated_run.members
    assert sorted(members.temperature.unique()) == [1.0, 2.5]  # a members.csv column
    assert len(members.cohort.unique()) == 1  # a member number: one compiled population
    for _, row in members.iterrows():
        got = jaxdyn.extract_member(gated_run.run_dir, int(row.member))
        assert isinstance(got.model, GatedMLP) and got.model.width == 8
        want, before = plain_solo(GatedMLP(width=8, n_out=4), blobs(), int(row.init_seed), int(row.data_seed), 20, 16,
                                  0.01, {"temperature": row.temperature})
        # Another program (inject_hyperparams, vmap) over 20 amplifying steps: within a fraction of the
        # reference's own last step (conftest.assert_within_a_step), weights and BatchNorm statistics.
        assert_within_a_step(got.variables["params"], want["params"], before["params"])
        assert_within_a_step(got.variables["batch_stats"], want["batch_stats"], before["batch_stats"])


def test_a_new_value_of_a_user_hyperparameter_does_not_recompile(mesh):
    cfg = load_config(small(grid={"model.temperature": [1.0, 2.0]}),
                      given=handed_over(model=GatedMLP(width=8, n_out=4), data=blobs()))
    cohort, = expand(cfg)
    task = traced_once(cohort.task())  # a second trace fails the test
    layout = pop.plan_layout(len(cohort.members), mesh.size)
    seeds, hparams = cohort.member_arrays(lambda v: pop.pad_members(v, layout))
    data = pop.replicate(jaxdyn.data.load_dataset(cohort.config.data), mesh)
    chunk = pop.make_train_chunk(task, 10, 5, layout.group_size, mesh)
    _, first = chunk(pop.init_population(task, seeds, hparams, mesh), data)
    hparams = {**hparams, "temperature": hparams["temperature"] * 7.0}
    _, second = chunk(pop.init_population(task, seeds, hparams, mesh), data)
    assert not np.allclose(first["loss"], second["loss"])  # the new values did reach the members


def test_user_loss_is_its_formula_and_user_probe_rows_are_direct(tmp_path):
    lr = 0.05
    cfg = small(steps=1, chunk=1, batch=8, optim={"name": "sgd", "learning_rate": lr},
                probes={**NO_PROBES, "batch_size": 32})
    cfg["train"]["log_every"] = 1
    data = blobs()
    res = jaxdyn.run(cfg, model=Plain(n_out=4), data=data, loss=squared_hinge, probes={"margin": margin},
                     out=tmp_path / "run", **QUIET)
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    for _, row in res.members.iterrows():
        # One SGD step on the hinge written out: w1 = w0 - lr * grad mean_i ½ Σ_c (f_c(x_i) - 3 [c = y_i])².
        w0 = Plain(4).init(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(row.init_seed)), 1), 0), x[:1])["params"]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(row.data_seed)), 2), 0)  # streams: BATCH = 2
        idx = jax.random.randint(key, (8,), 0, len(x))

        def hinge(p):
            f = x[idx] @ p["out"]["kernel"] + p["out"]["bias"]
            return 0.5 * jnp.mean(jnp.sum((f - 3.0 * (jnp.arange(4) == y[idx, None])) ** 2, axis=1))

        want = jax.tree.map(lambda w, g: w - lr * g, w0, jax.grad(hinge)(w0))
        got = jaxdyn.extract_member(res.run_dir, int(row.member))
        chex.assert_trees_all_close(got.variables["params"], want, rtol=1e-5, atol=1e-6)
        # The probe's rows, against the same numbers computed from the extracted weights.
        f = np.asarray(x[:32] @ want["out"]["kernel"] + want["out"]["bias"])
        top2 = np.sort(f, axis=1)[:, -2:]
        rows = res.metrics[(res.metrics.member == row.member) & (res.metrics.step == 1)].set_index(["metric", "layer"])
        np.testing.assert_allclose(rows.value[("margin", "")], (top2[:, 1] - top2[:, 0]).mean(), rtol=1e-5)
        np.testing.assert_allclose(rows.value[("max_abs_weight", "out")], np.abs(want["out"]["kernel"]).max(),
                                   rtol=1e-6)


def _message(fn) -> str:
    with pytest.raises(ConfigError) as err:
        fn()
    return str(err.value)


@pytest.mark.parametrize("damage", ["nan_row", "test_label_unseen", "lengths", "float_labels"])
def test_bad_arrays_are_refused_with_the_npz_messages(damage, tmp_path):
    x, y, xt, yt = (a.copy() for a in blobs())
    if damage == "nan_row":
        x[[3, 17]] = np.nan
    elif damage == "test_label_unseen":
        yt[5] = 9
    elif damage == "lengths":
        y = y[:-1]
    else:
        y = y + 0.5
    cfg = small(probes=NO_PROBES)
    direct = _message(lambda: jaxdyn.run(cfg, model=Plain(4), data=(x, y, xt, yt), out=tmp_path / "a", **QUIET))
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    cfg["data"] = {"name": "npz", "path": str(tmp_path / "d.npz")}
    from_file = _message(lambda: jaxdyn.run(cfg, model=Plain(4), out=tmp_path / "b", **QUIET))
    assert direct.split(": ", 1)[1] == from_file.split(": ", 1)[1]  # the same message, another source
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("model, loss, needle", [
    (Plain(n_out=3), None, "maps inputs [2, 10] to [2, 3], but the dataset needs [batch, 4]"),
    (Plain(n_out=4), lambda o, t: o.sum(), "returns shape [] for a batch of 2; return one loss per example"),
])
def test_shape_mismatches_fail_before_compiling(model, loss, needle, tmp_path):
    msg = _message(lambda: jaxdyn.run(small(), model=model, data=blobs(), loss=loss, out=tmp_path / "r", **QUIET))
    assert needle in msg


def test_user_components_are_validated_by_name(tmp_path):
    bad = small(model={"kind": "userparts:GatedMLP", "widht": 8})
    assert "is not a field of 'userparts:GatedMLP'" in _message(lambda: load_config(bad))
    assert "did you mean 'width'" in _message(lambda: load_config(bad))
    gone = small(loss={"name": "userparts:nothing"})
    assert "module 'userparts' has no attribute 'nothing'" in _message(lambda: load_config(gone) and expand(
        load_config(gone)))
    low = small(model={"kind": "userparts:GatedMLP", "temperature": 0.0})
    assert "model.temperature = 0.0: must lie in (0, inf)" in _message(lambda: expand(load_config(low)))


STUDY_TOML = """
[study]
name = "own"
seeds = 2
[data]
name = "userparts:load"
[model]
kind = "userparts:GatedMLP"
width = 16
[loss]
name = "userparts:focal"
[optim]
name = "adam"
learning_rate = 0.003
[train]
steps = 4000
batch_size = 32
chunk_steps = 100
log_every = 50
eval_every = 4
checkpoint_every = 2
[probes."userparts:margin"]
every = 5
[grid]
"model.temperature" = [1.0, 2.0]
"loss.gamma" = [0.0, 2.0]
"""


def _cli(args, cwd, **env_vars):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(TESTS), **env_vars}
    return subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", *args, "--no-progress", "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)


def test_by_import_path_sigterm_resume_is_bitwise_and_extract_report_export_see_it(tmp_path, capsys):
    (tmp_path / "own.toml").write_text(STUDY_TOML)
    from jaxdyn.cli import main
    assert main(["run", str(tmp_path / "own.toml"), "--dry-run"]) == 0
    assert "1 cohorts, 8 members" in capsys.readouterr().out  # temperature and gamma: member numbers
    reference = _cli(["own.toml", "--out", "ref"], tmp_path)
    interrupted = _cli(["own.toml", "--out", "run"], tmp_path, JAXDYN_PAUSE_AFTER_COMMIT="1")
    interrupted.paused_at_commit = True
    _wait_for_commit(interrupted)  # paused: the SIGTERM is taken at the next chunk boundary
    interrupted.send_signal(signal.SIGTERM)
    interrupted.send_signal(signal.SIGCONT)
    rest, _ = interrupted.communicate()
    assert interrupted.returncode == 143, rest
    out, _ = reference.communicate()
    assert reference.returncode == 0, out
    resumed = _cli(["--resume", "run"], tmp_path)
    out, _ = resumed.communicate()
    assert resumed.returncode == 0 and "resumed after chunk" in out, out

    got = assert_same_run(tmp_path / "run", tmp_path / "ref")
    assert {"gamma", "temperature"} <= set(got.members.columns) and len(got.members) == 8
    assert (got.members.final_test_accuracy > 0.6).all()  # it learns the blobs

    # extract_member rebuilds the user's module from its import path and reproduces the score.
    x_test, y_test = blobs()[2:]
    for _, row in got.members.iterrows():
        m = jaxdyn.extract_member(tmp_path / "run", int(row.member))
        logits = m.model.apply(m.variables, x_test, train=False, hparams=m.hparams)
        assert float(np.mean(np.argmax(logits, 1) == y_test)) == pytest.approx(row.final_test_accuracy, abs=1e-6)

    report = jaxdyn.write_report(tmp_path / "run")
    assert report.failed == {}
    assert "margin" in report.path.read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jaxdyn.export import export_tensorboard, tag_name
    export_tensorboard(tmp_path / "run", tmp_path / "tb", progress=False)
    events = EventAccumulator(str(tmp_path / "tb" / "member_00000"), size_guidance={"scalars": 0})
    events.Reload()
    mine = got.metrics[(got.metrics.member == 0) & (got.metrics.metric == "margin")]
    assert [e.value for e in events.Scalars(tag_name("margin", ""))] == pytest.approx(mine.value.tolist())


MAIN_SCRIPT = """
import flax.linen as nn
import jaxdyn
from userparts import load

class Mine(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(4)(x)

cfg = {"study": {"seeds": 1}, "train": {"steps": 20, "chunk_steps": 10, "batch_size": 8, "log_every": 5}}
res = jaxdyn.run(cfg, model=Mine(), data=load, out="run", progress=False, summary=False)
print("member 0 reached", res.members.final_test_accuracy[0])
"""


def test_objects_from_main_run_and_a_resume_elsewhere_is_refused(tmp_path):
    (tmp_path / "mine.py").write_text(MAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    first = subprocess.run([sys.executable, "mine.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "member 0 reached" in first.stdout, first.stdout + first.stderr
    toml = (tmp_path / "run" / "config.toml").read_text()
    assert 'kind = "__main__:Mine"' in toml and 'name = "userparts:load"' in toml
    again = _cli(["--resume", "run"], tmp_path)
    out, _ = again.communicate()
    assert again.returncode == 2, out
    assert "model.kind = '__main__:Mine' was handed to jaxdyn.run as a Python object defined in __main__" in out
    assert "pass the same object again" in out
    # What was written reads back without the class: tables, summary and report.
    res = jaxdyn.load(tmp_path / "run")
    assert len(res.members) == 1 and res.summary() is not None
    report = jaxdyn.write_report(tmp_path / "run")
    assert report.failed == {}, report.failed


def test_arrays_from_another_process_are_asked_for_again():
    cfg = load_config(small(model={"kind": "userparts:Plain"}, data={"name": "arrays:00000000deadbeef"}))
    msg = _message(lambda: expand(cfg))
    assert "names arrays handed to jaxdyn.run(data=...) in another process, and no run folder here keeps a copy; " \
           "pass the same arrays again" in msg


def test_the_bring_your_own_example_runs_and_names_its_parts_by_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS.parent / "examples"))
    import bring_your_own as byo

    study = {**byo.STUDY, "train": {**byo.STUDY["train"], "steps": 1000, "chunk_steps": 500}}
    res = jaxdyn.run(study, model=byo.ResidualMLP(), data=byo.spirals(), loss=byo.poly1,
                     probes={"logit_gap": byo.logit_gap}, out=tmp_path / "run", **QUIET)
    toml = (tmp_path / "run" / "config.toml").read_text()
    assert 'kind = "bring_your_own:ResidualMLP"' in toml and 'name = "bring_your_own:poly1"' in toml
    assert 'fn = "bring_your_own:logit_gap"' in toml
    assert len(res.members.cohort.unique()) == 1 and len(res.members) == 12
    assert (res.members.final_test_accuracy > 0.6).all()  # three spirals, better than chance (1/3)
    rows = res.metrics[res.metrics.metric == "stream_rms"]
    assert set(rows.layer) == {"stream_0", "stream_1"}


def test_a_modules_fields_are_cohort_axes_and_its_numbers_set_keys():
    cfg = load_config(small(data={"name": "userparts:load"}, model={"kind": "userparts:GatedMLP"},
                            loss={"name": "userparts:focal"}, grid={"model.width": [4, 8]}),
                      overrides=["model.temperature=2.5", "loss.gamma=0.5"])
    cohorts = expand(cfg)
    assert [c.config.model.width for c in cohorts] == [4, 8]  # a field: a cohort (a compile) per value
    for c in cohorts:
        assert set(c.members.temperature) == {2.5} and set(c.members.gamma) == {0.5}
    grid = load_config(small(data={"name": "userparts:load"}, model={"kind": "userparts:GatedMLP"},
                             grid={"model.temperature": [0.5, 1.0, 2.0]}))
    cohort, = expand(grid)  # a declared number: members of one population
    assert sorted(cohort.members.temperature) == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("kind, needle", [
    ("Forgetful", "declares model.beta but its __call__ takes no hparams=, so the numbers could never reach it"),
    ("Greedy", "reads 'beta' from hparams, which has no such member number; declare it in the class"),
    ("Unflat", "maps inputs [2, 10] to [2, 10, 4]; a model returns one row of outputs per example"),
])
def test_module_mistakes_are_named_before_compiling(kind, needle):
    cfg = load_config(small(data={"name": "userparts:load"}, model={"kind": f"userparts:{kind}"}))
    assert needle in _message(lambda: expand(cfg))


def test_a_grid_over_a_handed_modules_field_and_a_clashing_model_table():
    given = handed_over(model=GatedMLP(width=8), data=blobs())
    cohorts = expand(load_config(small(grid={"model.width": [4, 16]}), given=given))
    assert [c.config.model.width for c in cohorts] == [4, 16]  # the grid sets the field the instance had
    clash = small(model={"kind": "mlp", "hidden": [64]})
    msg = _message(lambda: load_config(clash, given=given))
    assert "model= gives the model, but the config's [model] also sets kind = 'mlp', hidden = [64]" in msg


def test_set_reaches_nested_and_quoted_tables():
    cfg = load_config(small(probes={"userparts:margin": {"every": 1}}),
                      overrides=["probes.hessian.every=3", 'probes."userparts:margin".every=2'])
    assert cfg.probes.options("hessian").every == 3 and cfg.probes.options("userparts:margin").every == 2
    gan = load_config(TESTS.parent / "examples" / "gan_ring.toml", overrides=["gan.generator.hidden=[64]"])
    assert gan.task.options.generator.hidden == (64,)


def test_a_probe_returning_a_vector_fails_before_any_folder_or_compile(tmp_path):
    def vec(ctx):
        return {"vec": ctx.outputs()[0]}  # [n_out], not a scalar

    msg = _message(lambda: jaxdyn.run(small(), model=Plain(4), data=blobs(), probes={"vec": vec},
                                      out=tmp_path / "r", **QUIET))
    assert "probe 'vec': metric 'vec' has shape [4]; each value is a scalar" in msg
    assert not (tmp_path / "r").exists()
    cfg = load_config(small(), given=handed_over(model=Plain(4), data=blobs(), probes={"vec": vec}))
    assert "has shape [4]" in _message(lambda: jaxdyn.study.plan(cfg))  # --dry-run says so too


def test_the_run_folder_keeps_handed_arrays_so_another_process_resumes_and_extracts(tmp_path):
    cfg = small(probes=NO_PROBES)
    res = jaxdyn.run(cfg, model=Plain(4), data=blobs(), out=tmp_path / "run", **QUIET)
    digest = (tmp_path / "run" / "config.toml").read_text().split('name = "arrays:')[1][:16]
    with np.load(tmp_path / "run" / "arrays" / f"{digest}.npz") as kept:  # the very arrays, bit for bit
        for key, want in zip(("x", "y", "x_test", "y_test"), blobs()):
            np.testing.assert_array_equal(kept[key], want)
    script = ("import jaxdyn, numpy as np; m = jaxdyn.extract_member('run', 1); "
              "x, y = np.load('run/arrays/%s.npz')['x_test'], np.load('run/arrays/%s.npz')['y_test']; "
              "r = jaxdyn.write_report('run'); assert r.failed == {} and '1 of 1' in r.path.read_text(); "
              "print(float(np.mean(np.argmax(m.model.apply(m.variables, x, train=False), 1) == y)))" % (digest, digest))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    other = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert float(other.stdout.split()[-1]) == pytest.approx(res.members.final_test_accuracy[1], abs=1e-6)
    again = _cli(["--resume", "run"], tmp_path)
    out, _ = again.communicate()
    assert again.returncode == 0, out  # nothing handed over: the folder's copy is enough
