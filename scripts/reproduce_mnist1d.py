"""Reproduce the MNIST-1D paper's model table (Greydanus 2020, Table 1) with jaxdyn.

Runs ``examples/mnist1d_{linear,mlp,cnn,gru}.toml`` (Adam at 1e-2, batch 100, 6000
steps, 8 seeds, the paper repository's architectures), and prints each model's
mean ± std test accuracy over seeds beside the published figure, and the wall time
of each study. A model matches when the published figure lies within two standard
deviations of the seeds' mean.

    python scripts/reproduce_mnist1d.py [--seeds N] [--out runs/mnist1d-table]
"""

import argparse
import json
import time
from pathlib import Path

import jaxdyn

PUBLISHED = {"linear": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per model (the paper table: 8 or more)")
    parser.add_argument("--out", default=f"runs/mnist1d-table-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--models", default=",".join(PUBLISHED), help="comma-separated subset")
    args = parser.parse_args(argv)

    rows = []
    for model in args.models.split(","):
        tic = time.perf_counter()
        res = jaxdyn.run(EXAMPLES / f"mnist1d_{model}.toml", overrides=[f"study.seeds={args.seeds}"],
                         out=Path(args.out) / model, progress=True, summary=False)
        wall = time.perf_counter() - tic
        acc = res.members.final_test_accuracy
        rows.append({"model": model, "mean": acc.mean(), "std": acc.std(), "seeds": len(acc),
                     "published": PUBLISHED[model], "wall_s": wall,
                     "within_2_std": bool(abs(acc.mean() - PUBLISHED[model]) <= 2 * max(acc.std(), 1e-3))})
    print(f"\n{'model':<8} {'jaxdyn (mean ± std)':>20} {'published':>10} {'match':>6} {'wall time':>10}")
    for r in rows:
        print(f"{r['model']:<8} {r['mean']:>12.3f} ± {r['std']:.3f} {r['published']:>10.2f} "
              f"{'yes' if r['within_2_std'] else 'no':>6} {r['wall_s']:>9.0f}s")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(rows, indent=2, default=float))
    return rows


if __name__ == "__main__":
    main()
