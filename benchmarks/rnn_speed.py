"""Training speed of the recurrent model against the MLP on MNIST-1D-shaped input.

For a GRU and an LSTM (input (40,), so 40 steps of one feature; hidden 64; readout
"last"; batch 100) and the MLP 40-100-100-10, it times one plain SGD step (forward,
backward, update) of K members under ``jax.vmap``, ``steps`` steps per call in a
``lax.scan``, all compiled first and timed in interleaved rounds (best of).

To say what limits the RNN it also times, per cell, the same recurrent matmuls with
the time dependency removed: one ``[T*B, H] x [H, gH]`` product per member, forward
and backward. The recurrent step cannot do that, since step t needs step t-1's
state, so the ratio is what the 40 sequential small products cost over the same
FLOPs done at once. Runs on one device. Writes
benchmarks/results/rnn_speed-<platform>-<time>.json.

    python benchmarks/rnn_speed.py [--members 8] [--steps 20] [--rounds 3]
"""

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxdyn.models.mlp import MLP
from jaxdyn.models.rnn import RNN, RNNConfig
from timing import best_times, write_result  # noqa: E402  (benchmarks/timing.py)

T, HIDDEN, BATCH, N_OUT = 40, 64, 100, 10
MLP_WIDTHS = (40, 100, 100, 10)
GATES = {"gru": 3, "lstm": 4}


def rnn_step_flops(cell: str) -> float:
    """Matmul FLOPs of one training step: per time step the input (F = 1) and recurrent
    products, 2*B*(1 + H)*gH, then the head; backward costs about twice the forward."""
    g = GATES[cell]
    fwd = T * 2 * BATCH * (1 + HIDDEN) * g * HIDDEN + 2 * BATCH * HIDDEN * N_OUT
    return 3 * fwd


def mlp_step_flops() -> float:
    return 3 * sum(2 * BATCH * i * o for i, o in itertools.pairwise(MLP_WIDTHS))


def train_runner(model, members: int, steps: int):
    """Runner of ``steps`` SGD steps of ``members`` members (vmap over stacked params)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, T))
    y = jax.random.randint(jax.random.PRNGKey(1), (BATCH,), 0, N_OUT)
    keys = jax.random.split(jax.random.PRNGKey(2), members)
    params = jax.jit(jax.vmap(lambda k: model.init(k, x)["params"]))(keys)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

    def member(p):
        def body(p, _):
            return jax.tree.map(lambda w, g: w - 1e-3 * g, p, jax.grad(loss)(p)), None
        return lax.scan(body, p, None, length=steps)[0]

    run = jax.jit(jax.vmap(member))
    jax.block_until_ready(run(params))
    return lambda: jax.block_until_ready(run(params))


def time_parallel_runner(cell: str, members: int, steps: int):
    """The recurrent products' FLOPs with no time dependency: ``[T*B, H] x [H, gH]``,
    forward and gradient, per member, ``steps`` times."""
    g = GATES[cell]
    h = jax.random.normal(jax.random.PRNGKey(0), (T * BATCH, HIDDEN))
    w = jax.random.normal(jax.random.PRNGKey(1), (members, HIDDEN, g * HIDDEN)) * 0.1

    def member(w):
        def body(w, _):
            return w - 1e-9 * jax.grad(lambda w: jnp.sum(jnp.tanh(h @ w)))(w), None
        return lax.scan(body, w, None, length=steps)[0]

    run = jax.jit(jax.vmap(member))
    jax.block_until_ready(run(w))
    return lambda: jax.block_until_ready(run(w))


def roofline_runner(n=1024):
    """A large float32 matmul on one device: the most this device does now (load varies)."""
    a = jnp.ones((n, n), jnp.float32)
    run = jax.jit(lambda x: x @ x)
    run(a).block_until_ready()
    return lambda: run(a).block_until_ready(), 2 * n**3


def explain(rows: dict, cell: str = "gru") -> str:
    """One line splitting the RNN's slowdown against the MLP into FLOPs and achieved rate.

    member-steps/s ratio = (FLOPs per step ratio) x (GFLOP/s ratio); the time-parallel
    reference tells how much of the GFLOP/s shortfall the sequential scan causes.
    """
    r, mlp, par = rows[cell], rows["mlp"], rows[f"{cell}_time_parallel"]
    slower = mlp["member_steps_per_s"] / r["member_steps_per_s"]
    more_flops = r["step_mflop"] / mlp["step_mflop"]
    scan_cost = par["gflops"] / r["gflops"]
    bound = ("FLOPs dominate; the scan's sequential latency is the second factor" if more_flops > scan_cost
             else "the scan's sequential latency dominates")
    return (f"{cell.upper()}: {slower:.0f}x fewer member-steps/s than the MLP = {more_flops:.0f}x the FLOPs per "
            f"step ({T} dependent [{BATCH}x{HIDDEN}]x[{HIDDEN}x{GATES[cell] * HIDDEN}] products forward and "
            f"{T} backward, against 3 layers) x {slower / more_flops:.1f}x lower GFLOP/s ({r['gflops']:.0f}, "
            f"{r['fraction_of_roofline']:.2f} of a large matmul). The same products with time made parallel run "
            f"at {par['gflops']:.0f} GFLOP/s, {scan_cost:.1f}x the scan, whose steps take "
            f"{r['us_per_time_step']:.0f} us each for all members: {bound}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="SGD steps per timed call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    k, steps = args.members, args.steps

    runners, flops = {}, {}
    for cell, gates in GATES.items():
        model = RNN.from_config(RNNConfig(cell=cell, hidden_size=HIDDEN), (T,), N_OUT, False)
        runners[cell], flops[cell] = train_runner(model, k, steps), rnn_step_flops(cell)
        runners[f"{cell}_time_parallel"] = time_parallel_runner(cell, k, steps)
        flops[f"{cell}_time_parallel"] = 3 * 2 * T * BATCH * HIDDEN * gates * HIDDEN
    runners["mlp"], flops["mlp"] = train_runner(MLP(MLP_WIDTHS[1:-1], N_OUT), k, steps), mlp_step_flops()
    runners["roofline"], roof_flop = roofline_runner()
    print(f"compiled {len(runners)} programs; timing {args.rounds} interleaved rounds", flush=True)
    best = best_times(runners, args.rounds)

    roof = roof_flop / best.pop("roofline") / 1e9
    rows = {}
    for name in best:
        rate = k * steps / best[name]
        rows[name] = {"member_steps_per_s": rate, "step_mflop": flops[name] / 1e6,
                      "gflops": rate * flops[name] / 1e9, "fraction_of_roofline": rate * flops[name] / 1e9 / roof}
    for cell in GATES:
        # wall time of one time step, forward and backward, of all K members together
        rows[cell]["us_per_time_step"] = 1e6 * k / rows[cell]["member_steps_per_s"] / (2 * T)
        rows[cell]["vs_mlp_member_steps"] = rows[cell]["member_steps_per_s"] / rows["mlp"]["member_steps_per_s"]
        rows[cell]["vs_time_parallel_gflops"] = rows[cell]["gflops"] / rows[f"{cell}_time_parallel"]["gflops"]
    for name, r in rows.items():
        print(f"{name:18s} {r['member_steps_per_s']:9.0f} member-steps/s  {r['step_mflop']:7.1f} MFLOP/step  "
              f"{r['gflops']:6.1f} GFLOP/s")
    print(f"roofline (1024^3 matmul) {roof:.1f} GFLOP/s")
    why = explain(rows)
    print(why)

    dev = jax.devices()[0]
    result = {
        "benchmark": "rnn_speed",
        "workload": {"input_shape": [T], "hidden": HIDDEN, "readout": "last", "layers": 1, "batch": BATCH,
                     "optimizer": "sgd", "members": k, "steps_per_call": steps, "mlp_widths": MLP_WIDTHS},
        "method": "vmap over members on one device; compiled first, then interleaved rounds, best of",
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count_used": 1,
                   "count_visible": len(jax.devices()), "host": platform.node(),
                   "cpu": platform.processor() or platform.machine()},
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "roofline_gflops": roof,
        "results": rows,
        "explanation": why,
    }
    write_result(args.out, "rnn_speed", dev.platform, result)
    return result


if __name__ == "__main__":
    main()
