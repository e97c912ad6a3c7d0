"""Member-steps/s of the CNN's two convolution forms under vmap (models/conv.py).

Workload: the MNIST-1D ConvBase (input 40, channels 25-25-25, kernels 5-3-3,
stride 2, padding 1, flatten, head 10), batches of 100 inputs of MNIST-1D's shape
(random numbers: speed does not depend on the values), cross-entropy, plain SGD;
8 members with their own params, ``jit(vmap(scan(step)))`` on one device. The
lax form (``nn.Conv``'s ``conv_general_dilated``) becomes a grouped convolution
under vmap; the einsum form becomes batched matmuls. Both are compiled first, then
timed in interleaved rounds (best of), so the machine's drift cancels in the ratio.
``conv_impl = "auto"`` picks the einsum form on CPU from this measurement.

    python benchmarks/conv_forms.py [--members 8] [--steps 100] [--rounds 3]
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import optax

from jaxdyn.models.cnn import CNN, CNNConfig
from timing import best_times, sgd_population, write_result  # noqa: E402  (benchmarks/timing.py)

INPUT_SHAPE, N_OUT, BATCH, POOL = (40,), 10, 100, 1000


def make_run(impl: str, members: int, steps: int):
    """``run(params, x, y) -> params``: ``steps`` SGD steps of every member; params leaves ``[K, ...]``."""
    model = CNN.from_config(CNNConfig(conv_impl=impl), INPUT_SHAPE, N_OUT, use_dropout=False)

    def loss(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    run = sgd_population(loss, steps, BATCH, POOL)
    keys = jax.random.split(jax.random.PRNGKey(0), members)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, *INPUT_SHAPE)))["params"])(keys)
    return run, params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100, help="SGD steps per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (POOL, *INPUT_SHAPE))
    y = jax.random.randint(ky, (POOL,), 0, N_OUT)
    runners, results = {}, {}
    for impl in ("lax", "einsum"):
        run, params = make_run(impl, args.members, args.steps)
        tic = time.perf_counter()
        results[impl] = run(params, x, y)
        jax.block_until_ready(results[impl])
        print(f"{impl}: compiled and ran once in {time.perf_counter() - tic:.1f}s")
        runners[impl] = lambda run=run, params=params: jax.block_until_ready(run(params, x, y))
    # Same params in, same training out: the forms differ in speed only.
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree.leaves(results["lax"]), jax.tree.leaves(results["einsum"])))

    best = best_times(runners, args.rounds)
    rate = {impl: args.members * args.steps / t for impl, t in best.items()}
    ratio = rate["einsum"] / rate["lax"]
    for impl in runners:
        print(f"{impl:>6}: {rate[impl]:8.0f} member-steps/s (best of {args.rounds}: {best[impl]:.3f}s)")
    print(f"einsum / lax: {ratio:.2f}x   (largest param difference after training: {gap:.1e})")

    dev = jax.devices()[0]
    result = {
        "benchmark": "conv_forms",
        "workload": {"model": "cnn ConvBase", "input_shape": INPUT_SHAPE, "n_out": N_OUT, "batch": BATCH,
                     "optimizer": "sgd", "members": args.members, "steps_per_call": args.steps},
        "method": "both forms compiled first, then timed in interleaved rounds; best of rounds",
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": len(jax.devices()),
                   "host": platform.node(), "cpu": platform.processor() or platform.machine()},
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average_1_5_15min": os.getloadavg(),  # other processes on this machine skew absolute rates
        "member_steps_per_s": rate,
        "best_seconds": best,
        "einsum_over_lax": ratio,
        "max_param_difference": gap,
    }
    write_result(args.out, "conv_forms", dev.platform, result)


if __name__ == "__main__":
    main()
