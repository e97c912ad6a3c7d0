"""What PBT rounds cost: chunks with a round every 2 chunks against the same chunks without.

For the default MLP (40-100-100-10) on MNIST-1D and K members (seeds x a
learning-rate grid), this builds the cohort from a config as a study does
(``expand``, ``CohortPrograms``, ``CohortPBT``) and times pairs of chunks as the
runner runs them: the population chunk, its metrics read back and its training
windows made into rows (``runner._rows``), and, in the PBT variant, after the
second chunk of the pair, ``CohortPBT.run(state, rows, chunk, step)`` ranking by
that chunk's last ``train_loss`` window (scores from the rows, the jitted
exploit/explore gather, lineage rows). Evaluation and probes are off in both, so
the denominator is the least a chunk costs and the ratio the largest it can be.

Both variants share one compiled chunk and are timed in interleaved best-of rounds
(each round starting at the other variant). A best-of ratio cannot resolve 2% on
a machine that drifts ±10% within minutes, so the round is also timed on its own,
many times, split into its parts, and the overhead is given as well as
``round / (2 x chunk)``. Ray Tune instead writes and reads a checkpoint per exploit.

    python benchmarks/pbt_overhead.py [--members 32,1024] [--chunks 500,100] [--rounds 3]
"""

import argparse
import os
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn import population as pop
from jaxdyn import streams
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.pbt.rounds import CohortPBT
from jaxdyn.probes import PROBES
from jaxdyn.runner import CohortPrograms, _rows
from jaxdyn.streams import Stream
from jaxdyn.study import expand
from timing import environment, write_result  # noqa: E402  (benchmarks/timing.py)

EVERY = 2  # chunks between rounds (the [pbt] default)


def study(k: int, chunk: int) -> dict:
    """K = seeds x learning rates, as square as K allows; PBT ranks by the last train_loss window."""
    n_lr = 2 ** (int(np.log2(k)) // 2)
    seeds = k // n_lr
    return {"study": {"seeds": seeds}, "model": {"kind": "mlp", "hidden": [100, 100]},
            "optim": {"name": "adam"},
            "train": {"batch_size": 100, "chunk_steps": chunk, "steps": 1000 * chunk, "log_every": 100,
                      "eval_every": 1000},
            "probes": {name: {"every": 0} for name in PROBES},
            "grid": {"optim.learning_rate": np.geomspace(1e-4, 1e-1, n_lr).tolist()},
            "pbt": {"every": EVERY, "metric": "train_loss", "mode": "min", "hparams": ["optim.learning_rate"]}}


def setup(k: int, chunk: int, data, mesh) -> dict:
    (cohort,) = expand(load_config(study(k, chunk)))
    assert len(cohort.members) == k, len(cohort.members)
    t = cohort.config.train
    layout = pop.plan_layout(k, mesh.size, t.member_group, mesh.devices.flat[0].platform)
    programs = CohortPrograms.build(cohort, layout, mesh)
    pbt = CohortPBT(cohort, layout.n_padded)
    boxes = {name: {"state": programs.init(), "done": 0, "rows": None} for name in ("alone", "pbt")}

    def one_chunk(box):
        """As ``run_cohort``: the chunk, its metrics on the host, its training-window rows."""
        box["done"] += 1
        done = box["done"]
        box["state"], metrics = programs.train_chunk(box["state"], data)
        metrics = jax.device_get(metrics)
        jax.device_get(box["state"].alive)  # the runner's _alive
        windows = (done - 1) * t.chunk_steps + t.log_every * np.arange(1, t.chunk_steps // t.log_every + 1)
        box["rows"] = _rows(cohort, metrics, windows, "train_")

    def alone():
        for _ in range(EVERY):
            one_chunk(boxes["alone"])

    def with_pbt():
        box = boxes["pbt"]
        for _ in range(EVERY):
            one_chunk(box)
        box["state"], lineage = pbt.run(box["state"], box["rows"], box["done"], box["done"] * t.chunk_steps)
        jax.block_until_ready(box["state"])

    return {"cohort": cohort, "programs": programs, "pbt": pbt, "boxes": boxes, "chunk_steps": t.chunk_steps,
            "runs": {"alone": alone, "pbt": with_pbt}, "layout": layout}


def round_parts(s: dict, repeats: int) -> dict:
    """The round alone, ``repeats`` times on the PBT variant's state (results discarded), and its
    parts timed as ``CohortPBT.run`` does them: scores from the rows, the jitted round with its
    read-backs, the lineage rows."""
    pbt, box = s["pbt"], s["boxes"]["pbt"]
    state, rows, chunk = box["state"], box["rows"], box["done"]
    step = chunk * s["chunk_steps"]
    parts = {"whole round": [], "scores from rows (pandas)": [], "alive read-back": [],
             "jitted gather and explore": [], "read-back of parents and hparams": [], "lineage rows (pandas)": []}
    fresh = lambda: jax.block_until_ready(jax.tree.map(jnp.copy, state))  # the round donates its state
    for _ in range(repeats):
        before_round = fresh()
        tic = time.perf_counter()
        new, _ = pbt.run(before_round, rows, chunk, step)
        jax.block_until_ready(new)
        parts["whole round"].append(time.perf_counter() - tic)
        del new

        t0 = time.perf_counter()
        scores = pbt.scores(rows)
        t1 = time.perf_counter()
        copy = fresh()
        eligible = np.asarray(jax.device_get(copy.alive)) & np.isfinite(scores)
        key = streams.key(pbt._root, Stream.PBT, pbt.round_index(chunk))
        t2 = time.perf_counter()
        out = pbt._round(copy, jnp.asarray(scores), jnp.asarray(eligible), jnp.asarray(pbt.groups), key)
        jax.block_until_ready(out)
        t3 = time.perf_counter()
        parents, before, after = jax.device_get(out[1:])
        t4 = time.perf_counter()
        pbt.lineage(chunk, step, scores, np.asarray(parents), before, after)
        t5 = time.perf_counter()
        for name, dt in zip(list(parts)[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[name].append(dt)
        del out
    return {name: {"mean_ms": 1e3 * float(np.mean(v)), "best_ms": 1e3 * float(np.min(v))}
            for name, v in parts.items()}


def measure(k: int, chunk: int, rounds: int, repeats: int, data, mesh) -> dict:
    s = setup(k, chunk, data, mesh)
    for run in s["runs"].values():  # compile and warm up (the PBT variant compiles its round)
        run()
    best = {name: float("inf") for name in s["runs"]}
    order = list(s["runs"])
    for r in range(rounds):
        # Each round starts at another variant, so neither is always timed first.
        for name in order[r % 2:] + order[: r % 2]:
            tic = time.perf_counter()
            s["runs"][name]()
            best[name] = min(best[name], time.perf_counter() - tic)
    parts = round_parts(s, repeats)
    alone, with_pbt = best["alone"] / EVERY, best["pbt"] / EVERY
    round_s = parts["whole round"]["mean_ms"] / 1e3
    compiled = {"train_chunk": s["programs"].train_chunk._cache_size(), "pbt_round": s["pbt"]._round._cache_size()}
    return {"members": k, "n_padded": s["layout"].n_padded, "chunk_steps": chunk,
            "seconds_per_chunk_alone": alone, "seconds_per_chunk_with_rounds": with_pbt,
            "ratio_best_of": with_pbt / alone, "ratio_from_round_time": 1 + round_s / (EVERY * alone),
            "round": parts, "round_repeats": repeats, "compiled_variants": compiled,
            "member_hparams": sorted(s["cohort"].hparam_names),
            "alive_at_end": {name: int(np.asarray(jax.device_get(b["state"].alive))[:k].sum())
                             for name, b in s["boxes"].items()}}


def other_processes() -> dict:
    """What else ran on this machine (other benchmarks, tests, runs share its cores): the load
    average and every other Python process's command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if int(pid) != os.getpid() and "python" in Path(words[0]).name:
            found.append(" ".join(words).strip()[:120])
    return {"load_average": os.getloadavg(), "python_processes": found}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="32,1024")
    parser.add_argument("--chunks", default="500,100", help="chunk_steps for each of --members")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="times the round alone is timed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    mesh = pop.make_mesh()
    data = pop.replicate(load_dataset("mnist1d"), mesh)
    busy = other_processes()
    result = {"environment": environment(), "batch_size": 100, "log_every": 100, "round_every_chunks": EVERY,
              "metric": "train_loss", "exploit": "truncation 0.25", "explore": "perturb optim.learning_rate",
              "evaluation_and_probes": "off in both variants", "other_processes_at_start": busy, "results": []}
    if busy["python_processes"]:
        print("note: other Python processes were running:", *busy["python_processes"], sep="\n  ")
    for k, chunk in zip(map(int, args.members.split(",")), map(int, args.chunks.split(","))):
        r = measure(k, chunk, args.rounds, args.repeats, data, mesh)
        result["results"].append(r)
        print(f"\nK = {k}, chunk {chunk} steps, a round every {EVERY} chunks")
        print(f"  seconds per chunk: alone {r['seconds_per_chunk_alone']:.3f}, with rounds "
              f"{r['seconds_per_chunk_with_rounds']:.3f}; ratio {r['ratio_best_of']:.3f} (best of), "
              f"{r['ratio_from_round_time']:.4f} (from the round's time)")
        for name, v in r["round"].items():
            print(f"  {name:<34} mean {v['mean_ms']:8.2f} ms  best {v['best_ms']:8.2f} ms")
        print(f"  compiled variants: {r['compiled_variants']}")
    result["other_processes_at_end"] = other_processes()
    write_result(args.out, "pbt_overhead", result["environment"]["device"]["platform"], result)
    return result


if __name__ == "__main__":
    main()
