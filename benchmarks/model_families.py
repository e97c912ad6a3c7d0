"""Every model family in a population, in one run: member-steps/s and fraction of the roofline.

For the MLP, the CNN (MNIST-1D ConvBase, both convolution forms), and the GRU and
LSTM (hidden 64, readout last), at K = 8 and 32 members, this builds each cohort
from a config exactly as a study does, trains it with the real population chunk
(``population.make_train_chunk``: shard_map over every device, member groups,
vmap, scan, divergence guard), and times chunks in interleaved best-of rounds.
FLOPs per member step come from XLA's own cost analysis of one member's step (for
the RNNs, counted by hand, since XLA counts a loop body once);
the roofline is a 2048² (CPU) or 8192² (accelerators) float32 matmul on all devices, measured in the same run.

    python benchmarks/model_families.py [--sizes 8,32] [--chunk 100] [--rounds 3]
"""

import argparse
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax

from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.study import expand
from population_throughput import roofline_runners  # noqa: E402  (benchmarks/)
from timing import best_times, environment, write_result  # noqa: E402  (benchmarks/timing.py)

CONVBASE = {"kind": "cnn", "channels": [25, 25, 25], "kernels": [5, 3, 3], "strides": [2, 2, 2],
            "padding": [1, 1, 1]}
FAMILIES = {
    "mlp": {"kind": "mlp", "hidden": [100, 100]},
    "cnn_einsum": CONVBASE | {"conv_impl": "einsum"},
    "cnn_lax": CONVBASE | {"conv_impl": "lax"},
    "gru": {"kind": "rnn", "cell": "gru", "hidden_size": 64},
    "lstm": {"kind": "rnn", "cell": "lstm", "hidden_size": 64},
}


# The default probes off: the norms probe adds per-layer update norms to every train step
# (``step_metrics``); a study that turns them off trains with the bare step.
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}


def cohort_for(model: dict, k: int, probes: bool = True):
    """A cohort of ``k`` members of ``model`` (Adam at 1e-3, batch 100, MNIST-1D), with the
    default probes (``probes``) or none."""
    cfg = load_config({"study": {"seeds": k}, "model": model, "optim": {"learning_rate": 1e-3},
                       "train": {"batch_size": 100}, **({} if probes else {"probes": NO_PROBES})})
    (cohort,) = expand(cfg)
    return cohort


GATES = {"elman": 1, "gru": 3, "lstm": 4}


def rnn_step_flops(model: dict, batch: int = 100, steps: int = 40, features: int = 1, n_out: int = 10) -> float:
    """Matmul FLOPs of one RNN training step, counted by hand: XLA's cost analysis counts
    a while loop's body once, not once per time step. Forward: per time step, input and
    recurrent products ``2·B·(F + H)·G·H``; backward about twice the forward."""
    h, g = model["hidden_size"], GATES[model["cell"]]
    forward = steps * 2 * batch * (features + h) * g * h + 2 * batch * h * n_out
    return 3.0 * forward


def step_flops(cohort, data) -> float:
    """FLOPs of one member's step, by XLA's cost analysis of the compiled step (loop-free
    models only: see ``rnn_step_flops``)."""
    task = cohort.task()
    seeds, hp = cohort.member_arrays(lambda a: a)
    one = jax.tree.map(lambda a: a[0], (seeds, hp))
    state = task.init(*one)
    compiled = jax.jit(task.step).lower(state, data).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def population_runner(cohort, data, mesh, chunk: int):
    task = cohort.task()
    layout = pop.plan_layout(len(cohort.members), mesh.size, 0, mesh.devices.flat[0].platform)
    seeds, hp = cohort.member_arrays(lambda a: pop.pad_members(a, layout))
    box = [pop.init_population(task, seeds, hp, mesh)]
    train_chunk = pop.make_train_chunk(task, chunk, chunk, layout.group_size, mesh)

    def one():
        box[0], metrics = train_chunk(box[0], data)
        jax.block_until_ready(metrics)

    one()  # compile and warm up
    return one


def family_arguments(description: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark over ``FAMILIES``: --sizes, --chunk, --rounds, --families, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sizes", default="8,32")
    parser.add_argument("--chunk", type=int, default=100, help="steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return parser


def main(argv=None):
    parser = family_arguments(__doc__.splitlines()[0])
    args = parser.parse_args(argv)

    mesh = pop.make_mesh()
    data = pop.replicate(load_dataset("mnist1d"), mesh)
    sizes = [int(s) for s in args.sizes.split(",")]
    roof_runners, roof_flops = roofline_runners()
    runners, work, flops = dict(roof_runners), {}, {}
    for name in args.families.split(","):
        model = FAMILIES[name]
        flops[name] = (rnn_step_flops(model) if model["kind"] == "rnn"
                       else step_flops(cohort_for(model, 1), load_dataset("mnist1d")))
        for k in sizes:
            key = f"{name}_K{k}"
            runners[key] = population_runner(cohort_for(FAMILIES[name], k), data, mesh, args.chunk)
            work[key] = (name, k)
            print(f"compiled {key}", flush=True)
    best = best_times(runners, args.rounds)
    roof = roof_flops["roofline_all_devices"] / best["roofline_all_devices"] / 1e9
    rows = []
    for key, (name, k) in work.items():
        rate = k * args.chunk / best[key]
        gflops = rate * flops[name] / 1e9
        rows.append({"family": name, "members": k, "member_steps_per_s": rate, "flops_per_member_step": flops[name],
                     "gflops": gflops, "fraction_of_roofline": gflops / roof, "best_seconds": best[key]})
        print(f"{name:<11} K={k:3d}: {rate:9.0f} member-steps/s  {flops[name] / 1e6:7.1f} MFLOP/step  "
              f"{gflops:6.1f} GFLOP/s  {gflops / roof:.2f} of roofline")
    lax = {r["members"]: r["member_steps_per_s"] for r in rows if r["family"] == "cnn_lax"}
    for r in rows:
        if r["family"] == "cnn_einsum" and r["members"] in lax:
            r["vs_cnn_lax"] = r["member_steps_per_s"] / lax[r["members"]]
            print(f"CNN einsum / lax at K={r['members']}: {r['vs_cnn_lax']:.1f}x")
    dev = jax.devices()[0]
    result = {
        "benchmark": "model_families",
        **environment(),
        "chunk_steps": args.chunk, "batch": 100, "rounds": args.rounds,
        "roofline_gflops": roof, "roofline_n": roof_flops["n"],
        "results": rows,
    }
    write_result(args.out, "model_families", dev.platform, result)
    return result


if __name__ == "__main__":
    main()
