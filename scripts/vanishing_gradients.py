"""The vanishing-gradient study: Elman, LSTM, GRU and a transformer on the adding and copy problems at growing length.

Four arms at the same budget (Adam at 1e-3, gradients clipped to norm 1, batch 50,
the same steps and 4 seeds) on two long-memory tasks, one pair of studies per task
and length T:

* the three recurrent cells (hidden 64, read out from the last state) as cohorts of
  one study: ``examples/adding_T{T}.toml`` itself for the adding problem (a dict
  built from ``examples/adding_T10.toml`` for a T without an example), and that
  config with ``[data]`` swapped for the copy problem;
* the transformer as a second study (a grid over ``model.cell`` cannot hold another
  model kind): the same config with ``[model]`` replaced and the grid removed, its
  rows merged into the table as the arm "transformer". ``TRANSFORMER``: 2 pre-LN
  blocks, d_model 32, 2 heads, MLP ×2, learned positions, non-causal, read out from
  the last position, about the 64-unit LSTM's parameter count (the script measures
  and prints both).

The adding problem (``[T, 2]`` → the sum of two marked values): final test MSE beside
the baseline of predicting the mean, Var(U1 + U2) = 1/6 ≈ 0.167; a seed solved it
below a tenth of that. The copy problem (10 symbols of 8, a delay of T, a recall
marker; ``[T + 10, 10]`` one-hot → the 10 symbols, read out at once): final test
accuracy over the 10 recalled symbols beside chance 1/8; a seed solved it at
accuracy ≥ 0.9. For each task and arm the script names the shortest length at which
most seeds fail, draws ``vanishing_gradients.png`` (adding MSE and copy accuracy
against T, one panel each), and writes the table as JSON beside the runs and under
``benchmarks/results/``.

The default budget, 1000 steps at T ∈ {10, 50, 100} (adding) and delays {10, 25, 50}
(copy), is what the two-core CPU runs in about a quarter of an hour (11.5 and 14.4 min
in two runs, with other jobs on it): the transformer's T × T attention makes its step
several times the LSTM's at T = 100 there. The copy problem gets the adding problem's
budget although no arm reaches 0.9 in it (``--steps`` for a longer one). ``--task adding
--arms elman,lstm,gru --lengths 10,50,100,200 --steps 4000`` is the examples' own budget
(8.3 min).

Published reference: a plain RNN (Elman) fails the adding problem once the marked
values lie far apart, while LSTM solves it (Hochreiter & Schmidhuber 1997); Le,
Jaitly & Hinton (2015, Fig. 2) show the tanh RNN stuck at the baseline MSE for
T = 150 and beyond while the LSTM learns it. On the copy problem Arjovsky, Shah &
Bengio (2016) report the LSTM stuck at the memoryless baseline for long delays (their
output is symbol by symbol, not all at once as here).

    python scripts/vanishing_gradients.py [--task adding|copy|both] [--lengths 10,50,100]
        [--copy-lengths 10,25,50] [--arms elman,lstm,gru,transformer] [--seeds 4] [--steps 1000]
"""

import argparse
import copy
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402  (first: one XLA CPU device per core)
import jax  # noqa: E402
from benchmarks.timing import environment, write_result  # noqa: E402

CELLS = ("elman", "lstm", "gru")
ARMS = (*CELLS, "transformer")
TRANSFORMER = {"kind": "transformer", "layers": 2, "d_model": 32, "heads": 2, "mlp_ratio": 2, "norm": "layer",
               "causal": False, "positions": "learned", "readout": "last", "activation": "relu"}
STEPS = 1000

ADDING_BASELINE = 1 / 6  # MSE of predicting the mean sum of two U(0, 1) values
COPY_CHANCE = 1 / 8  # accuracy of guessing each of the 10 symbols
TASKS = {
    # metric column, higher is better, solved threshold, reference line, labels
    "adding": {"metric": "final_test_loss", "higher": False, "solved": ADDING_BASELINE / 10,
               "reference": ADDING_BASELINE, "name": "test MSE", "reference_name": "predict the mean (1/6)"},
    "copy": {"metric": "final_test_accuracy", "higher": True, "solved": 0.9,
             "reference": COPY_CHANCE, "name": "test accuracy", "reference_name": "chance (1/8)"},
}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("adding", "copy", "both"), default="both")
    parser.add_argument("--lengths", default="10,50,100", help="adding problem: comma-separated T values")
    parser.add_argument("--copy-lengths", default="10,25,50", help="copy problem: comma-separated delays T")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=STEPS, help="train.steps of every arm (a multiple of 500)")
    parser.add_argument("--out", default=f"runs/vanishing-gradients-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                        help="where the JSON table goes ('' for nowhere else)")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    tasks = ("adding", "copy") if args.task == "both" else (args.task,)
    lengths = {"adding": [int(t) for t in args.lengths.split(",")],
               "copy": [int(t) for t in args.copy_lengths.split(",")]}

    out = Path(args.out)
    rows, tic_all = [], time.perf_counter()
    for task in tasks:
        for t in lengths[task]:
            rows += run_length(task, t, arms, args.seeds, args.steps, out / f"{task}_T{t}")
    total = time.perf_counter() - tic_all
    print_table(rows, total)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "vanishing_gradients.png")
    print(f"wrote {out / 'table.json'} and {out / 'vanishing_gradients.png'}")
    if args.results:
        write_result(args.results, "vanishing_gradients", environment()["device"]["platform"],
                     {"environment": environment(), "steps": args.steps, "seeds": args.seeds,
                      "transformer": TRANSFORMER, "total_wall_s": total, "rows": rows})
    return rows


def base_config(t: int) -> dict:
    """The adding example at length ``t`` as a dict (the T = 10 one with ``seq_len`` set, if none exists)."""
    path = ROOT / "examples" / f"adding_T{t}.toml"
    config = tomllib.loads((path if path.exists() else ROOT / "examples" / "adding_T10.toml").read_text())
    config["data"]["seq_len"] = t
    config["study"]["name"] = f"adding-T{t}"
    return config


def arm_configs(task: str, t: int, arms: list[str]) -> dict:
    """``{label: config dict}``: the recurrent cells as one study's cohorts, the transformer as another."""
    config = base_config(t)
    if task == "copy":
        config["data"] = {"name": "copy", "seq_len": t}
        config["study"]["name"] = f"copy-T{t}"
    studies = {}
    cells = [c for c in CELLS if c in arms]
    if cells:
        studies["rnn"] = {**copy.deepcopy(config), "grid": {"model.cell": cells}}
    if "transformer" in arms:
        other = {k: v for k, v in copy.deepcopy(config).items() if k != "grid"}
        other["model"] = dict(TRANSFORMER)
        other["study"]["name"] += "-transformer"
        studies["transformer"] = other
    return studies


def run_length(task: str, t: int, arms: list[str], seeds: int, steps: int, out: Path) -> list[dict]:
    spec, rows = TASKS[task], []
    overrides = [f"study.seeds={seeds}", f"train.steps={steps}"]
    for label, config in arm_configs(task, t, arms).items():
        print(f"\n{task} T = {t}: {label}", flush=True)
        tic = time.perf_counter()
        res = jaxdyn.run(config, overrides=overrides, out=out / label, progress=True, summary=False)
        wall = time.perf_counter() - tic
        members = res.members
        groups = members.groupby("model.cell", sort=False) if label == "rnn" else [("transformer", members)]
        for arm, group in groups:
            values = group[spec["metric"]].to_numpy(dtype=float)
            solved = values >= spec["solved"] if spec["higher"] else values < spec["solved"]  # NaN: unsolved
            rows.append({"task": task, "T": t, "arm": arm, "mean": float(np.nanmean(values)),
                         "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0,
                         "values": [float(v) for v in values], "seeds": len(values), "solved": int(solved.sum()),
                         "diverged": int((group.diverged_at >= 0).sum()), "params": n_params(res.run_dir, group),
                         "metric": spec["metric"], "solved_at": spec["solved"], "reference": spec["reference"],
                         "steps": steps, "study_wall_s": wall})
    return rows


def n_params(run_dir, group) -> int:
    """Trainable parameters of one member of ``group`` (all its members have the same shapes)."""
    member = jaxdyn.extract_member(run_dir, int(group.member.iloc[0]))
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(member.variables["params"])))


def print_table(rows: list[dict], total: float) -> None:
    for task in dict.fromkeys(r["task"] for r in rows):
        spec, mine = TASKS[task], [r for r in rows if r["task"] == task]
        relation = "≥" if spec["higher"] else "<"
        print(f"\n{task} problem: final {spec['name']} over seeds ({spec['reference_name']}: "
              f"{spec['reference']:.3f}; solved: {spec['name']} {relation} {spec['solved']:.4g}), "
              f"{mine[0]['steps']} steps")
        print(f"{'T':>5} {'arm':<12} {spec['name'] + ' (mean ± std)':>26} {'solved':>8} {'params':>8} {'study wall':>11}")
        for r in mine:
            print(f"{r['T']:>5} {r['arm']:<12} {r['mean']:>17.4f} ± {r['std']:.4f} "
                  f"{r['solved']:>4}/{r['seeds']:<3} {r['params']:>8} {r['study_wall_s']:>10.0f}s")
        for arm in dict.fromkeys(r["arm"] for r in mine):
            failing = [r["T"] for r in mine if r["arm"] == arm and r["solved"] * 2 < r["seeds"]]
            where = f"fails (most seeds unsolved) from T = {min(failing)}" if failing else "solves every length tried"
            print(f"  {arm}: {where}")
    print(f"\nall studies: {total:.0f} s ({total / 60:.1f} min)")


def plot(rows: list[dict], path: Path) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = Figure(figsize=(6 * len(tasks), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    for ax, task in zip(axes, tasks):
        spec, mine = TASKS[task], [r for r in rows if r["task"] == task]
        for arm in dict.fromkeys(r["arm"] for r in mine):
            line = [r for r in mine if r["arm"] == arm]
            mean, std = np.array([r["mean"] for r in line]), np.array([r["std"] for r in line])
            lower = std if spec["higher"] else np.minimum(std, 0.9 * mean)  # a log axis cannot draw below zero
            ax.errorbar([r["T"] for r in line], mean, yerr=[lower, std], marker="o", capsize=3,
                        color=f"C{ARMS.index(arm)}", label=arm)
        ax.axhline(spec["reference"], color="gray", linestyle="--", label=spec["reference_name"])
        ax.axhline(spec["solved"], color="gray", linestyle=":", label="solved " + ("above" if spec["higher"] else "below"))
        ticks = sorted({r["T"] for r in mine})
        ax.set(xscale="log", xlabel="sequence length T" if task == "adding" else "delay T",
               ylabel=f"final {spec['name']} (mean ± std over seeds)", xticks=ticks, xticklabels=[str(t) for t in ticks],
               title=f"{task} problem, {mine[0]['steps']} steps")
        ax.xaxis.set_minor_locator(NullLocator())
        if spec["higher"]:
            ax.set_ylim(0, 1.02)
        else:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
