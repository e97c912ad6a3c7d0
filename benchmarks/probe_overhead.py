"""What the probes cost: chunks with probes against chunks of training alone, in one run.

For the MLP (40-100-100-10) and the CNN (MNIST-1D ConvBase), K members, the
default chunk of 500 steps at batch 100, this builds each cohort from a config as
a study does and times, per chunk, the real population chunk plus the probes due
after it (``ProbeSet.measure``, rows read back to the host, as the runner does):

- training alone (every probe off);
- each probe alone, every chunk (its default cadence);
- the default set (``norms`` and ``activations``);
- every probe, every chunk.

Each variant is compiled first, then timed in interleaved best-of rounds (each
round starting at another variant); the ratios are to training alone in the same
run, and differences of ±10% are this machine's noise. Cockpit reports 1.5× (economy),
2× (business) and 21× (full) for tracking every step of one model
(CIFAR-10 3C3D, Fig. 6 of its paper).

    python benchmarks/probe_overhead.py [--members 16] [--chunk 500] [--rounds 3]
"""

import argparse
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax

from jaxdyn import population as pop
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.probes import PROBES
from jaxdyn.study import expand
from timing import environment, write_result  # noqa: E402  (benchmarks/timing.py)

MODELS = {
    "mlp": {"kind": "mlp", "hidden": [100, 100]},
    "cnn": {"kind": "cnn", "channels": [25, 25, 25], "kernels": [5, 3, 3], "strides": [2, 2, 2], "padding": [1, 1, 1]},
}
DEFAULT_SET = ("norms", "activations")


NEEDS_ATTENTION = ("attention",)  # read sown attention weights: transformers only


def variants() -> dict[str, tuple[str, ...]]:
    """Probe sets timed on the MLP and the CNN (probes that need attention left out)."""
    probes = tuple(name for name in PROBES if name not in NEEDS_ATTENTION)
    out = {"train alone": ()}
    out.update({f"{name} alone": (name,) for name in probes})
    out["default set"] = DEFAULT_SET
    out["every probe"] = probes
    return out


def runner(model: dict, probes_on: tuple[str, ...], k: int, chunk: int, data, mesh):
    """``run()`` -> one timed chunk of training plus the probes, state carried over."""
    tables = {name: {"every": 1 if name in probes_on else 0} for name in PROBES}
    cfg = load_config({"study": {"seeds": k}, "model": model, "optim": {"learning_rate": 1e-3},
                       "train": {"batch_size": 100, "chunk_steps": chunk, "steps": chunk, "log_every": 100},
                       "probes": tables})
    (cohort,) = expand(cfg)
    task = cohort.task()
    layout = pop.plan_layout(k, mesh.size, 0, mesh.devices.flat[0].platform)
    seeds, hparams = cohort.member_arrays(lambda v: pop.pad_members(v, layout))
    init = lambda: pop.init_population(task, seeds, hparams, mesh)
    train = pop.make_train_chunk(task, chunk, 100, layout.group_size, mesh)
    probes = cohort.probes(task, mesh)
    params0 = init().params if probes.needs_init else None
    box = {"state": init(), "chunk": 0}
    members = cohort.members.member.to_numpy()

    def run():
        box["chunk"] += 1
        box["state"], metrics = train(box["state"], data)
        jax.block_until_ready(metrics)
        if probes:
            probes.measure(box["state"], params0, data, box["chunk"], False, 0, 0, members)  # host rows too

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    mesh = pop.make_mesh()
    data = pop.replicate(load_dataset("mnist1d"), mesh)
    result = {"environment": environment(), "members": args.members, "chunk_steps": args.chunk,
              "batch_size": 100, "probe_batch": 256, "models": {}}
    for name in args.models.split(","):
        runs = {v: runner(MODELS[name], on, args.members, args.chunk, data, mesh) for v, on in variants().items()}
        for run in runs.values():  # compile and warm up
            run()
        best = {v: float("inf") for v in runs}
        order = list(runs)
        for r in range(args.rounds):
            # Each round starts at another variant, so no variant is always timed first.
            for v in order[r % len(order):] + order[: r % len(order)]:
                run = runs[v]
                tic = time.perf_counter()
                run()
                best[v] = min(best[v], time.perf_counter() - tic)
        base = best["train alone"]
        result["models"][name] = {v: {"seconds_per_chunk": t, "ratio": t / base} for v, t in best.items()}
        print(f"\n{name}: K = {args.members}, chunk {args.chunk} steps; seconds per chunk and ratio to training alone")
        for v, t in best.items():
            print(f"  {v:<22} {t:8.3f} s  {t / base:6.2f}x")
    write_result(args.out, "probe_overhead", result["environment"]["device"]["platform"], result)
    return result


if __name__ == "__main__":
    main()
