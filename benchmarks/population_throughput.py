"""Throughput of the default MLP workload (MNIST-1D, MLP 40-100-100-10, Adam, batch 100).

For K in {1, 8, 32, 128} members it measures member-steps/s and achieved GFLOP/s
of jaxdyn's population program and, in the SAME run, the references they are
judged against:
  - roofline: a large float32 matrix product on all cores (the best this machine does);
  - sequential: the same K members trained one after another as solo jit(scan) runs;
  - naive: a jitted single step called from Python with host-side numpy batches,
    the loop most tutorials write.
Only ratios within one run are meaningful. Writes benchmarks/results/<device>-<time>.json.

    python benchmarks/population_throughput.py [--quick]
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdyn import population as pop
from jaxdyn.data import load_dataset
from jaxdyn.models import MLP
from jaxdyn.optim import FAMILIES
from jaxdyn.tasks.supervised import Seeds, SupervisedTask

WIDTHS = (40, 100, 100, 10)
BATCH = 100


def step_flops(batch=BATCH, widths=WIDTHS) -> float:
    """Matmul FLOPs of one training step: forward 2*B*i*o per layer, backward 2x that,
    less the input gradient of the first layer, which nobody needs."""
    pairs = list(zip(widths[:-1], widths[1:]))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    return 3 * fwd - 2 * batch * pairs[0][0] * pairs[0][1]


def best_of(fn, repeats=3) -> float:
    """Fastest wall time of ``fn()`` (which must block) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def roofline(n=2048) -> dict:
    """float32 matmul GFLOP/s: one device's dot, and one dot per device sharded on all devices."""
    a = jnp.ones((n, n), jnp.float32)
    single = jax.jit(lambda x: x @ x)
    single(a).block_until_ready()
    t_single = best_of(lambda: single(a).block_until_ready(), 5)
    mesh = pop.make_mesh()
    d = mesh.size
    stacked = jax.device_put(jnp.ones((d, n, n), jnp.float32), NamedSharding(mesh, P(pop.AXIS)))
    sharded = jax.jit(jax.shard_map(lambda x: x @ x, mesh=mesh, in_specs=P(pop.AXIS), out_specs=P(pop.AXIS)))
    sharded(stacked).block_until_ready()
    t_sharded = best_of(lambda: sharded(stacked).block_until_ready(), 5)
    flops = 2 * n**3
    return {"n": n, "one_device_gflops": flops / t_single / 1e9,
            "all_devices_gflops": d * flops / t_sharded / 1e9,
            "gflops": max(flops / t_single, d * flops / t_sharded) / 1e9}


def matmul_only_rate(data, mesh, chunk, group=8) -> float:
    """Member-steps/s of the step's matmuls alone (forward and backward of a linear
    40-100-100-10 net, no activation, optimizer, sampling or guard), vmapped over
    ``group`` members per device as the population runs them: the bound that this
    workload's small GEMMs put on it."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    shapes = list(zip(WIDTHS[:-1], WIDTHS[1:]))
    n = mesh.size * group
    ws = [jax.random.normal(k, (n, i, o), jnp.float32) * 0.01 for k, (i, o) in zip(keys, shapes)]
    ws = jax.device_put(ws, NamedSharding(mesh, P(pop.AXIS)))
    x = data.x_train[:BATCH]

    def member(w):
        def body(w, _):
            g = jax.grad(lambda w: jnp.sum(x @ w[0] @ w[1] @ w[2]))(w)
            return [a - 1e-9 * b for a, b in zip(w, g)], None
        return lax.scan(body, w, None, length=chunk)[0]

    run = jax.jit(jax.shard_map(jax.vmap(member), mesh=mesh, in_specs=P(pop.AXIS), out_specs=P(pop.AXIS)))
    jax.block_until_ready(run(ws))
    return n * chunk / best_of(lambda: jax.block_until_ready(run(ws)))


def make_task():
    return SupervisedTask(MLP(WIDTHS[1:-1], WIDTHS[-1]), FAMILIES["adam"], BATCH, (WIDTHS[0],))


def member_values(k):
    seeds = Seeds(np.arange(k, dtype=np.int32), np.arange(k, dtype=np.int32))
    lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2], np.float32)[np.arange(k) % 4]
    hp = {n: np.full(k, v, np.float32) for n, v in FAMILIES["adam"].defaults.items()} | {"learning_rate": lrs}
    return seeds, hp


def population_rate(k, data, mesh, chunk, group=0) -> dict:
    task = make_task()
    layout = pop.plan_layout(k, mesh.size, group, mesh.devices.flat[0].platform)
    seeds, hp = jax.tree.map(lambda a: pop.pad_members(a, layout), member_values(k))
    state = pop.init_population(task, seeds, hp, mesh)
    train_chunk = pop.make_train_chunk(task, chunk, chunk, layout.group_size, mesh)
    state, m = train_chunk(state, data)  # compile + warm up
    jax.block_until_ready(m)
    box = [state]

    def one():
        box[0], metrics = train_chunk(box[0], data)
        jax.block_until_ready(metrics)

    t = best_of(one)
    rate = k * chunk / t
    return {"members": k, "padded": layout.n_padded, "group": layout.group_size,
            "member_steps_per_s": rate, "gflops": rate * step_flops() / 1e9}


def sequential_rate(k, data, chunk) -> float:
    """K solo runs one after another: jit(scan(step)) for one member, compiled once."""
    task = make_task()
    seeds, hp = member_values(k)
    init = jax.jit(task.init)
    run = jax.jit(lambda s: lax.scan(lambda c, _: task.step(c, data), s, None, length=chunk))
    first = jax.tree.map(lambda x: x[0], (seeds, hp))
    jax.block_until_ready(run(init(*first)))

    def all_members():
        for i in range(k):
            state, metrics = run(init(*jax.tree.map(lambda x: x[i], (seeds, hp))))
            jax.block_until_ready(metrics)

    return k * chunk / best_of(all_members, 2)


def naive_rate(ds, steps) -> float:
    """A tutorial loop: numpy batches on the host, one jitted step call per step."""
    model, tx = MLP(WIDTHS[1:-1], WIDTHS[-1]), FAMILIES["adam"].make(1e-3, 0.9, 0.999, 1e-8)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, WIDTHS[0])))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, loss

    rng = np.random.default_rng(0)

    def loop():
        nonlocal params, opt_state
        for _ in range(steps):
            idx = rng.integers(0, len(ds.x_train), BATCH)
            params, opt_state, loss = step(params, opt_state, ds.x_train[idx], ds.y_train[idx])
        loss.block_until_ready()

    loop()
    return steps / best_of(loop, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter chunks (for a smoke test)")
    parser.add_argument("--sizes", default="1,8,32,128")
    parser.add_argument("--groups", default="4,8,16,all", help="member groups tried at the largest K")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    chunk = 100 if args.quick else 500
    sizes = [int(s) for s in args.sizes.split(",")]

    ds = load_dataset("mnist1d")
    mesh = pop.make_mesh()
    data = pop.replicate(ds, mesh)
    dev = jax.devices()[0]
    result = {
        "benchmark": "population_throughput",
        "workload": {"dataset": "mnist1d", "widths": WIDTHS, "optimizer": "adam", "batch": BATCH,
                     "chunk_steps": chunk, "step_mflop": step_flops() / 1e6},
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": len(jax.devices()),
                   "host": platform.node(), "cpu": platform.processor() or platform.machine()},
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    result["roofline"] = roofline()
    print(f"roofline: {result['roofline']['gflops']:.1f} GFLOP/s", flush=True)
    result["naive_loop_member_steps_per_s"] = naive_rate(ds, 200 if args.quick else 1000)
    print(f"naive per-step loop: {result['naive_loop_member_steps_per_s']:.0f} member-steps/s", flush=True)

    rate = matmul_only_rate(data, mesh, chunk)
    result["matmul_only"] = {"member_steps_per_s": rate, "gflops": rate * step_flops() / 1e9,
                             "fraction_of_roofline": rate * step_flops() / 1e9 / result["roofline"]["gflops"]}
    print(f"matmuls alone: {rate:.0f} member-steps/s, {result['matmul_only']['gflops']:.1f} GFLOP/s "
          f"({result['matmul_only']['fraction_of_roofline']:.2f} of roofline)", flush=True)

    rows = []
    for k in sizes:
        row = population_rate(k, data, mesh, chunk)
        row["sequential_member_steps_per_s"] = sequential_rate(min(k, 8), data, chunk)
        row["vs_sequential"] = row["member_steps_per_s"] / row["sequential_member_steps_per_s"]
        row["vs_naive"] = row["member_steps_per_s"] / result["naive_loop_member_steps_per_s"]
        row["fraction_of_roofline"] = row["gflops"] / result["roofline"]["gflops"]
        row["fraction_of_matmul_only"] = row["member_steps_per_s"] / rate
        rows.append(row)
        print(f"K={k:4d}: {row['member_steps_per_s']:8.0f} member-steps/s  {row['gflops']:6.1f} GFLOP/s  "
              f"{row['fraction_of_roofline']:.2f} of roofline  {row['vs_sequential']:.1f}x sequential  "
              f"{row['vs_naive']:.1f}x naive", flush=True)
    result["populations"] = rows

    big = max(sizes)
    result["member_groups"] = []
    for g in (big if s == "all" else int(s) for s in args.groups.split(",")):
        row = population_rate(big, data, mesh, chunk, group=g)
        result["member_groups"].append(row)
        print(f"K={big} group={row['group']:3d}: {row['member_steps_per_s']:8.0f} member-steps/s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"population_throughput-{dev.platform}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
