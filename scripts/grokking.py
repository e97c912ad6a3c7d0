"""The grokking study: test accuracy on modular addition jumps long after training accuracy saturates.

Power et al. (2022) train a small transformer on (a + b) mod p from a fraction of
the p² pairs: training accuracy reaches 1 early, test accuracy only much later
("grokking"), and weight decay shortens the delay. Nanda et al. (2023) reproduce it
with a one-layer transformer and full-batch AdamW; Liu et al. (2022, "Omnigrok")
trace it to the weight norm: a large initialisation delays generalisation, and
weight decay is what brings the norm down to where the network generalises.

Three arms, each ONE population (weight decay × seeds as members):

  (a) transformer: ``examples/grokking.toml``: one layer (d_model 32, 4 heads, no
      LayerNorm) on tokens [a, b, =], 1500 steps;
  (b) mlp: one hidden layer of 512 ReLUs on [onehot(a), onehot(b)], 2200 steps;
  (c) omnigrok: the MLP with ``model.init_scale`` α ∈ {1, 10, 100} (every initial
      kernel × α) as a second member axis, weight decay {0, 1, 3}, 2 seeds, 2500 steps.

All: p = 41 (the literature's 97 is out of reach of a 2-core CPU in minutes: a
full-batch step costs about p² (transformer) to p³ (MLP), and p = 41 is about the
largest at which the three arms fit in ten minutes, larger p grokking in fewer steps),
half of the pairs train, the same split for every member (data.seed = 0), AdamW
with learning rate 3e-3, betas (0.9, 0.98), full batch; (a) and (b) weight decay
{0, 0.1, 0.3, 1, 3} × 4 seeds. Test accuracy is evaluated every 50 steps, training
accuracy is the mean over each 10 steps.

Per arm and setting it reports, with ``Results.time_to`` / ``first_crossing``, the
median over seeds of the first step at which training accuracy reaches 0.99 and test
accuracy 0.95 (with how many seeds got there), the median delay between the two, and
the step at which test accuracy first reaches 0.5 (the onset). Writes
``docs/grokking.png`` (the curves, log step axis) and ``docs/grokking.json``.
7 minutes on a 2-core CPU with nothing else running (407 s: 131 + 128 + 147), up to
twice that while another job shares the cores (``--quick``: 1 seed, 600 steps, under a
minute, a smoke run whose figure and JSON go under ``--out``).

    python scripts/grokking.py [--quick] [--out runs/grokking] [--docs DIR]
"""

import argparse
import copy
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

CONFIG = ROOT / "examples" / "grokking.toml"
TRAIN_AT, TEST_AT, ONSET_AT = 0.99, 0.95, 0.5  # the thresholds of the report
MLP = {"kind": "mlp", "hidden": [512], "activation": "relu", "init": "lecun_normal"}
OMNIGROK_WEIGHT_DECAY = [0.0, 1.0, 3.0]
OMNIGROK_INIT_SCALE = [1.0, 10.0, 100.0]
TITLES = {"transformer": "(a) transformer on tokens", "mlp": "(b) MLP on one-hot inputs",
          "omnigrok": "(c) Omnigrok: MLP, initial kernels × α"}


def arm_configs(quick: bool) -> dict[str, dict]:
    """The three studies as config dicts: the transformer from ``examples/grokking.toml``, the two
    MLP arms from it with the model, the encoding and (for Omnigrok) the grid replaced."""
    with open(CONFIG, "rb") as f:
        base = tomllib.load(f)
    mlp = copy.deepcopy(base)
    mlp["study"]["name"] = "grokking-mlp"
    mlp["model"] = dict(MLP)
    mlp["data"]["encoding"] = "onehot"
    mlp["train"]["steps"] = 2200
    omni = copy.deepcopy(mlp)
    omni["study"].update(name="grokking-omnigrok", seeds=2)
    omni["train"]["steps"] = 2500
    omni["grid"] = {"optim.weight_decay": OMNIGROK_WEIGHT_DECAY, "model.init_scale": OMNIGROK_INIT_SCALE}
    arms = {"transformer": base, "mlp": mlp, "omnigrok": omni}
    if quick:
        for cfg in arms.values():
            cfg["study"]["seeds"] = 1
            cfg["train"]["steps"] = 600
    return arms


def settings_of(arm: str) -> list[str]:
    return ["weight_decay", "init_scale"] if arm == "omnigrok" else ["weight_decay"]


def summarize(res, arm: str) -> list[dict]:
    """One row per setting: the median steps to the thresholds over its seeds, with ``reached``."""
    keys = settings_of(arm)
    train = res.time_to("train_accuracy", TRAIN_AT, by=keys)
    test = res.time_to("test_accuracy", TEST_AT, by=keys)
    onset = res.time_to("test_accuracy", ONSET_AT, by=keys)
    # The delay per member (test step - train step), then its median over the seeds that reached both.
    per_member = res.first_crossing("train_accuracy", TRAIN_AT)[["member", "step"]].merge(
        res.first_crossing("test_accuracy", TEST_AT)[["member", "step"]], on="member", suffixes=("_train", "_test"))
    per_member = per_member.merge(res.members[["member", *keys, "final_test_accuracy"]], on="member")
    per_member["delay"] = per_member.step_test - per_member.step_train
    rows = []
    for (_, tr), (_, te), (_, on) in zip(train.iterrows(), test.iterrows(), onset.iterrows()):
        assert all(tr[k] == te[k] == on[k] for k in keys)  # time_to sorts its groups alike
        mine = per_member
        for k in keys:
            mine = mine[mine[k] == tr[k]]
        rows.append({
            "arm": arm, **{k: float(tr[k]) for k in keys},
            "seeds": len(mine),
            "train_0.99_step_median": _number(tr.step_median), "train_0.99_reached": tr.reached,
            "test_0.95_step_median": _number(te.step_median), "test_0.95_reached": te.reached,
            "delay_median": _number(mine.delay.median()),
            "test_0.5_step_median": _number(on.step_median), "test_0.5_reached": on.reached,
            "train_0.99_steps": [_number(x) for x in mine.sort_values("member").step_train],
            "test_0.95_steps": [_number(x) for x in mine.sort_values("member").step_test],
            "final_test_accuracy_median": float(mine.final_test_accuracy.median()),
            "final_test_accuracy_min": float(mine.final_test_accuracy.min()),
        })
    return rows


def _number(x):
    return None if x is None or np.isnan(x) else float(x)


def print_rows(arm: str, rows: list[dict], steps: int, wall: float) -> None:
    print(f"\n{TITLES[arm]}: {steps} steps, study wall time {wall:.0f} s; step medians over seeds "
          f"(reached = seeds that got there; '-' = none within the budget)")
    init = arm == "omnigrok"
    print(f"{'wd':>5} " + (f"{'α':>5} " if init else ""), end="")
    print(f"{'train≥0.99':>11} {'test≥0.95':>14} {'delay':>7} {'test≥0.5':>14} {'final test':>11}")
    show = lambda s: "-" if s is None else f"{s:.0f}"
    for r in rows:
        print(f"{r['weight_decay']:>5g} " + (f"{r['init_scale']:>5g} " if init else ""), end="")
        print(f"{show(r['train_0.99_step_median']):>6} ({r['train_0.99_reached']}) "
              f"{show(r['test_0.95_step_median']):>6} ({r['test_0.95_reached']}) {show(r['delay_median']):>7} "
              f"{show(r['test_0.5_step_median']):>6} ({r['test_0.5_reached']}) {r['final_test_accuracy_median']:>11.3f}")


def curves(res, metric: str, keys: list[str]) -> dict:
    """``{setting tuple: (steps, median over seeds, per-seed values [seeds, steps])}`` of ``metric``."""
    frame = res.frame(metric, by=keys)
    out = {}
    for setting, rows in frame.groupby(keys):
        table = rows.pivot_table(index="step", columns="member", values="value")
        key = setting if isinstance(setting, tuple) else (setting,)
        out[key] = (table.index.to_numpy(), table.median(axis=1).to_numpy(), table.to_numpy().T)
    return out


def plot(results: dict, rows: dict, p: int, path: Path) -> None:
    """(a), (b): train and test accuracy per weight decay; (c): Omnigrok's test accuracy per init scale and
    weight decay; (d): the median steps to the thresholds against weight decay."""
    fig = Figure(figsize=(15, 11), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, arm in zip(axes[0], ("transformer", "mlp")):
        res = results[arm]
        wds = sorted(res.members.weight_decay.unique())
        colour = {wd: colormaps["viridis"](0.9 * i / max(len(wds) - 1, 1)) for i, wd in enumerate(wds)}
        train, test = curves(res, "train_accuracy", ["weight_decay"]), curves(res, "test_accuracy", ["weight_decay"])
        for wd in wds:
            steps, median, seeds = test[(wd,)]
            for values in seeds:
                ax.plot(steps, values, color=colour[wd], lw=0.7, alpha=0.35)
            ax.plot(steps, median, color=colour[wd], lw=2.6, label=f"weight decay {wd:g}")
            steps, median, _ = train[(wd,)]
            ax.plot(steps, median, color=colour[wd], lw=1.6, ls="--")
        ax.plot([], [], color="k", lw=2.6, label="test (thin: each seed)")
        ax.plot([], [], color="k", lw=1.6, ls="--", label="train (mean of 10 steps)")
        seeds = res.members.init_seed.nunique()
        ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step (full batch)", ylabel="accuracy",
               title=f"{TITLES[arm]}\ntrain (dashed) and test (solid) accuracy, median over {seeds} "
                     f"seed{'s' * (seeds > 1)}")
        ax.axhline(TEST_AT, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=10, loc="upper left")

    ax = axes[1, 0]
    res = results["omnigrok"]
    test = curves(res, "test_accuracy", ["weight_decay", "init_scale"])
    scales = sorted(res.members.init_scale.unique())
    colour = {a: colormaps["plasma"](0.8 * i / max(len(scales) - 1, 1)) for i, a in enumerate(scales)}
    style = dict(zip(sorted(res.members.weight_decay.unique()), (":", "--", "-", "-.")))
    for (wd, alpha), (steps, median, _) in sorted(test.items()):
        ax.plot(steps, median, color=colour[alpha], ls=style[wd], lw=2.4, label=f"α = {alpha:g}, wd = {wd:g}")
    saturated = [r["train_0.99_step_median"] for r in rows["omnigrok"]]
    train_note = (f"train accuracy ≥ {TRAIN_AT} by step {max(saturated):.0f} everywhere"
                  if None not in saturated else "train accuracy: see grokking.json")
    seeds = res.members.init_seed.nunique()
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step (full batch)", ylabel="test accuracy",
           title=f"{TITLES['omnigrok']}\ntest accuracy (median of {seeds} seed{'s' * (seeds > 1)}); "
                 + train_note)
    ax.axhline(TEST_AT, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=10, ncol=len(style), loc="upper left", columnspacing=1.0)

    ax = axes[1, 1]
    budgets = {a: int(results[a].metrics.step.max()) for a in ("transformer", "mlp")}
    top = max(budgets.values())
    for shift, (arm, marker, colour_), (x_text, align) in zip(
            (-0.06, 0.06), (("transformer", "o", "C0"), ("mlp", "s", "C3")), ((-0.2, "left"), (4.2, "right"))):
        table, budget = rows[arm], budgets[arm]
        ax.axhline(budget, color=colour_, lw=0.9, ls=":")
        ax.text(x_text, budget * 1.04, f"{arm} budget ({budget} steps)", fontsize=10, color=colour_, ha=align)
        x = np.arange(len(table)) + shift
        ax.plot(x, [r["train_0.99_step_median"] or np.nan for r in table], marker=marker, color=colour_,
                mfc="white", ls="--", ms=9, label=f"{arm}: train ≥ {TRAIN_AT}")
        reached = [r["test_0.95_step_median"] for r in table]
        ax.plot(x, [np.nan if s is None else s for s in reached], marker=marker, color=colour_, ms=9,
                label=f"{arm}: test ≥ {TEST_AT}")
        for xi, s in zip(x, reached):
            if s is None:
                ax.annotate("", (xi, top * 1.9), (xi, budget * 1.05),
                            arrowprops={"arrowstyle": "-|>", "color": colour_, "lw": 1.8})
    ax.set_xticks(np.arange(len(rows["mlp"])), [f"{r['weight_decay']:g}" for r in rows["mlp"]])
    ax.set(yscale="log", ylim=(20, top * 2.2), xlabel="weight decay", ylabel="step (median over seeds)",
           title="(d) when training accuracy saturates, and when test accuracy follows\n"
                 "(arrows: the median seed's test accuracy never got there within the budget)")
    ax.legend(fontsize=10, loc="center left")
    fig.suptitle(f"Grokking on (a + b) mod {p}: full-batch AdamW (learning rate 3e-3, betas 0.9, 0.98), "
                 "half of the pairs train, the other half test", fontsize=15)
    for ax in axes.flat:
        ax.title.set_fontsize(12.5)
        ax.xaxis.label.set_fontsize(12)
        ax.yaxis.label.set_fontsize(12)
        ax.tick_params(labelsize=11)
    fig.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 600 steps; figure and JSON under --out")
    parser.add_argument("--out", default=f"runs/grokking-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--docs", default=None, help="where grokking.png and .json go (default docs/; "
                                                     "with --quick, --out)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    docs = Path(args.docs) if args.docs else (out if args.quick else ROOT / "docs")
    docs.mkdir(parents=True, exist_ok=True)

    configs, results, rows, walls = arm_configs(args.quick), {}, {}, {}
    tic_all = time.perf_counter()
    for arm, cfg in configs.items():
        tic = time.perf_counter()
        results[arm] = jaxdyn.run(cfg, out=out / arm, progress=False, summary=False)
        walls[arm] = time.perf_counter() - tic
        rows[arm] = summarize(results[arm], arm)
        print_rows(arm, rows[arm], cfg["train"]["steps"], walls[arm])
    total = time.perf_counter() - tic_all
    print(f"\ntotal wall time {total:.0f} s")

    figure = docs / "grokking.png"
    plot(results, rows, configs["transformer"]["data"]["p"], figure)
    record = {
        "study": "grokking", "quick": args.quick,
        "thresholds": {"train_accuracy": TRAIN_AT, "test_accuracy": TEST_AT, "onset_test_accuracy": ONSET_AT},
        "measured_with": "Results.time_to / first_crossing: first evaluated step at or above the threshold; "
                         "train accuracy is the mean over each log window of 10 steps, test accuracy is "
                         "evaluated every 50 steps; medians over the seeds that reached it",
        "configs": {arm: {k: cfg[k] for k in ("study", "data", "model", "optim", "train", "grid")}
                    for arm, cfg in configs.items()},
        "wall_s": {**{arm: round(w, 1) for arm, w in walls.items()}, "total": round(total, 1)},
        "environment": environment(),
        "rows": rows,
    }
    (docs / "grokking.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {figure} and {docs / 'grokking.json'}")
    return record


if __name__ == "__main__":
    main()
