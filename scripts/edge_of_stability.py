"""The edge-of-stability study: sharpness under full-batch gradient descent rises to 2/η and hovers there.

Runs ``examples/edge_of_stability.toml`` as ONE population: full-batch gradient
descent on 1000 MNIST-1D examples, a tanh MLP 200-200 with the squared loss,
several learning rates η × 4 seeds, the ``hessian`` probe (top eigenvalue by
Lanczos on the whole training set) after every chunk of 100 steps. It draws
sharpness against step with each η's 2/η line (``edge_of_stability.png``) and
prints, per learning rate, the plateau sharpness (its mean over the last third of
training) and that times η / 2: Cohen et al. (2021) find it at 1, the sharpness
held at 2/η, the largest value at which gradient descent on a quadratic is stable.

    python scripts/edge_of_stability.py [--seeds 4] [--steps 3000] [--out runs/eos]
"""

import argparse
import json
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment, write_result  # noqa: E402


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (a multiple of 100)")
    parser.add_argument("--out", default=f"runs/edge-of-stability-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                        help="where the JSON table goes ('' for nowhere else)")
    args = parser.parse_args(argv)

    overrides = [f"study.seeds={args.seeds}"] + ([f"train.steps={args.steps}"] if args.steps else [])
    tic = time.perf_counter()
    res = jaxdyn.run(ROOT / "examples" / "edge_of_stability.toml", overrides=overrides, out=args.out,
                     progress=True, summary=False)
    wall = time.perf_counter() - tic
    sharp = res.metrics[(res.metrics.metric == "sharpness") & (res.metrics.layer == "")]
    sharp = sharp.merge(res.members[["member", "learning_rate", "diverged_at"]], on="member")
    last_step = sharp.step.max()
    rows = []
    for lr, group in sharp.groupby("learning_rate"):
        plateau = group[group.step > last_step * 2 / 3].groupby("member").value.mean()
        first = group[group.step == group.step.min()].value
        rows.append({"learning_rate": float(lr), "two_over_lr": 2 / lr, "initial_sharpness": float(first.mean()),
                     "plateau_sharpness": float(plateau.mean()), "plateau_std": float(plateau.std(ddof=1)),
                     "plateau_x_lr_over_2": float(plateau.mean() * lr / 2),
                     "diverged": int((res.members[res.members.learning_rate == lr].diverged_at >= 0).sum()),
                     "seeds": int(plateau.size)})
    print(f"\nedge of stability: plateau sharpness (mean over the last third of {last_step} steps, "
          f"over {args.seeds} seeds); study wall time {wall:.0f} s")
    print(f"{'lr':>7} {'2/lr':>7} {'initial':>9} {'plateau (mean ± std)':>22} {'plateau·lr/2':>13} {'diverged':>9}")
    for r in rows:
        print(f"{r['learning_rate']:>7g} {r['two_over_lr']:>7.1f} {r['initial_sharpness']:>9.2f} "
              f"{r['plateau_sharpness']:>13.2f} ± {r['plateau_std']:<6.2f} {r['plateau_x_lr_over_2']:>13.3f} "
              f"{r['diverged']:>5}/{r['seeds']}")
    plot(sharp, rows, Path(args.out) / "edge_of_stability.png")
    (Path(args.out) / "table.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {Path(args.out) / 'edge_of_stability.png'} and {Path(args.out) / 'table.json'}")
    if args.results:
        write_result(args.results, "edge_of_stability", environment()["device"]["platform"],
                     {"environment": environment(), "wall_s": wall, "steps": int(last_step), "rows": rows})
    return rows


def plot(sharp, rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(rows):
        group = sharp[sharp.learning_rate == r["learning_rate"]]
        for _, member in group.groupby("member"):
            ax.plot(member.step, member.value, color=f"C{i}", alpha=0.5, lw=1)
        ax.axhline(r["two_over_lr"], color=f"C{i}", linestyle="--", lw=1.5, label=f"η = {r['learning_rate']:g}: 2/η")
    ax.set(xlabel="step (full-batch gradient descent)", ylabel="sharpness (top Hessian eigenvalue)",
           title="edge of stability: sharpness rises to 2/η (one line per seed)")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
