"""The vanishing-gradient study: Elman, LSTM and GRU cells on the adding problem at growing length.

Runs ``examples/adding_T{10,50,100,200}.toml``, one study per length T, each with
the three cells as cohorts and 4 seeds as members, and the same budget at every
length (Adam at 1e-3, gradients clipped to norm 1, batch 50, 4000 steps). It prints
the final test MSE (mean ± std over seeds) beside the trivial baseline of
predicting the mean, Var(U1 + U2) = 1/6 ≈ 0.167, and how many seeds solved the
task (MSE below a tenth of the baseline). It names, for each cell, the shortest
length at which most seeds fail, draws ``vanishing_gradients.png`` (test MSE
against T), and writes the table as JSON beside the runs and under
``benchmarks/results/``.

Published reference: a plain RNN (Elman) fails the adding problem once the marked
values lie far apart, while LSTM solves it (Hochreiter & Schmidhuber 1997); Le,
Jaitly & Hinton (2015, Fig. 2) show the tanh RNN stuck at the baseline MSE for
T = 150 and beyond while the LSTM learns it.

    python scripts/vanishing_gradients.py [--lengths 10,50,100,200] [--seeds 4] [--steps 4000]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment, write_result  # noqa: E402

BASELINE = 1 / 6  # MSE of predicting the mean sum of two U(0, 1) values
SOLVED = BASELINE / 10  # a seed solved the task below this test MSE
CELLS = ("elman", "lstm", "gru")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,50,100,200", help="comma-separated T values (each has an example)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (a multiple of 500)")
    parser.add_argument("--out", default=f"runs/vanishing-gradients-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                        help="where the JSON table goes ('' for nowhere else)")
    args = parser.parse_args(argv)

    rows = []
    for t in map(int, args.lengths.split(",")):
        overrides = [f"study.seeds={args.seeds}"] + ([f"train.steps={args.steps}"] if args.steps else [])
        tic = time.perf_counter()
        res = jaxdyn.run(ROOT / "examples" / f"adding_T{t}.toml", overrides=overrides,
                         out=Path(args.out) / f"T{t}", progress=True, summary=False)
        wall = time.perf_counter() - tic
        for cell, group in res.members.groupby("model.cell", sort=False):
            mse = group.final_test_loss.to_numpy()
            rows.append({"T": t, "cell": cell, "mean": float(np.mean(mse)), "std": float(np.std(mse, ddof=1)),
                         "seeds": len(mse), "solved": int((mse < SOLVED).sum()), "baseline": BASELINE,
                         "study_wall_s": wall})
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "vanishing_gradients.png")
    print(f"wrote {out / 'table.json'} and {out / 'vanishing_gradients.png'}")
    if args.results:
        write_result(args.results, "vanishing_gradients", environment()["device"]["platform"],
                     {"environment": environment(), "steps": args.steps or "per example (4000)", "rows": rows})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nadding problem: final test MSE over seeds (baseline, predicting the mean: {BASELINE:.3f}; "
          f"solved: MSE < {SOLVED:.4f})")
    print(f"{'T':>5} {'cell':<6} {'test MSE (mean ± std)':>24} {'solved':>8} {'study wall':>11}")
    for r in rows:
        print(f"{r['T']:>5} {r['cell']:<6} {r['mean']:>15.4f} ± {r['std']:.4f} "
              f"{r['solved']:>4}/{r['seeds']:<3} {r['study_wall_s']:>10.0f}s")
    for cell in dict.fromkeys(r["cell"] for r in rows):
        failing = [r["T"] for r in rows if r["cell"] == cell and r["solved"] * 2 < r["seeds"]]
        where = f"fails (most seeds unsolved) from T = {min(failing)}" if failing else "solves every length tried"
        print(f"  {cell}: {where}")


def plot(rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, cell in enumerate(dict.fromkeys(r["cell"] for r in rows)):
        mine = [r for r in rows if r["cell"] == cell]
        mean, std = np.array([r["mean"] for r in mine]), np.array([r["std"] for r in mine])
        lower = np.minimum(std, 0.9 * mean)  # a band below zero cannot be drawn on a log axis
        ax.errorbar([r["T"] for r in mine], mean, yerr=[lower, std], marker="o", capsize=3, color=f"C{i}",
                    label=cell)
    ax.axhline(BASELINE, color="gray", linestyle="--", label="predict the mean (1/6)")
    ax.axhline(SOLVED, color="gray", linestyle=":", label="solved below")
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="final test MSE (mean ± std over seeds)",
           xticks=sorted({r["T"] for r in rows}), xticklabels=[str(t) for t in sorted({r["T"] for r in rows})],
           title="adding problem: where each cell fails")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
