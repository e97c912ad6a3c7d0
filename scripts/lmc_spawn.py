"""Spawning: how far into training two children of one parent stay linearly connected.

Frankle et al. (2020, "Linear mode connectivity and the lottery ticket hypothesis")
train a parent network for k steps, copy it into children that then train on with
different data orders, and measure the loss barrier on the straight line between
two children at the end. Children spawned at k = 0 (the same initialisation) end in
different basins; past some k early in training they end in one linearly connected
basin (barrier ~0): training became stable to SGD noise.

Here the parent is one MLP on MNIST-1D trained with SGD with momentum. It is grown
step by step with ``jaxdyn run --resume PARENT --set train.steps=k`` (the Python
API's ``resume=``, ``overrides=``), and at each k a fork study (``[init] from =
PARENT``, ``step = k``) trains ``--children`` children, each with its own data
order and dropout seed, for ``--child-steps`` steps. The ``lmc_barrier`` probe
measures every pair of children at the end: ``max_α L(θ(α)) − [(1 − α) L(θ_a) + α
L(θ_b)]`` of the training loss on the probe batch (the first 256 training examples),
with no permutation alignment. Writes ``docs/lmc_spawn.png`` and ``docs/lmc_spawn.json``.

    python scripts/lmc_spawn.py [--ks 0 25 50 100 250 500 1000] [--children 4] [--out runs/lmc]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

MODEL = {"kind": "mlp", "hidden": [100, 100], "activation": "relu", "init": "lecun_normal"}
OPTIM = {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9}
CHUNK = 25  # every spawn step is a multiple of it
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}


def parent_study(steps: int) -> dict:
    return {"study": {"name": "lmc-parent", "seeds": [[0, 0, 0]]}, "data": {"name": "mnist1d"}, "model": MODEL,
            "optim": OPTIM, "train": {"steps": steps, "batch_size": 100, "chunk_steps": CHUNK, "log_every": CHUNK,
                                      "eval_every": 1, "checkpoint_every": 1},
            "probes": NO_PROBES}


def child_study(parent: Path, k: int, children: int, steps: int) -> dict:
    # Fresh data orders and dropout seeds per child (the init seed is unused: the parameters are the parent's).
    seeds = [[0, 100 + i, 100 + i] for i in range(children)]
    return {"study": {"name": f"lmc-children-k{k}", "seeds": seeds}, "data": {"name": "mnist1d"}, "model": MODEL,
            "optim": OPTIM, "train": {"steps": steps, "batch_size": 100, "chunk_steps": 250, "log_every": 50,
                                      "eval_every": steps // 250, "checkpoint_every": steps // 250},
            "probes": {**NO_PROBES, "lmc_barrier": {"every": steps // 250, "alphas": 11}},
            "init": {"from": str(parent), "member": 0, "step": k, "keep_optimizer": True}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 25, 50, 100, 250, 500, 1000],
                        help=f"spawn steps (multiples of {CHUNK}, increasing)")
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--child-steps", type=int, default=2000, help="a multiple of 250")
    parser.add_argument("--out", default=f"runs/lmc-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "lmc_spawn.png"))
    args = parser.parse_args(argv)
    if args.ks != sorted(set(args.ks)) or any(k % CHUNK for k in args.ks):
        parser.error(f"--ks: increasing multiples of {CHUNK}")
    out, tic = Path(args.out), time.perf_counter()
    parent = out / "parent"
    rows, paths = [], {}
    first = max(args.ks[0], CHUNK)
    jaxdyn.run(parent_study(first), out=parent, progress=False, summary=False)
    for k in args.ks:
        if k > first:  # grow the parent to step k: the same run, continued
            jaxdyn.run(resume=parent, overrides=[f"train.steps={k}"], progress=False, summary=False)
            first = k
        res = jaxdyn.run(child_study(parent, k, args.children, args.child_steps), out=out / f"children-k{k}",
                         progress=False, summary=False)
        pairs = pd.read_parquet(res.run_dir / "pairs.parquet")
        last = pairs[pairs.step == pairs.step.max()]
        barrier = last[last.metric == "lmc_barrier"].value.to_numpy()
        path = last[last.metric == "lmc_path_loss"].assign(alpha=lambda f: f.layer.astype(float))
        paths[k] = path.groupby("alpha").value.mean()
        accuracy = res.members.final_test_accuracy.to_numpy()
        rows.append({"k": k, "barrier_mean": float(barrier.mean()), "barrier_min": float(barrier.min()),
                     "barrier_max": float(barrier.max()), "pairs": len(barrier),
                     "child_test_accuracy_mean": float(accuracy.mean())})
        print(f"k = {k:5d}: barrier {barrier.mean():.4f} (pairs {barrier.min():.4f} .. {barrier.max():.4f}); "
              f"children's test accuracy {accuracy.mean():.3f}", flush=True)
    seconds = time.perf_counter() - tic
    _figure(rows, paths, args.figure)
    record = {"study": "lmc_spawn", "children": args.children, "child_steps": args.child_steps,
              "parent": {"model": MODEL, "optim": OPTIM, "data": "mnist1d"}, "rows": rows,
              "seconds": round(seconds, 1), "environment": environment()}
    Path(args.figure).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{seconds:.0f} s; figure {args.figure}")
    return record


def _figure(rows: list[dict], paths: dict, path: str) -> None:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    frame = pd.DataFrame(rows)
    x = np.maximum(frame.k.to_numpy(), 1)  # k = 0 drawn at 1 on the log axis, labelled 0
    left.errorbar(x, frame.barrier_mean, yerr=[frame.barrier_mean - frame.barrier_min,
                                                frame.barrier_max - frame.barrier_mean],
                  marker="o", capsize=4, color="tab:blue")
    left.set_xscale("log")
    left.set_xticks(x, [str(k) for k in frame.k])
    left.axhline(0, color="0.5", lw=0.8)
    left.set_xlabel("spawn step k of the parent", fontsize=11)
    left.set_ylabel("loss barrier between children", fontsize=11)
    left.set_title("Instability falls as children are spawned later\n(mean over pairs; bars: min to max)",
                   fontsize=12)
    colors = [colormaps["viridis"](i / max(len(paths) - 1, 1)) for i in range(len(paths))]
    for color, (k, curve) in zip(colors, paths.items()):
        right.plot(curve.index, curve.to_numpy(), marker=".", color=color, label=f"k = {k}")
    right.set_xlabel("α along θ(α) = (1 − α) θ_a + α θ_b", fontsize=11)
    right.set_ylabel("training loss (probe batch)", fontsize=11)
    right.set_title("Loss along the path between two children\n(mean over pairs)", fontsize=12)
    right.legend(fontsize=10)
    for ax in (left, right):
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
