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
from jaxdyn.axes import MEMBER_HPARAMS
from jaxdyn.optim import FAMILIES
from jaxdyn.tasks.supervised import Seeds, SupervisedTask
from timing import best_times, write_result  # noqa: E402  (benchmarks/timing.py)

WIDTHS = (40, 100, 100, 10)
BATCH = 100


def step_flops(batch=BATCH, widths=WIDTHS) -> float:
    """Matmul FLOPs of one training step: forward 2*B*i*o per layer, backward 2x that,
    less the input gradient of the first layer, which nobody needs."""
    pairs = list(zip(widths[:-1], widths[1:]))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    return 3 * fwd - 2 * batch * pairs[0][0] * pairs[0][1]


def roofline_runners(n: int = 0) -> tuple[dict, dict]:
    """float32 matmul: one device's dot, and one dot per device sharded on all devices.
    ``n`` (the side) defaults to 2048 on CPU and 8192 on an accelerator, where a 2048²
    product is too short to reach the peak. Returns runners and the FLOPs each does."""
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jnp.ones((n, n), jnp.float32)
    single = jax.jit(lambda x: x @ x)
    mesh = pop.make_mesh()
    stacked = jax.device_put(jnp.ones((mesh.size, n, n), jnp.float32), NamedSharding(mesh, P(pop.AXIS)))
    sharded = jax.jit(jax.shard_map(lambda x: x @ x, mesh=mesh, in_specs=P(pop.AXIS), out_specs=P(pop.AXIS)))
    runners = {"roofline_one_device": lambda: single(a).block_until_ready(),
               "roofline_all_devices": lambda: sharded(stacked).block_until_ready()}
    for fn in runners.values():
        fn()
    return runners, {"roofline_one_device": 2 * n**3, "roofline_all_devices": mesh.size * 2 * n**3, "n": n}


def matmul_only_runner(data, mesh, chunk, group=8):
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
    return n * chunk, lambda: jax.block_until_ready(run(ws))


def make_task():
    return SupervisedTask(MLP(WIDTHS[1:-1], WIDTHS[-1]), FAMILIES["adam"], BATCH, (WIDTHS[0],))


def member_values(k):
    seeds = Seeds(*(np.arange(k, dtype=np.int32) for _ in Seeds._fields))
    lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2], np.float32)[np.arange(k) % 4]
    defaults = FAMILIES["adam"].defaults | {key.split(".")[1]: h.default for key, h in MEMBER_HPARAMS.items()}
    hp = {n: np.full(k, v, np.float32) for n, v in defaults.items()} | {"learning_rate": lrs}
    return seeds, hp


def population_runner(k, data, mesh, chunk, group=0):
    """A warmed-up population of K members; returns its layout and a runner of one chunk."""
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

    return {"members": k, "padded": layout.n_padded, "group": layout.group_size}, one


def sequential_runner(k, data, chunk):
    """K solo runs one after another: jit(scan(step)) for one member, compiled once."""
    task = make_task()
    seeds, hp = member_values(k)
    init = jax.jit(task.init)
    run = jax.jit(lambda s: lax.scan(lambda c, _: task.step(c, data), s, None, length=chunk))
    first = jax.tree.map(lambda x: x[0], (seeds, hp))
    jax.block_until_ready(run(init(*first)))

    def all_members():
        for i in range(k):
            state, metrics = run(init(*jax.tree.map(lambda x, i=i: x[i], (seeds, hp))))
            jax.block_until_ready(metrics)

    return all_members


def naive_runner(ds, steps):
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
    return loop


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter chunks (for a smoke test)")
    parser.add_argument("--sizes", default="1,8,32,128")
    parser.add_argument("--groups", default="4,8,16,all", help="member groups tried at the largest K")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of)")
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
        "method": "every variant compiled first, then timed in interleaved rounds; best of rounds",
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": len(jax.devices()),
                   "host": platform.node(), "cpu": platform.processor() or platform.machine()},
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    runners, work = roofline_runners()  # work: member-steps (or FLOPs) per call
    roof_n = work.pop("n")
    runners["naive"], work["naive"] = naive_runner(ds, chunk), chunk
    work["matmul_only"], runners["matmul_only"] = matmul_only_runner(data, mesh, chunk)
    layouts = {}
    big = max(sizes)
    groups = [big if g == "all" else int(g) for g in args.groups.split(",")]
    for name, k, group in [*((f"population_{k}", k, 0) for k in sizes),
                           *((f"group_{g}", big, g) for g in groups)]:
        layouts[name], runners[name] = population_runner(k, data, mesh, chunk, group)
        work[name] = k * chunk
    for k in sizes:
        n_solo = min(k, 8)  # K solo runs cost K times one: time up to 8 of them
        runners[f"sequential_{k}"], work[f"sequential_{k}"] = sequential_runner(n_solo, data, chunk), n_solo * chunk
    print(f"compiled {len(runners)} programs; timing {args.rounds} interleaved rounds", flush=True)
    best = best_times(runners, args.rounds)
    rate = {name: work[name] / best[name] for name in runners}  # per second

    roof = max(rate["roofline_one_device"], rate["roofline_all_devices"]) / 1e9
    result["roofline"] = {"gflops": roof, "one_device_gflops": rate["roofline_one_device"] / 1e9,
                          "all_devices_gflops": rate["roofline_all_devices"] / 1e9, "n": roof_n}
    result["naive_loop_member_steps_per_s"] = rate["naive"]
    mm = rate["matmul_only"]
    result["matmul_only"] = {"member_steps_per_s": mm, "gflops": mm * step_flops() / 1e9,
                             "fraction_of_roofline": mm * step_flops() / 1e9 / roof}
    print(f"roofline {roof:.1f} GFLOP/s; naive loop {rate['naive']:.0f} member-steps/s; matmuls alone "
          f"{mm:.0f} member-steps/s ({result['matmul_only']['fraction_of_roofline']:.2f} of roofline)")

    def row(name):
        r = {**layouts[name], "member_steps_per_s": rate[name], "gflops": rate[name] * step_flops() / 1e9}
        r["fraction_of_roofline"] = r["gflops"] / roof
        r["fraction_of_matmul_only"] = rate[name] / mm
        return r

    result["populations"] = []
    for k in sizes:
        r = row(f"population_{k}")
        r["sequential_member_steps_per_s"] = rate[f"sequential_{k}"]
        r["vs_sequential"] = rate[f"population_{k}"] / rate[f"sequential_{k}"]
        r["vs_naive"] = rate[f"population_{k}"] / rate["naive"]
        result["populations"].append(r)
        print(f"K={k:4d}: {r['member_steps_per_s']:8.0f} member-steps/s  {r['gflops']:6.1f} GFLOP/s  "
              f"{r['fraction_of_roofline']:.2f} of roofline  {r['vs_sequential']:.1f}x sequential  "
              f"{r['vs_naive']:.1f}x naive")
    result["member_groups"] = [row(f"group_{g}") for g in groups]
    for r in result["member_groups"]:
        print(f"K={big} group={r['group']:3d}: {r['member_steps_per_s']:8.0f} member-steps/s")

    write_result(args.out, "population_throughput", dev.platform, result)
    return result


if __name__ == "__main__":
    main()
