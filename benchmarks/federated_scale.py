"""Clients per second in a FedAvg round: a federation as one jaxdyn program against a per-client
Python loop of the same local training (FedJAX's execution model).

One federation of K clients (K = 10, 100, 1,000, 10,000), each holding its part of an iid
partition of MNIST-1D (generated at max(4,000, 2K) training examples: ``data.n_examples``), trains the default MLP
(40-100-100-10, ReLU) with SGD (learning rate 0.05), E = 10 local steps of batch 10 per round,
every client taking part, and the server averages the clients' weights by example count.

- ``jaxdyn``: the study's own chunk program (``Cohort.train_chunk``) running ``R`` rounds per
  chunk; a round's time is a chunk's over R.
- ``loop``: for each client in Python, a jitted step (``jax.jit`` of one SGD step, as FedJAX's
  ``for_each_client`` jit backend steps a client) called E times on batches drawn from the
  client's examples, then the client's weights added to a running weighted sum; the average
  at the end. The per-client loop at 10,000 clients takes minutes a round, so it is timed on
  ``--loop-clients`` of them and scaled (it is linear in K: every client costs the same).

Both are timed best-of ``--repeats`` after a warm-up that compiles. Written as JSON under
``benchmarks/results/`` with the device.

Partial participation (``--fractions``, default ``1.0,0.1``): jaxdyn is timed again
with ``client_fraction`` C, where only the device's groups holding a sampled client compute; the
loop's time at C is its full round scaled by m / K (m clients sampled: it steps only those).

    python benchmarks/federated_scale.py [--clients 10,100,1000,10000] [--fractions 1.0,0.1] [--repeats 3]
"""

import argparse
import math
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.federated.config import selected_per_round
from jaxdyn.federated.setup import client_examples
from jaxdyn.memory import member_state_bytes
from jaxdyn.runner import CohortPrograms
from jaxdyn.study import expand
from timing import environment, write_result  # noqa: E402  (benchmarks/timing.py)

E, BATCH, LR = 10, 10, 0.05


def study(k: int, rounds_per_chunk: int, n_train: int, fraction: float = 1.0) -> dict:
    return {"study": {"seeds": 1}, "data": {"name": "mnist1d", "n_examples": n_train},
            "model": {"kind": "mlp", "hidden": [100, 100]}, "optim": {"name": "sgd", "learning_rate": LR},
            "train": {"batch_size": BATCH, "chunk_steps": E * rounds_per_chunk, "steps": E * rounds_per_chunk * 100,
                      "log_every": E, "eval_every": 1000},
            "probes": {"norms": {"every": 0}, "activations": {"every": 0}},
            "federated": {"clients": k, "local_steps": E, "client_fraction": fraction}}


def jaxdyn_round(cohort, data, mesh, rounds_per_chunk: int, repeats: int) -> dict:
    """Seconds per round of the federation's own chunk program (R rounds a chunk), best of ``repeats``."""
    k = len(cohort.members)
    layout = pop.plan_layout(k, mesh.size, 0, mesh.devices.flat[0].platform)
    programs = CohortPrograms.build(cohort, layout, mesh)
    state = programs.init()
    state, metrics = programs.train_chunk(state, data)  # compile and warm up
    jax.block_until_ready(metrics)
    best = math.inf
    for _ in range(repeats):
        tic = time.perf_counter()
        state, metrics = programs.train_chunk(state, data)
        jax.device_get(metrics)
        best = min(best, time.perf_counter() - tic)
    params = jax.tree.map(lambda a: a[0], state.params)
    return {"seconds_per_round": best / rounds_per_chunk, "padded": layout.n_padded, "group": layout.group_size,
            "state_bytes_per_client": member_state_bytes(cohort),
            "loss_finite": bool(np.isfinite(np.asarray(metrics["loss"])[:k]).all()), "params": params,
            "model": cohort.task().model}


def loop_round(model, params, examples, weights, data, clients: int, repeats: int) -> float:
    """Seconds per round of a per-client Python loop over the first ``clients`` clients: a jitted
    SGD step called E times per client on batches drawn (on the host) from its examples, and a
    jitted weighted accumulation of its weights; best of ``repeats``."""
    x, y = data.x_train, data.y_train

    @jax.jit
    def step(p, idx):
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": q}, x[idx]),
                                                                         y[idx]).mean()
        return jax.tree.map(lambda w, g: w - LR * g, p, jax.grad(loss)(p))

    accumulate = jax.jit(lambda acc, p, w: jax.tree.map(lambda a, b: a + w * b, acc, p))
    rng = np.random.default_rng(0)

    def one_round():
        acc = jax.tree.map(jnp.zeros_like, params)
        for c in range(clients):
            p = params
            mine = examples.order[examples.start[c]:examples.start[c] + examples.count[c]]
            for _ in range(E):
                p = step(p, jnp.asarray(rng.choice(mine, BATCH)))
            acc = accumulate(acc, p, weights[c])
        new = jax.tree.map(lambda a: a / weights[:clients].sum(), acc)
        jax.block_until_ready(new)

    one_round() if clients <= 100 else loop_warm(step, accumulate, params, examples, weights)
    best = math.inf
    for _ in range(repeats):
        tic = time.perf_counter()
        one_round()
        best = min(best, time.perf_counter() - tic)
    return best


def loop_warm(step, accumulate, params, examples, weights) -> None:
    """Compile the loop's two functions once (a round of 1,000 clients is too long to spend on it)."""
    p = step(params, jnp.asarray(examples.order[:BATCH]))
    jax.block_until_ready(accumulate(params, p, weights[0]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100,1000,10000")
    parser.add_argument("--rounds-per-chunk", type=int, default=5)
    parser.add_argument("--fractions", default="1.0,0.1", help="client_fraction values to time jaxdyn at")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-clients", type=int, default=1000,
                        help="the loop is timed on at most this many clients and scaled to K")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    mesh = pop.make_mesh()
    fractions = [float(f) for f in args.fractions.split(",")]
    result = {"environment": environment(), "local_steps": E, "batch_size": BATCH, "learning_rate": LR,
              "model": "MLP 40-100-100-10 (ReLU)", "partition": "iid", "results": []}
    for k in map(int, args.clients.split(",")):
        n_train = max(4000, 2 * k)
        loop = None
        for fraction in fractions:
            (cohort,) = expand(load_config(study(k, args.rounds_per_chunk, n_train, fraction)))
            data = load_dataset(cohort.config.data)
            on_device = pop.replicate(data, mesh)
            ours = jaxdyn_round(cohort, on_device, mesh, args.rounds_per_chunk, args.repeats)
            model, params = ours.pop("model"), ours.pop("params")
            examples = client_examples(cohort.config.data, cohort.config.federated)
            timed = min(k, args.loop_clients)
            if loop is None:  # the loop's full round, once per K
                weights = examples.count.astype(np.float32)
                loop = loop_round(model, params, examples, weights, on_device, timed,
                                  1 if timed > 100 else args.repeats) * k / timed
            m = selected_per_round(cohort.config.federated)
            loop_at = loop * m / k
            row = {"clients": k, "client_fraction": fraction, "sampled": m, "n_train": n_train, **ours,
                   "loop_seconds_per_round": loop_at, "loop_clients_timed": timed,
                   "jaxdyn_clients_per_second": k / ours["seconds_per_round"], "loop_clients_per_second": k / loop_at,
                   "speedup": loop_at / ours["seconds_per_round"]}
            result["results"].append(row)
            print(f"K = {k:>6}, C = {fraction:g} ({m} sampled): jaxdyn {ours['seconds_per_round'] * 1e3:9.1f} ms/round "
                  f"({row['jaxdyn_clients_per_second']:9.0f} clients/s), loop {loop_at * 1e3:10.1f} ms/round "
                  f"({row['loop_clients_per_second']:7.0f} clients/s{'' if timed == k else f', timed on {timed}'}): "
                  f"{row['speedup']:.1f}x; state {ours['state_bytes_per_client'] / 1e3:.0f} kB per client")
    write_result(args.out, "federated_scale", result["environment"]["device"]["platform"], result)
    return result


if __name__ == "__main__":
    main()
