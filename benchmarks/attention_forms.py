"""Member-steps/s of the transformer's attention written as einsums against flax's
``MultiHeadDotProductAttention``, under vmap (models/transformer.py).

Workload: one pre-LayerNorm transformer block (d_model 64, 4 heads, MLP ×4) with a
mean readout and a linear head, on batches of 100 random sequences of length T
(T = 40, MNIST-1D's length, one value per position; and T = 3 tokens, modular
arithmetic's [a, b, =]), cross-entropy, plain SGD; 8 members with their own params,
``jit(vmap(scan(step)))`` on one device. The two forms share their parameters
(``query``, ``key``, ``value``, ``out`` kernels of the same shapes), so one member's
outputs are compared too. Both are compiled first, then timed in interleaved rounds
(best of), so the machine's drift cancels in the ratio.

    python benchmarks/attention_forms.py [--members 8] [--steps 50] [--rounds 3]
"""

import argparse
import os
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdyn.models.transformer import SelfAttention
from timing import best_times, environment, sgd_population, write_result  # noqa: E402  (benchmarks/timing.py)

D, HEADS, N_OUT, BATCH, POOL = 64, 4, 10, 100, 1000


class Block(nn.Module):
    """Embed, one pre-LN block whose attention is ``form``, mean readout, head."""

    form: str
    vocab: int

    @nn.compact
    def __call__(self, x):
        h = (nn.Embed(self.vocab, D, name="embed")(x.astype(jnp.int32)) if self.vocab
             else nn.Dense(D, name="embed")(x[..., None]))
        h = h + self.param("pos", nn.initializers.normal(0.02), (h.shape[1], D))
        z = nn.LayerNorm(name="ln_attn")(h)
        if self.form == "einsum":
            attended = SelfAttention(HEADS, False, "lecun_normal", name="attn")(z)[0]
        else:
            attended = nn.MultiHeadDotProductAttention(HEADS, kernel_init=nn.initializers.lecun_normal(),
                                                       name="attn")(z, z)
        h = h + attended
        inner = nn.relu(nn.Dense(4 * D, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(h)))
        h = h + nn.Dense(D, name="mlp_out")(inner)
        return nn.Dense(N_OUT, name="head")(nn.LayerNorm(name="ln_final")(h).mean(axis=1))


def make_run(form: str, vocab: int, length: int, members: int, steps: int):
    """``run(params, x, y) -> params``: ``steps`` SGD steps of every member; params leaves ``[K, ...]``."""
    model = Block(form, vocab)

    def loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y).mean()

    keys = jax.random.split(jax.random.PRNGKey(0), members)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, length)))["params"])(keys)
    return model, sgd_population(loss, steps, BATCH, POOL), params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="SGD steps per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    workloads = {"T40-values": (0, 40), "T3-tokens": (98, 3)}
    rates, ratios, gaps = {}, {}, {}
    for name, (vocab, length) in workloads.items():
        kx, ky = jax.random.split(jax.random.PRNGKey(1))
        x = (jax.random.randint(kx, (POOL, length), 0, vocab).astype(jnp.float32) if vocab
             else jax.random.normal(kx, (POOL, length)))
        y = jax.random.randint(ky, (POOL,), 0, N_OUT)
        runners, outputs = {}, {}
        for form in ("einsum", "flax"):
            model, run, params = make_run(form, vocab, length, args.members, args.steps)
            if form == "einsum":
                shared = params  # the same parameters in both forms: their outputs must agree
            outputs[form] = model.apply({"params": jax.tree.map(lambda a: a[0], shared)}, x[:BATCH])
            tic = time.perf_counter()
            jax.block_until_ready(run(params, x, y))
            print(f"{name} {form}: compiled and ran once in {time.perf_counter() - tic:.1f}s")
            runners[form] = lambda run=run, params=params: jax.block_until_ready(run(params, x, y))
        gaps[name] = float(jnp.max(jnp.abs(outputs["einsum"] - outputs["flax"])))
        best = best_times(runners, args.rounds)
        rates[name] = {form: args.members * args.steps / t for form, t in best.items()}
        ratios[name] = rates[name]["einsum"] / rates[name]["flax"]
        print(f"{name}: einsum {rates[name]['einsum']:.0f}, flax {rates[name]['flax']:.0f} member-steps/s; "
              f"einsum / flax {ratios[name]:.2f}x; largest output difference {gaps[name]:.1e}")

    result = {
        "benchmark": "attention_forms",
        "workload": {"block": f"pre-LN, d_model {D}, {HEADS} heads, MLP x4, mean readout", "batch": BATCH,
                     "optimizer": "sgd", "members": args.members, "steps_per_call": args.steps,
                     "sequences": {k: {"vocab": v, "T": t} for k, (v, t) in workloads.items()}},
        "method": "both forms compiled first, then timed in interleaved rounds; best of rounds",
        **environment(),
        "load_average_1_5_15min": os.getloadavg(),  # other processes on this machine skew absolute rates
        "member_steps_per_s": rates,
        "einsum_over_flax": ratios,
        "max_output_difference_same_params": gaps,
    }
    write_result(args.out, "attention_forms", jax.devices()[0].platform, result)


if __name__ == "__main__":
    main()
