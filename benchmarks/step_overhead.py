"""The step's own overhead: jaxdyn's population chunk against a minimal hand-written one.

For every model family of ``model_families.FAMILIES`` (MLP, CNN in both convolution
forms, GRU, LSTM) at K = 8 and 32 members, this times, in interleaved best-of rounds:
  - jaxdyn: the real population chunk (``population.make_train_chunk``), as
    ``model_families.population_runner`` builds it, for a study with the default probes
    turned off (what the minimal loop does: no per-step update norms);
  - jaxdyn+probes: the same with the default probes on, whose norms probe adds each
    layer's update norm and update/weight ratio to every train step (its step metrics);
  - minimal: the same flax model (``cohort.task().model``, same initial weights), Adam
    at the cohort's learning rate (optax), batch 100 drawn per step from the on-device
    MNIST-1D training set by ``jax.random`` under each member's own key, written by hand
    as ``jit(shard_map(vmap(scan(step))))`` over the same mesh and member groups: no
    divergence guard, no metrics, no penalties, no clipping, no injected hyperparameters;
  - the minimal loop plus ONE jaxdyn feature each, to say where the gap goes:
      metrics  loss and accuracy computed every step, averaged over the chunk and returned;
      guard    every step, ``isfinite(loss)`` and a finite check of the whole new state
               (params and optimizer state), then a ``where`` keeping the old state if not
               (the per-step guard; jaxdyn now checks the state once per chunk and runs
               this form only again for a chunk in which a member failed);
      penalty  the objective as jaxdyn wrote it before it compiled these out when every
               member's numbers are 0: cross-entropy against smoothed one-hot labels
               (per-member smoothing 0), plus an L1/L2 weight penalty (per-member 0), and
               per-member global-norm clipping (0 = off);
      inject   ``optax.inject_hyperparams(optax.adam)`` with each member's own learning
               rate, b1, b2 and eps written into the optimizer state every step;
    and ``all``: the four together (how much of the gap they explain jointly).

Only ratios within one run are meaningful; on this shared CPU, differences under about
±10 % are noise, and the JSON marks each attribution that is.

The one-feature variants are timed at ``--attribute-sizes`` only (default K = 8).

    python benchmarks/step_overhead.py [--sizes 8,32] [--attribute-sizes 8] [--chunk 100] [--rounds 3]
"""


import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxdyn import population as pop
from jaxdyn.data import load_dataset
from jaxdyn.losses import cross_entropy, weight_penalty
from model_families import FAMILIES, cohort_for, family_arguments, population_runner  # noqa: E402  (benchmarks/)
from timing import best_times, environment, write_result  # noqa: E402  (benchmarks/timing.py)

FEATURES = ("metrics", "guard", "penalty", "inject")
VARIANTS = {"minimal": (), **{f"+{f}": (f,) for f in FEATURES}, "+all": FEATURES}
NOISE = 0.10  # run-to-run spread of a ratio on this machine


def minimal_runner(cohort, data, mesh, chunk: int, features=()):
    """A warmed-up runner of one chunk of the hand-written population (plus ``features``)."""
    task = cohort.task()
    model, batch, n_train = task.model, task.batch_size, data.x_train.shape[0]
    layout = pop.plan_layout(len(cohort.members), mesh.size, 0, mesh.devices.flat[0].platform)
    seeds, hp = cohort.member_arrays(lambda a: pop.pad_members(a, layout))
    # The same initial weights as jaxdyn's (its init, not timed); the rest built here.
    start = pop.init_population(task, seeds, hp, mesh)
    assert not jax.tree.leaves(start.model_state), "minimal loop: models without mutable state only"
    lr = float(cohort.members["learning_rate"].iloc[0])
    defaults = dict(task.optimizer.defaults)
    tx = optax.inject_hyperparams(optax.adam)(**defaults) if "inject" in features else optax.adam(lr)
    hp = {k: hp[k] for k in (*defaults, "label_smoothing", "l1", "l2", "grad_clip")}
    put = lambda a: jax.device_put(a, jax.sharding.NamedSharding(mesh, P(pop.AXIS)))
    params = start.params
    opt_state = jax.jit(jax.vmap(tx.init))(params)
    keys = put(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds.data_seed)))
    state = (params, opt_state, put(jnp.zeros(layout.n_padded, jnp.int32)), keys, put(hp))
    del start

    def member_chunk(state, data):
        params, opt_state, step, key, hp = state

        def body(carry, _):
            params, opt_state, step = carry
            idx = jax.random.randint(jax.random.fold_in(key, step), (batch,), 0, n_train)
            x, y = data.x_train[idx], data.y_train[idx]

            def objective(p):
                logits = model.apply({"params": p}, x, train=True)
                if "penalty" in features:
                    fit = cross_entropy(logits, y, hp["label_smoothing"])
                    return fit + weight_penalty(p, hp["l1"], hp["l2"]), logits
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

            (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
            if "penalty" in features:  # per-member global-norm clipping, threshold 0 = off
                norm = optax.tree.norm(grads)
                t = hp["grad_clip"]
                factor = jnp.where((t > 0) & (norm > t), t / norm, 1.0)
                grads = jax.tree.map(lambda g: g * factor, grads)
            if "inject" in features:
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams,
                                                            **{k: hp[k] for k in defaults}})
            updates, new_opt = tx.update(grads, opt_state, params)
            new = (optax.apply_updates(params, updates), new_opt)
            if "guard" in features:
                ok = jnp.isfinite(loss) & pop.all_finite(new)
                new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, (params, opt_state))
            metrics = None
            if "metrics" in features:
                metrics = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                           "accuracy": (logits.argmax(-1) == y).mean()}
            return (*new, step + 1), metrics

        (params, opt_state, step), metrics = lax.scan(body, (params, opt_state, step), None, length=chunk)
        metrics = jax.tree.map(lambda m: m.mean(0), metrics)
        return (params, opt_state, step, key, hp), (metrics if metrics is not None else step)

    group_chunk = jax.vmap(member_chunk, in_axes=(0, None))

    def device_chunk(state, data):  # member groups as jaxdyn runs them (lax.map over groups)
        n_local = jax.tree.leaves(state)[0].shape[0]
        if layout.group_size >= n_local:
            return group_chunk(state, data)
        split = lambda x: x.reshape(n_local // layout.group_size, layout.group_size, *x.shape[1:])
        merge = lambda x: x.reshape(n_local, *x.shape[2:])
        state, out = lax.map(lambda s: group_chunk(s, data), jax.tree.map(split, state))
        return jax.tree.map(merge, state), jax.tree.map(merge, out)

    run = jax.jit(jax.shard_map(device_chunk, mesh=mesh, in_specs=(P(pop.AXIS), P()),
                                out_specs=(P(pop.AXIS), P(pop.AXIS)), check_vma=False), donate_argnums=0)
    box = [state]

    def one():
        box[0], out = run(box[0], data)
        jax.block_until_ready(out)

    one()  # compile and warm up
    one()  # the first call's outputs are laid out differently from the state built here: compiles again
    return one


def verdict(ratio: float) -> str:
    return "within noise" if abs(ratio - 1.0) <= NOISE else ("slower" if ratio < 1.0 else "faster")


def main(argv=None):
    parser = family_arguments(__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="minimal is always timed")
    parser.add_argument("--attribute-sizes", default="8",
                        help="the K at which the one-feature variants are timed (compiling them all at "
                             "every K takes too long here); jaxdyn and minimal are timed at every K")
    args = parser.parse_args(argv)

    mesh = pop.make_mesh()
    data = pop.replicate(load_dataset("mnist1d"), mesh)
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = ["minimal", *(v for v in args.variants.split(",") if v and v != "minimal")]
    attribute = {int(s) for s in args.attribute_sizes.split(",")}
    runners, work = {}, {}
    for name in args.families.split(","):
        for k in sizes:
            cohort = cohort_for(FAMILIES[name], k, probes=False)
            runners[f"{name}_K{k}_jaxdyn"] = population_runner(cohort, data, mesh, args.chunk)
            runners[f"{name}_K{k}_jaxdyn+probes"] = population_runner(cohort_for(FAMILIES[name], k), data, mesh,
                                                                      args.chunk)
            for v in (variants if k in attribute else ["minimal"]):
                runners[f"{name}_K{k}_{v}"] = minimal_runner(cohort, data, mesh, args.chunk, VARIANTS[v])
            work[(name, k)] = k * args.chunk
            print(f"compiled {name} K={k}", flush=True)
    best = best_times(runners, args.rounds)
    rows = []
    for (name, k), steps in work.items():
        rate = {v: steps / best[f"{name}_K{k}_{v}"] for v in ["jaxdyn", "jaxdyn+probes", *variants]
                if f"{name}_K{k}_{v}" in best}
        base = rate["minimal"]
        row = {"family": name, "members": k, "member_steps_per_s": rate,
               "best_seconds": {v: best[f"{name}_K{k}_{v}"] for v in rate},
               "jaxdyn_vs_minimal": rate["jaxdyn"] / base, "verdict": verdict(rate["jaxdyn"] / base),
               "jaxdyn_default_probes_vs_minimal": rate["jaxdyn+probes"] / base,
               "attribution": {v: {"vs_minimal": rate[v] / base, "verdict": verdict(rate[v] / base)}
                               for v in rate if v not in ("minimal", "jaxdyn", "jaxdyn+probes")}}
        rows.append(row)
        parts = "  ".join(f"{v} {r['vs_minimal']:.2f}" for v, r in row["attribution"].items())
        print(f"{name:<11} K={k:3d}: minimal {base:8.0f} member-steps/s  jaxdyn/minimal "
              f"{row['jaxdyn_vs_minimal']:.2f} (default probes {row['jaxdyn_default_probes_vs_minimal']:.2f})  "
              f"| {parts}", flush=True)
    dev = jax.devices()[0]
    result = {
        "benchmark": "step_overhead",
        **environment(),
        "chunk_steps": args.chunk, "batch": 100, "rounds": args.rounds,
        "method": "every runner compiled first, then timed in interleaved rounds; best of rounds. "
                  "Rates are member-steps/s; vs_minimal = variant rate / minimal rate (< 1: the feature costs). "
                  f"A ratio within ±{NOISE:.0%} of 1 is within this machine's noise.",
        "variants": {v: list(VARIANTS[v]) for v in variants},
        "noise": NOISE,
        "results": rows,
    }
    write_result(args.out, "step_overhead", dev.platform, result)
    return result


if __name__ == "__main__":
    main()
