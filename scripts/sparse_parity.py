"""Hidden progress on sparse parity: SGD sits at chance, then solves it; the wait grows with n.

Barak et al. (2022, "Hidden progress in deep learning: SGD learns parities near
the computational limit") train an MLP with SGD on (n, k)-sparse parity: n uniform
random ±1 bits, labelled by the parity of k of them. The loss stays at chance for
a long time and then drops abruptly; the number of steps to solve grows with n,
as n^O(k) (n^k in their theory, about n^(k-1) to n^k in their experiments).

Here one study, k = 3, ``[grid] "data.n" = [...]`` (each n is a cohort: its
own input shape, compiled once), with seeds as the members of each cohort. The
network is an MLP n-W-2 (ReLU, W = 1000 by default) trained by plain SGD (learning
rate 0.1, batch 32) on the cross-entropy of two classes. Its kernels start as
PyTorch's ``nn.Linear`` default, uniform on ±1/sqrt(fan_in) (``lecun_uniform`` ×
1/sqrt(3)); biases start at 0. Barak et al. used PyTorch; with jaxdyn's default
``lecun_normal`` (√3 times larger) and learning rate 0.1, the plateau is a noisy
loss of 1-3 far above chance instead of the paper's flat ln 2. Training is online
SGD, as in the paper: every step draws 32 new examples on the device
(``data.fresh = true``), so no example is seen twice; ``--examples N`` trains on a
fixed set of N examples instead (drawn with replacement), for the comparison.

Solving is the first evaluated step at which the accuracy on the fixed 1000-example
test set reaches 0.99 (``Results.first_crossing``), with the test set evaluated every
``CHUNK`` = 50 steps: the test set is fresh data, so this is generalisation and not
memorisation, and 0.99 (at most 10 errors) is well past the 0.5 of the plateau and
the noise of 1000 examples (a network at 0.95 reads 0.99 with probability < 1e-6);
after the drop every member goes on to 1.0. The median over seeds counts a seed that
never solved as infinitely slow, so it is finite only when more than half solved.
Also reported: the step at which the test accuracy first reaches 0.6 (leaving the
plateau), to show how short the drop is against the wait before it.

The slope is an ordinary least-squares fit of log(median steps) on log(n) over the
n whose median is finite (and over n >= 20 only, where the constant cost of
fitting at all weighs less), compared with k - 1 = 2 and k = 3. Writes the figure
(``docs/sparse_parity.png``: the median training loss against step per n, and the
steps to solve against n on log-log axes with the fit) and the numbers
(``docs/sparse_parity.json``).

Measured on a 2-core CPU (8 seeds, n = 10 ... 100, 12,000 steps, online, 129 s): every
seed of every n solved, the median from 700 steps (n = 10) to 8125 (n = 100), a fitted
slope of 1.07 ± 0.02: about n^1, well under k - 1 = 2 (docs/sparse_parity.json). A fixed
set of 500,000 examples gave 650 to 7450 steps, slope 1.05.

    python scripts/sparse_parity.py [--ns 10 15 20 30 40 50 70 100] [--seeds 8] [--steps 12000] [--out runs/sp]
    python scripts/sparse_parity.py --quick          # n in {10, 15, 20}, 2 seeds, 2000 steps: a check
    python scripts/sparse_parity.py --from-run RUN   # the tables and figure again, from a finished run
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

K = 3
CHUNK = 50  # steps per chunk; the test set is evaluated after every chunk
SOLVED = 0.99  # test accuracy that counts as solved
LEFT_PLATEAU = 0.6  # test accuracy that counts as having left the plateau
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}


def study(ns: list[int], seeds: int, steps: int, width: int, lr: float, batch: int, examples: int) -> dict:
    """``examples`` = 0: online SGD (``data.fresh``; the default 10,000-example set only measures
    train_loss); else a fixed training set of that many examples."""
    data = {"fresh": True} if examples == 0 else {"n_examples": examples}
    return {"study": {"name": "sparse-parity", "seeds": seeds},
            "data": {"name": "parity", "k": K, **data, "encoding": "signs", "labels": "classes", "seed": 0},
            "model": {"kind": "mlp", "hidden": [width], "activation": "relu", "init": "lecun_uniform",
                      "init_scale": 1 / math.sqrt(3)},  # PyTorch's nn.Linear kernels: U(±1/sqrt(fan_in))
            "loss": {"name": "cross_entropy"},
            "optim": {"name": "sgd", "learning_rate": lr},
            "train": {"steps": steps, "batch_size": batch, "chunk_steps": CHUNK, "log_every": CHUNK,
                      "eval_every": 1, "checkpoint_every": steps // CHUNK},
            "probes": NO_PROBES,
            "grid": {"data.n": ns}}


def censored_median(steps: np.ndarray) -> float:
    """The median over all seeds, a seed that never got there counted as infinitely slow (NaN → inf):
    finite only when more than half of them got there."""
    value = float(np.median(np.where(np.isnan(steps), np.inf, steps)))
    return value if math.isfinite(value) else float("nan")


def fit(ns, times) -> dict:
    """Least squares of log(time) on log(n): the exponent, its standard error, the prefactor."""
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(times, float))
    if len(x) < 2:
        return {"slope": float("nan"), "stderr": float("nan"), "prefactor": float("nan"), "ns": list(ns)}
    if len(x) > 2:
        (slope, intercept), cov = np.polyfit(x, y, 1, cov=True)
        stderr = float(np.sqrt(cov[0, 0]))
    else:  # a line through two points: no spread left to estimate an error from
        (slope, intercept), stderr = np.polyfit(x, y, 1), float("nan")
    return {"slope": float(slope), "stderr": stderr, "prefactor": float(np.exp(intercept)),
            "ns": [int(n) for n in ns]}


def analyse(res) -> tuple[list[dict], dict]:
    solved = res.first_crossing("test_accuracy", SOLVED)
    left = res.first_crossing("test_accuracy", LEFT_PLATEAU)
    reached = res.time_to("test_accuracy", SOLVED, by=["data.n"])  # median over the seeds that got there
    rows = []
    for n, group in solved.groupby("data.n"):
        steps = group.sort_values("init_seed").step.to_numpy()
        escape = left[left["data.n"] == n].sort_values("init_seed").step.to_numpy()
        got = steps[~np.isnan(steps)]
        row = reached[reached["data.n"] == n].iloc[0]
        rows.append({"n": int(n), "reached": row.reached, "median_steps": censored_median(steps),
                     "median_steps_of_reached": float(row.step_median),
                     "min_steps": float(got.min()) if got.size else float("nan"),
                     "max_steps": float(got.max()) if got.size else float("nan"),
                     "median_steps_to_leave_plateau": censored_median(escape),
                     "median_drop_steps": censored_median(steps - escape),
                     "steps_per_seed": [None if np.isnan(s) else int(s) for s in steps]})
    usable = [r for r in rows if math.isfinite(r["median_steps"])]
    fits = {"all_n": fit([r["n"] for r in usable], [r["median_steps"] for r in usable]),
            "n_ge_20": fit([r["n"] for r in usable if r["n"] >= 20],
                           [r["median_steps"] for r in usable if r["n"] >= 20])}
    return rows, fits


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[10, 15, 20, 30, 40, 50, 70, 100], help="values of n")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12000, help=f"steps of every member (a multiple of {CHUNK})")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--examples", type=int, default=0,
                        help="0 (the default): new examples every step (data.fresh); N: a fixed training set of N")
    parser.add_argument("--quick", action="store_true", help="n in {10, 15, 20}, 2 seeds, 2000 steps")
    parser.add_argument("--out", default=None, help="the run folder (default runs/sparse-parity-<time>)")
    parser.add_argument("--from-run", default=None, help="analyse this finished run instead of training")
    parser.add_argument("--figure", default=None, help="default docs/sparse_parity.png (with --quick: in --out)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.seeds, args.steps = [10, 15, 20], 2, 2000
    if args.steps % CHUNK:
        parser.error(f"--steps: a multiple of {CHUNK}")
    out = Path(args.from_run or args.out or f"runs/sparse-parity-{time.strftime('%Y%m%d-%H%M%S')}")
    figure = Path(args.figure) if args.figure else (out / "sparse_parity.png" if args.quick
                                                    else ROOT / "docs" / "sparse_parity.png")
    config = study(sorted(args.ns), args.seeds, args.steps, args.width, args.lr, args.batch, args.examples)
    tic = time.perf_counter()
    if args.from_run:  # the study's config and wall time from the JSON written when it ran, if there is one
        res = jaxdyn.load(out)
        before = json.loads(figure.with_suffix(".json").read_text()) if figure.with_suffix(".json").exists() else {}
        if before.get("run_dir") == str(out):
            config, seconds = before["config"], before["seconds"]
        else:
            print(f"note: {figure.with_suffix('.json')} is not this run's: the config recorded is the one these "
                  f"arguments give; check it against {out / 'config.toml'}")
            seconds = None
    else:
        res = jaxdyn.run(config, out=out, progress=False, summary=False)
        seconds = round(time.perf_counter() - tic, 1)
    rows, fits = analyse(res)

    steps = int(res.metrics.step.max())
    print(f"\nsparse parity, k = {K}: steps to test accuracy >= {SOLVED} (evaluated every {CHUNK} steps, "
          f"{steps} steps at most); median over seeds, a seed that never solved counted as never")
    print(f"{'n':>4} {'reached':>8} {'median':>8} {'min':>7} {'max':>7} {'leave plateau':>14} {'drop':>6}")
    for r in rows:
        print(f"{r['n']:>4} {r['reached']:>8} {r['median_steps']:>8.0f} {r['min_steps']:>7.0f} {r['max_steps']:>7.0f} "
              f"{r['median_steps_to_leave_plateau']:>14.0f} {r['median_drop_steps']:>6.0f}")
    for name, f in fits.items():
        if not math.isfinite(f["slope"]):
            print(f"fit {name}: fewer than 2 values of n with a finite median ({f['ns']}): no slope")
            continue
        print(f"fit {name}: median steps ~ {f['prefactor']:.3g} n^{f['slope']:.2f} (± {f['stderr']:.2f}) "
              f"over n = {f['ns']}; k - 1 = {K - 1}, k = {K}")
    if seconds is not None:
        print(f"study wall time {seconds:.0f} s")

    _figure(res, rows, fits, figure)
    record = {"study": "sparse_parity", "k": K, "config": config,
              "solved": f"first evaluated step with test_accuracy >= {SOLVED} (1000 test examples, evaluated "
                        f"every {CHUNK} steps)",
              "left_plateau": f"first evaluated step with test_accuracy >= {LEFT_PLATEAU}",
              "median": "over all seeds, a seed that never solved counted as infinitely slow (NaN unless more "
                        "than half solved); median_steps_of_reached is Results.time_to's, over those that did",
              "drop": "median_drop_steps: the median over seeds of (solved - left_plateau), each seed's own",
              "fit": "least squares of log(median_steps) on log(n)",
              "rows": rows, "fits": fits, "seconds": seconds, "run_dir": str(out), "environment": environment()}
    figure.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {figure} and {figure.with_suffix('.json')}")
    return record


def _figure(res, rows: list[dict], fits: dict, path: Path) -> None:
    loss = res.frame("train_loss", by=["data.n"])
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    ns = [r["n"] for r in rows]
    colors = {n: colormaps["viridis"](i / max(len(ns) - 1, 1) * 0.9) for i, n in enumerate(ns)}
    for n, group in loss.groupby("data.n"):
        for _, member in group.groupby("member"):
            left.plot(member.step, member.value, color=colors[n], alpha=0.15, lw=0.7)
        median = group.groupby("step").value.median()
        left.plot(median.index, median.to_numpy(), color=colors[n], lw=2, label=f"n = {n}")
    left.axhline(math.log(2), color="0.3", ls="--", lw=1, label="chance (ln 2)")
    left.set(xscale="log", yscale="log", xlabel="SGD step",
             ylabel=f"training loss (cross-entropy, mean of {CHUNK} steps)",
             title=f"Sparse parity, k = {K}: a plateau near chance (ln 2), then a drop\n"
                   f"(bold: median over seeds; thin: each seed)")
    left.legend(fontsize=9, loc="lower left")

    for r in rows:
        got = [s for s in r["steps_per_seed"] if s is not None]
        right.scatter([r["n"]] * len(got), got, color=colors[r["n"]], alpha=0.45, s=18)
    usable = [r for r in rows if math.isfinite(r["median_steps"])]
    right.plot([r["n"] for r in usable], [r["median_steps"] for r in usable], "ko", ms=7, label="median over seeds")
    for r in rows:  # how many seeds solved, under each n's lowest point
        if math.isfinite(r["min_steps"]):
            right.annotate(r["reached"], (r["n"], r["min_steps"]), textcoords="offset points", xytext=(0, -13),
                           ha="center", fontsize=8)
    grid = np.geomspace(min(ns) * 0.9, max(ns) * 1.1, 50)
    f = fits["all_n"]
    if math.isfinite(f["slope"]):
        right.plot(grid, f["prefactor"] * grid ** f["slope"], "k-", lw=1.5,
                   label=f"fit, all n: slope {f['slope']:.2f} ± {f['stderr']:.2f}")
    g = fits["n_ge_20"]
    if math.isfinite(g["slope"]):
        sub = grid[grid >= 19]
        right.plot(sub, g["prefactor"] * sub ** g["slope"], "k:", lw=1.5,
                   label=f"fit, n ≥ 20: slope {g['slope']:.2f}")
    if usable:  # reference slopes k - 1 and k through the largest n's median, clipped to the data's range
        n0, t0 = usable[-1]["n"], usable[-1]["median_steps"]
        for power, style in ((K - 1, (0, (5, 3))), (K, (0, (2, 2)))):
            right.plot(grid, t0 * (grid / n0) ** power, color="tab:red", ls=style, lw=1,
                       label=f"slope {power} (n^{power}), for comparison")
        solved = [s for r in rows for s in r["steps_per_seed"] if s is not None]
        right.set_ylim(min(solved) / 3, max(solved) * 1.6)
    right.set(xscale="log", yscale="log", xlabel="n (input bits)", ylabel=f"steps to test accuracy ≥ {SOLVED}",
              title="Time to solve against n (log-log)\n(dots: seeds; under them: seeds that solved)")
    right.set_xticks(ns, [str(n) for n in ns])
    right.legend(fontsize=9, loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
