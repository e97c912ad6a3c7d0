"""FedAvg on non-IID data: rounds to a target test accuracy for IID, label shards and Dirichlet
partitions, as local steps per round grow, and what server momentum does on the skewed splits.

McMahan et al. (2017, Table 1-2) train a 2-layer MLP on MNIST over 100 clients (C = 0.1 of them
per round, batch 10): with E = 1 epoch it reaches 97% in 87 rounds on IID data against 664 on
their pathological non-IID split (2 label-sorted shards per client), and more local computation
per round cuts the rounds needed. Hsu et al. (2019) deal labels by a Dirichlet(alpha) mix per
client: accuracy falls as alpha -> 0, and server momentum (FedAvgM) helps most there.

Here MNIST-1D (generated at 20,000 training examples: 200 per client; ``data.n_examples``) and an
MLP 40-100-10 (ReLU), SGD with learning rate 0.1 and batch 10 on each client, 100 clients per
federation, C = 0.1 (10 clients a round), plain FedAvg weighted by example counts, 4 seeds (4
federations) per cell, every cell 2,000 local steps per client: E = 1, 5 and 20 local steps per
round (a grid axis: 2,000, 400 and 100 rounds). Arms: ``iid``; ``shards`` (2 per client, McMahan's
split); ``dirichlet`` alpha = 0.1, 1, 10; and at E = 5, FedAvgM (server momentum 0.9, server
learning rate 0.1: the same effective step, 0.1 / (1 - 0.9) = 1, as FedAvg's) on shards and on
alpha = 0.1. Test accuracy of the global model is evaluated after every round (a federated
chunk evaluates each round's global model). Rounds to target = the first evaluated round at which the global model's test accuracy
reaches ``--target`` (0.55; the IID arms end near 0.65), the median over the 4 federations (NaN
when fewer than 3 reached it).

Writes ``docs/fedavg_noniid.png`` (test accuracy against round at E = 5 per arm; rounds to the
target per arm and E; the clients' label histograms of one federation for shards and alpha = 0.1)
and the numbers as ``docs/fedavg_noniid.json``.

    python scripts/fedavg_noniid.py [--steps 2000] [--target 0.55] [--out runs/fedavg] [--quick] [--reuse]
"""

import argparse
import json
import math
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

E_VALUES = [1, 5, 20]
CHUNK = 20  # steps per chunk: one evaluation of the global model each
ARMS = {
    "iid": {"partition": "iid"},
    "shards": {"partition": "shards", "shards_per_client": 2},
    "dirichlet 0.1": {"partition": "dirichlet", "alpha": 0.1},
    "dirichlet 1": {"partition": "dirichlet", "alpha": 1.0},
    "dirichlet 10": {"partition": "dirichlet", "alpha": 10.0},
    "shards, FedAvgM": {"partition": "shards", "shards_per_client": 2, "server_optim": "momentum",
                        "server_momentum": 0.9, "server_learning_rate": 0.1},
    "dirichlet 0.1, FedAvgM": {"partition": "dirichlet", "alpha": 0.1, "server_optim": "momentum",
                               "server_momentum": 0.9, "server_learning_rate": 0.1},
}
MOMENTUM_E = [5]


def config(arm: str, steps: int, seeds: int, clients: int, n_examples: int) -> dict:
    e_values = MOMENTUM_E if "FedAvgM" in arm else E_VALUES
    return {"study": {"name": "fedavg-" + arm.replace(" ", "-").replace(",", ""), "seeds": seeds},
            "data": {"name": "mnist1d", "n_examples": n_examples},
            "model": {"kind": "mlp", "hidden": [100], "activation": "relu"},
            "optim": {"name": "sgd", "learning_rate": 0.1},
            "train": {"steps": steps, "batch_size": 10, "chunk_steps": CHUNK, "log_every": CHUNK, "eval_every": 1,
                      "checkpoint_every": steps // CHUNK},
            "probes": {"norms": {"every": 0}, "activations": {"every": 0}},
            "federated": {"clients": clients, "client_fraction": 0.1, **ARMS[arm]},
            "grid": {"federated.local_steps": e_values}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--examples", type=int, default=20000, help="MNIST-1D training examples (data.n_examples)")
    parser.add_argument("--target", type=float, default=0.55)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="400 steps, 2 seeds, 20 clients: a check")
    parser.add_argument("--reuse", action="store_true", help="read the arms already run in --out instead of rerunning")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.clients, args.examples = 400, 2, 20, 4000
    out = Path(args.out or f"runs/fedavg-{time.strftime('%Y%m%d-%H%M%S')}")
    figure = out / "fedavg_noniid.png" if args.quick else ROOT / "docs" / "fedavg_noniid.png"
    rows, curves, seconds, partitions = [], {}, {}, {}
    for arm in ARMS:
        tic = time.perf_counter()
        if args.reuse and (out / arm_dir(arm) / "members.csv").exists():  # a finished arm: its tables again
            res = jaxdyn.load(out / arm_dir(arm))
            seconds[arm] = None
        else:
            res = jaxdyn.run(config(arm, args.steps, args.seeds, args.clients, args.examples),
                             out=out / arm_dir(arm), progress=False, summary=False)
            seconds[arm] = round(time.perf_counter() - tic, 1)
        members = res.members.set_index("member")
        e_of = (members["federated.local_steps"] if "federated.local_steps" in members
                else pd.Series(MOMENTUM_E[0], index=members.index))
        first = res.first_crossing("test_accuracy", args.target)
        first = first.assign(client=first.member.map(members.client), federation=first.member.map(members.federation),
                             E=first.member.map(e_of))
        first = first[first.client == 0]
        acc = res.frame("test_accuracy")
        acc = acc[acc.member.map(members.client) == 0].assign(E=lambda f: f.member.map(e_of))
        finals = acc[acc.step == acc.step.max()]
        for e, group in first.groupby("E"):
            got = group.step.to_numpy() / e
            reached = int(np.isfinite(got).sum())
            median = float(np.median(np.where(np.isnan(got), np.inf, got)))
            rows.append({"arm": arm, "E": int(e), "rounds": args.steps // int(e), "reached": f"{reached}/{len(got)}",
                         "median_rounds_to_target": median if math.isfinite(median) else float("nan"),
                         "rounds_per_federation": [None if np.isnan(g) else float(g) for g in got],
                         "final_test_accuracy_mean": float(finals[finals.E == e].value.mean()),
                         "final_test_accuracy_std": float(finals[finals.E == e].value.std())})
        curves[arm] = acc.assign(round=acc.step / acc.E)
        if arm in ("shards", "dirichlet 0.1"):
            partitions[arm] = pd.read_parquet(out / arm_dir(arm) / "partition.parquet").query("cohort == 0")
        print(f"{arm}: {seconds[arm]} s")
    table = pd.DataFrame(rows)
    print(f"\nrounds to test accuracy >= {args.target} (median over {args.seeds} federations of {args.clients} "
          f"clients, C = 0.1; NaN: fewer than half reached it), and final test accuracy")
    print(table.drop(columns=["rounds_per_federation"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _figure(curves, table, partitions, args.target, figure)
    record = {"study": "fedavg_noniid", "target": args.target, "steps": args.steps, "seeds": args.seeds,
              "clients": args.clients, "examples": args.examples, "client_fraction": 0.1,
              "configs": {arm: config(arm, args.steps, args.seeds, args.clients, args.examples) for arm in ARMS},
              "rows": rows, "seconds": seconds, "run_dir": str(out), "environment": environment()}
    figure.parent.mkdir(parents=True, exist_ok=True)
    figure.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {figure} and {figure.with_suffix('.json')}")
    return record


def arm_dir(arm: str) -> str:
    """The run folder of an arm under --out."""
    return arm.replace(" ", "-").replace(",", "")


def _figure(curves: dict, table: pd.DataFrame, partitions: dict, target: float, path: Path) -> None:
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    grid = fig.add_gridspec(2, 3)
    ax = fig.add_subplot(grid[0, :2])
    colours = colormaps["tab10"]
    for i, (arm, frame) in enumerate(curves.items()):
        at5 = frame[frame.E == 5]
        median = at5.groupby("round").value.median()
        ax.plot(median.index, median.to_numpy(), color=colours(i), lw=2 if "FedAvgM" not in arm else 1.5,
                ls="-" if "FedAvgM" not in arm else "--", label=arm)
    ax.axhline(target, color="0.4", lw=1, ls=":", label=f"target {target:g}")
    ax.set(xlabel="round", ylabel="test accuracy of the global model",
           title="FedAvg at E = 5 local steps, 100 clients, C = 0.1 (median over 4 federations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, ncol=2)
    bars = fig.add_subplot(grid[0, 2])
    arms = [a for a in curves if "FedAvgM" not in a]
    width = 0.25
    for j, e in enumerate(E_VALUES):
        values = [table[(table.arm == a) & (table.E == e)].median_rounds_to_target.iloc[0] for a in arms]
        x = np.arange(len(arms)) + (j - 1) * width
        bars.bar(x, np.nan_to_num(values, nan=0.0), width, label=f"E = {e}")
        for xi, v in zip(x, values):
            if not math.isfinite(v):  # a cross at the bottom: never reached within the budget
                bars.plot([xi], [0.03], marker="x", color=f"C{j}", ms=8, mew=2, transform=bars.get_xaxis_transform())
    bars.set_yscale("log")
    bars.set_xticks(np.arange(len(arms)), [a.replace("dirichlet ", "Dir α=") for a in arms], rotation=30,
                    ha="right", fontsize=10)
    bars.set(ylabel=f"rounds to test accuracy {target:g}", title="rounds to the target (median; x: not reached)")
    bars.legend(fontsize=10)
    bars.grid(alpha=0.3, axis="y")
    for k, (arm, frame) in enumerate(partitions.items()):
        hax = fig.add_subplot(grid[1, k])
        hist = frame[[c for c in frame.columns if c.startswith("label_")]].to_numpy()
        image = hax.imshow(hist.T, aspect="auto", cmap="viridis", interpolation="nearest")
        hax.set(xlabel="client", ylabel="class", title=f"{arm}: examples per class of each client")
        fig.colorbar(image, ax=hax, label="examples")
    note = fig.add_subplot(grid[1, 2])
    note.axis("off")
    shown = table[["arm", "E", "reached", "median_rounds_to_target", "final_test_accuracy_mean"]]
    text = "\n".join(f"{r.arm:<24} E={r.E:<3} {r.reached:>4}  {r.median_rounds_to_target:>6.0f}  "
                     f"{r.final_test_accuracy_mean:.3f}" for r in shown.itertuples())
    note.text(0, 1, f"{'arm':<24} {'E':<5} {'hit':>4}  {'rounds':>6}  acc\n" + text, family="monospace",
              fontsize=9, va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
