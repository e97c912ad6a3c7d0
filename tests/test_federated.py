"""Federated averaging as a population: partitions, the member table, and whole runs against
hand-written FedAvg / FedSGD / FedProx updates (plain jax and numpy, never jaxdyn's round)."""

import subprocess
import sys

import jax
import numpy as np
import optax
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.checkpoint import load_state
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.federated.config import FederatedConfig
from jaxdyn.federated.partition import dirichlet, iid, partition, shards
from jaxdyn.federated.setup import client_examples
from jaxdyn.streams import Stream, key
from jaxdyn.study import expand
from conftest import assert_same_run

LABELS = np.random.default_rng(0).integers(0, 10, 2000)


def _dealt_once(parts, n):
    everything = np.concatenate(parts)
    assert len(everything) == n and np.array_equal(np.sort(everything), np.arange(n))
    assert all(len(p) >= 1 for p in parts)


def test_iid_deals_every_example_once_in_near_equal_parts():
    parts = iid(1003, 10, np.random.default_rng(1))
    _dealt_once(parts, 1003)
    assert sorted({len(p) for p in parts}) == [100, 101]


@pytest.mark.parametrize("per_client", [1, 2, 3])
def test_shards_are_label_sorted_runs_dealt_per_client(per_client):
    clients = 20
    parts = shards(LABELS, clients, per_client, np.random.default_rng(2))
    _dealt_once(parts, len(LABELS))
    # The shards, from the definition: the stably label-sorted indices cut into equal runs.
    pieces = [set(p.tolist()) for p in np.array_split(np.argsort(LABELS, kind="stable"), per_client * clients)]
    used = []
    for part in parts:
        mine = [i for i, piece in enumerate(pieces) if piece <= set(part.tolist())]
        assert len(mine) == per_client and sum(len(pieces[i]) for i in mine) == len(part)
        used += mine
        assert len(set(LABELS[part])) <= 2 * per_client  # a shard straddles at most one class boundary here
    assert sorted(used) == list(range(per_client * clients))


def test_dirichlet_mixes_have_the_spread_of_their_concentration():
    """Var(q_c) = p_c (1 - p_c) / (alpha + 1) for q ~ Dir(alpha p) (Hsu et al. 2019); measured on the
    first half of the clients (the last ones are filled from what is left), plus the multinomial
    noise of a client's n examples, E[q(1 - q)] / n = p (1 - p) alpha / ((alpha + 1) n)."""
    labels = np.random.default_rng(3).integers(0, 10, 40000)
    p = np.bincount(labels) / len(labels)
    for alpha in (0.3, 1.0, 10.0):
        parts = dirichlet(labels, 200, alpha, np.random.default_rng(4))
        _dealt_once(parts, len(labels))
        frac = np.stack([np.bincount(labels[q], minlength=10) / len(q) for q in parts[:100]])
        n = len(parts[0])
        want = p * (1 - p) / (alpha + 1) * (1 + alpha / n)
        got = frac.var(axis=0)
        assert np.mean(got) == pytest.approx(np.mean(want), rel=0.3), (alpha, got, want)
    mostly_one = np.mean([np.bincount(labels[q]).max() / len(q) for q in dirichlet(labels, 200, 0.05,
                                                                                    np.random.default_rng(5))])
    assert mostly_one > 0.8


def test_the_same_data_seed_gives_the_same_partition_in_another_process():
    cfg = FederatedConfig(clients=7, partition="dirichlet", alpha=0.5)
    here = partition(cfg, LABELS, 11).order
    code = ("import numpy as np; from jaxdyn.federated.config import FederatedConfig; "
            "from jaxdyn.federated.partition import partition; "
            "labels = np.random.default_rng(0).integers(0, 10, 2000); "
            "print(partition(FederatedConfig(clients=7, partition='dirichlet', alpha=0.5), labels, 11).order.tolist())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert here.tolist() == eval(there)
    assert not np.array_equal(here, partition(cfg, LABELS, 12).order)


BASE = {"study": {"seeds": 1}, "data": {"n_train": 400}, "model": {"hidden": [16]},
        "optim": {"name": "sgd", "learning_rate": 0.1}, "probes": {"norms": {"every": 0}, "activations": {"every": 0}}}


def _cfg(train, federated, **more):
    return {**BASE, "train": {"log_every": 1, "eval_every": 1, **train}, "federated": federated, **more}


def test_the_member_table_holds_federations_of_clients():
    cohorts = expand(load_config(_cfg({"steps": 4, "chunk_steps": 2, "batch_size": 8},
                                      {"clients": 3, "local_steps": 2}, study={"seeds": 2},
                                      grid={"federated.server_learning_rate": [1.0, 0.5]})))
    members = cohorts[0].members
    assert len(members) == 12 and members.member.tolist() == list(range(12))
    assert members.federation.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert members.client.tolist() == [0, 1, 2] * 4
    # clients share the init seed; their data seeds are seed * clients + client
    assert members.groupby("federation").init_seed.nunique().eq(1).all()
    assert members.data_seed.tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert sorted(members.server_learning_rate.unique()) == [0.5, 1.0]


@pytest.mark.parametrize("federated, field", [
    ({"clients": 0}, "federated.clients = 0"),
    ({"local_steps": 3}, "train.chunk_steps = 4 is not a multiple of federated.local_steps = 3"),
    ({"client_fraction": 0.0}, "federated.client_fraction = 0.0"),
    ({"partition": "natural"}, "data.name = 'mnist1d' has none"),
    ({"partition": "pathological"}, "federated.partition = 'pathological'"),
    ({"local_epochs": 1.0}, "federated.local_steps and federated.local_epochs are both set"),
    ({"local_epochs": -1.0, "local_steps": None}, "federated.local_epochs = -1.0"),
    ({"alpha": 0.0, "partition": "dirichlet"}, "federated.alpha = 0.0"),
    ({"server_optim": "yogi"}, "federated.server_optim = 'yogi'"),
    ({"clients": 500}, "federated.clients = 500"),
    ({"shards_per_client": 300, "partition": "shards"}, "federated.shards_per_client = 300"),
    ({"local_step": 2}, "unknown key federated.local_step"),
    ({"server_learning_rate": 0.0}, "federated.server_learning_rate"),
])
def test_bad_federated_settings_are_refused_naming_the_field(federated, field):
    fed = {k: v for k, v in {"local_steps": 2, **federated}.items() if v is not None}
    cfg = _cfg({"steps": 8, "chunk_steps": 4, "batch_size": 8}, fed)
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config(cfg))
    assert field in str(err.value), str(err.value)


def test_federated_axes_need_a_federated_table_and_regression_needs_iid():
    with pytest.raises(jaxdyn.ConfigError, match="add a \\[federated\\] table"):
        expand(load_config({**BASE, "grid": {"federated.alpha": [0.1, 1.0]}}))
    cfg = _cfg({"steps": 8, "chunk_steps": 4, "batch_size": 8}, {"local_steps": 2, "partition": "shards"},
               data={"name": "teacher"})
    with pytest.raises(jaxdyn.ConfigError, match="use partition = \"iid\""):
        expand(load_config(cfg))


def _batch(order, start, count, data_seed, step, batch):
    idx = jax.random.randint(key(jax.random.PRNGKey(data_seed), Stream.BATCH, step), (batch,), 0, count)
    return order[start + np.asarray(idx)]


def _ce(model, params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y).mean()


def _start_params(tmp_path, cfg):
    """The members' initial params: the same study at learning rate 0 (the average of equal clients is them)."""
    frozen = {**cfg, "optim": {"name": "sgd", "learning_rate": 0.0}}
    jaxdyn.run(frozen, out=tmp_path / "frozen", progress=False, summary=False)
    return jaxdyn.extract_member(tmp_path / "frozen", 0).variables["params"]


def test_one_round_of_one_local_step_is_large_batch_sgd_on_the_union(tmp_path):
    """FedSGD: with E = 1 and every client taking part, the new global model is
    w - lr * sum_k (n_k / n) grad_k, each client's gradient on its own minibatch."""
    cfg = _cfg({"steps": 1, "chunk_steps": 1, "batch_size": 8}, {"clients": 4, "local_steps": 1,
                                                                  "partition": "dirichlet", "alpha": 0.5})
    w0 = _start_params(tmp_path, cfg)
    jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    member = jaxdyn.extract_member(tmp_path / "run", 2)
    data = load_dataset("mnist1d", n_train=400)
    examples = client_examples(load_config(cfg).data, load_config(cfg).federated)
    n = examples.count.astype(np.float64)

    def union_loss(params):
        total = 0.0
        for c in range(4):
            idx = _batch(examples.order, examples.start[c], examples.count[c], c, 0, 8)
            total += n[c] / n.sum() * _ce(member.model, params, data.x_train[idx], data.y_train[idx])
        return total

    want = jax.tree.map(lambda w, g: w - 0.1 * g, w0, jax.grad(union_loss)(w0))
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), member.variables["params"], want)


def test_two_rounds_with_half_the_clients_sampled_are_fedavg_over_those_clients(tmp_path):
    """C = 0.5 of 4 clients, E = 1: each round, the sampled clients (the first 2 of the round's
    permutation, from the documented key) take one SGD step from the global model and the server
    averages them by example count; the clients left out add nothing, and every client ends on
    the global model. The reference is plain jax over the sampled clients only."""
    cfg = _cfg({"steps": 2, "chunk_steps": 2, "batch_size": 8}, {"clients": 4, "local_steps": 1, "client_fraction": 0.5,
                                                                  "partition": "dirichlet", "alpha": 0.5})
    w = _start_params(tmp_path, cfg)
    jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    data = load_dataset("mnist1d", n_train=400)
    examples = client_examples(load_config(cfg).data, load_config(cfg).federated)
    model = jaxdyn.extract_member(tmp_path / "run", 0).model
    root = jax.random.fold_in(jax.random.PRNGKey(0), 0)  # federated.seed 0, cohort 0
    for step in range(2):
        sampled = np.asarray(jax.random.permutation(jax.random.fold_in(key(root, Stream.CLIENTS, step), 0), 4))[:2]
        total, weight = None, 0.0
        for c in sampled:  # client c of seed 0 draws with data seed c
            idx = _batch(examples.order, examples.start[c], examples.count[c], int(c), step, 8)
            g = jax.grad(_ce, argnums=1)(model, w, data.x_train[idx], data.y_train[idx])
            n = float(examples.count[c])
            local = jax.tree.map(lambda a, b: n * (a - 0.1 * b), w, g)
            total = local if total is None else jax.tree.map(np.add, total, local)
            weight += n
        w = jax.tree.map(lambda t: t / weight, total)
    for member in range(4):
        got = jaxdyn.extract_member(tmp_path / "run", member).variables["params"]
        jax.tree.map(lambda g, v: np.testing.assert_allclose(g, v, rtol=1e-5, atol=1e-6), got, w)


def test_fedprox_pulls_each_local_step_towards_the_round_start(tmp_path):
    """One client, E = 2: w1 = w0 - lr g(w0), w2 = w1 - lr (g(w1) + mu (w1 - w0)) (Li et al. 2020)."""
    cfg = _cfg({"steps": 2, "chunk_steps": 2, "batch_size": 8},
               {"clients": 1, "local_steps": 2, "prox_mu": 0.5, "server_learning_rate": 1.0})
    w0 = _start_params(tmp_path, cfg)
    jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    member = jaxdyn.extract_member(tmp_path / "run", 0)
    data = load_dataset("mnist1d", n_train=400)
    order = np.arange(400)  # one iid client holds every example, in order
    grad = lambda w, step: jax.grad(_ce, argnums=1)(member.model, w, *(
        a[_batch(order, 0, 400, 0, step, 8)] for a in (data.x_train, data.y_train)))
    w1 = jax.tree.map(lambda w, g: w - 0.1 * g, w0, grad(w0, 0))
    w2 = jax.tree.map(lambda w, g, a: w - 0.1 * (g + 0.5 * (w - a)), w1, grad(w1, 1), w0)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), member.variables["params"], w2)


def test_one_client_trains_as_its_member_would_alone(tmp_path):
    """A federation of one client with plain FedAvg: each round's average is the client itself, so
    40 steps in 4 rounds are 40 steps of plain training (up to the rounding of n w / n)."""
    train = {"steps": 40, "chunk_steps": 20, "batch_size": 16, "log_every": 10}
    fed = jaxdyn.run(_cfg(train, {"clients": 1, "local_steps": 10}), out=tmp_path / "fed", progress=False,
                     summary=False)
    plain = jaxdyn.run({**BASE, "train": {**train, "eval_every": 1}}, out=tmp_path / "plain", progress=False,
                       summary=False)
    a = fed.frame("test_loss").set_index("step").value
    b = plain.frame("test_loss").set_index("step").value
    assert list(a.index) == [0, 10, 20, 30, 40] and list(b.index) == [0, 20, 40]  # the start; every round; every chunk
    np.testing.assert_allclose(a[[0, 20, 40]].to_numpy(), b.to_numpy(), rtol=1e-4)
    got = jaxdyn.extract_member(tmp_path / "fed", 0).variables["params"]
    want = jaxdyn.extract_member(tmp_path / "plain", 0).variables["params"]
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5), got, want)


def test_a_federated_run_resumed_for_more_rounds_equals_the_longer_run(tmp_path):
    train = {"steps": 40, "chunk_steps": 20, "batch_size": 8, "log_every": 5, "eval_every": 1}
    fed = {"clients": 4, "local_steps": 5, "client_fraction": 0.5, "partition": "shards", "server_optim": "adam",
           "server_learning_rate": 0.01}
    cfg = {**_cfg(train, fed), "study": {"seeds": 2}}
    jaxdyn.run(cfg, out=tmp_path / "short", progress=False, summary=False)
    jaxdyn.run(resume=tmp_path / "short", overrides=["train.steps=80"], progress=False, summary=False)
    long = {**cfg, "train": {**train, "steps": 80}}
    jaxdyn.run(long, out=tmp_path / "long", progress=False, summary=False)
    res = assert_same_run(tmp_path / "short", tmp_path / "long")
    drift = res.frame("client_drift")
    # two of four clients take part each round: half of the drift values are NaN, the rest finite
    assert drift.value.isna().mean() == pytest.approx(0.5) and (drift.value.dropna() > 0).all()
    table = pd.read_parquet(tmp_path / "long" / "partition.parquet")
    labels = load_dataset("mnist1d", n_train=400).y_train
    examples = client_examples(load_config(long).data, load_config(long).federated)
    for c, part in enumerate(examples.parts()):
        row = table[table.client == c].iloc[0]
        assert row.examples == len(part) == 100
        assert [row[f"label_{k}"] for k in range(10)] == np.bincount(labels[part], minlength=10).tolist()
    pd.testing.assert_frame_equal(res.partition(), table)
    report = jaxdyn.write_report(tmp_path / "long")
    assert "federated" in report.views and not report.failed, report.failed
    assert {"federated_rounds.png", "federated_partition.png"} <= {p.name for p in report.images}


def test_dry_run_shows_federations_and_clients(tmp_path):
    import tomli_w
    (tmp_path / "fed.toml").write_text(tomli_w.dumps(_cfg({"steps": 40, "chunk_steps": 20, "batch_size": 8},
                                                          {"clients": 5, "local_steps": 10, "client_fraction": 0.4},
                                                          study={"seeds": 3})))
    out = subprocess.run([sys.executable, "-m", "jaxdyn", "run", str(tmp_path / "fed.toml"), "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "federated: 3 federation(s) x 5 clients, 4 rounds of 10 local steps, 2 client(s) per round" in out.stdout


def test_the_global_model_is_evaluated_once_per_federation_for_its_living_clients(mesh):
    """Federation 1 of three clients spans both devices; a diverged client (alive False) reads NaN,
    and a federation with no living client NaN throughout; the others read the test loss of their
    federation's first living client, computed here with plain flax and optax."""
    from jaxdyn import population as pop
    from jaxdyn.runner import CohortPrograms

    cfg = _cfg({"steps": 2, "chunk_steps": 2, "batch_size": 8}, {"clients": 3, "local_steps": 2},
               study={"seeds": 3})
    (cohort,) = expand(load_config(cfg))
    layout = pop.plan_layout(9, mesh.size, 0, "cpu")
    programs = CohortPrograms.build(cohort, layout, mesh)
    state = programs.start()
    noise = jax.random.normal(jax.random.PRNGKey(0), (layout.n_padded,))  # clients that differ, to tell them apart
    state = state._replace(params=jax.tree.map(lambda a: a * (1 + 0.1 * noise.reshape((-1,) + (1,) * (a.ndim - 1))),
                                               state.params))
    alive = np.ones(layout.n_padded, bool)
    alive[[0, 6, 7, 8]] = False  # federation 0 loses client 0; federation 2 loses all three
    state = state._replace(alive=jax.device_put(alive, state.alive.sharding))
    data = load_dataset("mnist1d", n_train=400)
    scores = jax.device_get(programs.evaluate(state, *pop.replicate((data.x_test, data.y_test), mesh)))
    task = cohort.task()
    want = {}
    for member, first in ((1, 1), (3, 3)):  # the first living client of federations 0 and 1
        params = jax.tree.map(lambda a: np.asarray(a)[first], state.params)
        logits = task.model.apply({"params": params}, data.x_test)
        want[member] = float(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_test).mean())
    loss = scores["loss"][:9]
    assert np.isnan(loss[[0, 6, 7, 8]]).all()
    np.testing.assert_allclose(loss[[1, 2]], want[1], rtol=1e-5)
    np.testing.assert_allclose(loss[[3, 4, 5]], want[3], rtol=1e-5)
    assert want[1] != pytest.approx(want[3])


def test_local_epochs_become_steps_per_round_and_show_in_the_member_table():
    """McMahan et al.'s u = E n_k / B: 400 examples over 4 clients in batches of 8 is 12.5 steps an
    epoch, so 2 epochs are 25 steps a round."""
    cfg = _cfg({"steps": 50, "chunk_steps": 25, "batch_size": 8}, {"clients": 4, "local_epochs": 2.0})
    (cohort,) = expand(load_config(cfg))
    assert cohort.config.federated.local_steps == 25 and set(cohort.members.local_steps) == {25}
    bad = _cfg({"steps": 60, "chunk_steps": 20, "batch_size": 8}, {"clients": 4, "local_epochs": 2.0})
    with pytest.raises(jaxdyn.ConfigError, match="from local_epochs = 2: 2 x 100 examples per client / batch_size 8"):
        expand(load_config(bad))


def test_a_natural_partition_follows_the_client_ids_handed_over(tmp_path):
    data = load_dataset("mnist1d", n_train=400)
    ids = np.random.default_rng(0).integers(0, 5, 400)
    arrays = {"x": data.x_train[:400], "y": data.y_train[:400], "x_test": data.x_test, "y_test": data.y_test,
              "client": ids}
    cfg = _cfg({"steps": 4, "chunk_steps": 2, "batch_size": 8}, {"clients": 5, "local_steps": 2,
                                                                 "partition": "natural"})
    cfg["data"] = {}
    res = jaxdyn.run(cfg, data=arrays, out=tmp_path / "run", progress=False, summary=False)
    table = res.partition()
    assert table.examples.tolist() == np.bincount(ids).tolist()
    for c in range(5):
        assert table.loc[c, [f"label_{k}" for k in range(10)]].tolist() == \
            np.bincount(data.y_train[:400][ids == c], minlength=10).tolist()
    for bad, message in ((np.where(ids == 4, 5, ids), "client ids run from 0 to 5"),
                         (np.where(ids == 3, 0, ids), "client 3 has no examples")):
        with pytest.raises(jaxdyn.ConfigError, match=message):
            jaxdyn.run(cfg, data={**arrays, "client": bad}, out=tmp_path / "bad", progress=False, summary=False)
    with pytest.raises(jaxdyn.ConfigError, match="client ids without x_test"):
        jaxdyn.run(cfg, data={"x": arrays["x"], "y": arrays["y"], "client": ids}, out=tmp_path / "bad2",
                   progress=False, summary=False)


def test_local_accuracy_is_a_clients_own_score_after_its_local_steps(tmp_path):
    """One client holding every example: after the last round's local steps its model is the global
    one (the average of one), so local_accuracy is that model's accuracy on its first 256 examples."""
    cfg = _cfg({"steps": 20, "chunk_steps": 10, "batch_size": 8, "log_every": 5},
               {"clients": 1, "local_steps": 5})
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    member = jaxdyn.extract_member(tmp_path / "run", 0)
    data = load_dataset("mnist1d", n_train=400)
    logits = member.model.apply(member.variables, data.x_train[:256])
    local = res.frame("local_accuracy").set_index("step").value
    assert list(local.index) == [10, 20]  # the last round of each chunk
    assert local[20] == pytest.approx(float((logits.argmax(-1) == data.y_train[:256]).mean()), abs=1e-6)
    loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_train[:256]).mean())
    assert res.frame("local_loss").set_index("step").value[20] == pytest.approx(loss, rel=1e-4)


def test_a_diverging_federation_is_frozen_and_the_others_train_on_bitwise_unaffected(tmp_path):
    """Learning rate 1e4 sends federation 1's clients to NaN; they are frozen and flagged, the run
    goes on, and federation 0 ends bit for bit as in the same study with a tame second federation."""
    def run(name, rates):
        cfg = _cfg({"steps": 20, "chunk_steps": 10, "batch_size": 8, "log_every": 5},
                   {"clients": 3, "local_steps": 5}, grid={"optim.learning_rate": rates})
        cfg["optim"] = {"name": "sgd"}
        return jaxdyn.run(cfg, out=tmp_path / name, progress=False, summary=False)

    wild, tame = run("wild", [0.1, 1e4]), run("tame", [0.1, 0.2])
    w, t = wild.members.set_index("member"), tame.members.set_index("member")
    assert (w.loc[[3, 4, 5], "diverged_at"] >= 0).all() and (w.loc[[0, 1, 2], "diverged_at"] == -1).all()
    assert w.loc[[3, 4, 5], "final_test_accuracy"].isna().all()
    pd.testing.assert_series_equal(w.loc[[0, 1, 2], "final_test_loss"], t.loc[[0, 1, 2], "final_test_loss"],
                                   check_exact=True)
    first = lambda name: jax.tree.map(lambda a: np.asarray(a)[:3], load_state(tmp_path / name)["params"])
    jax.tree.map(np.testing.assert_array_equal, first("wild"), first("tame"))


def test_a_client_left_out_of_a_round_takes_no_step_and_cannot_diverge_in_it(tmp_path):
    """A linear model at learning rates 4 and 8 diverges, and 2 of 10 clients take part in each
    round: a client diverges only in a round it took part in, so at most 2 of a federation in any
    round (when every client computed its local steps and the left-out ones' were discarded, all
    10 froze in the same round, 8 of them for steps they never took). The clients alive at the end
    hold their federation's global model."""
    cfg = _cfg({"steps": 40, "chunk_steps": 20, "batch_size": 10, "log_every": 5},
               {"clients": 10, "local_steps": 5, "client_fraction": 0.2}, grid={"optim.learning_rate": [4.0, 8.0]})
    cfg["model"], cfg["optim"] = {"hidden": [16], "activation": "identity"}, {"name": "sgd"}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    members = res.members
    dead = members[members.diverged_at >= 0]
    assert len(dead) >= 4 and set(dead.federation) == {0, 1}
    per_round = dead.assign(round=dead.diverged_at // 5).groupby(["federation", "round"]).member.count()
    assert per_round.max() <= 2, per_round
    alive = members[members.diverged_at < 0]
    assert len(alive) >= 2 and set(alive.federation) == {0, 1}
    params = load_state(tmp_path / "run")["params"]
    for _, clients in alive.groupby("federation"):
        first, *rest = clients.member
        for other in rest:
            jax.tree.map(lambda a: np.testing.assert_array_equal(np.asarray(a)[other], np.asarray(a)[first]), params)


def test_the_summary_counts_federations():
    from jaxdyn.results import summarize

    members = pd.DataFrame({"member": range(6), "cohort": 0, "federation": [0, 0, 0, 1, 1, 1],
                            "client": [0, 1, 2] * 2, "init_seed": [0, 0, 0, 1, 1, 1],
                            "final_test_accuracy": [np.nan, 0.5, 0.5, np.nan, np.nan, np.nan],
                            "final_test_loss": [np.nan, 1.0, 1.0] + [np.nan] * 3, "final_train_loss": 1.0,
                            "diverged_at": [3, -1, -1, 5, 4, 6]})
    table = summarize(members)
    assert table.members.tolist() == [2] and table.diverged.tolist() == [1]
    assert table.test_accuracy_mean.tolist() == [0.5]
