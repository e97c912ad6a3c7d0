"""PBT on MNIST-1D: population-based training against the same members without exploit, and against
the default study's best fixed learning rate, at the same steps per member, over 4 PBT populations.

Every arm is the default study's model, optimizer and budget (``jaxdyn/studies/default.toml``:
MLP 40-100-100-10 with ReLU, Adam, batch 100, 6,000 steps) and differs only in what the issue asks:

1. **PBT**: 16 learning rates log-spaced over 1e-5 … 1 (a member grid axis) × 4 seeds = 64 members
   in one compiled population, ``[pbt] groups = 4``. Member i is in group i mod 4, and the grid
   puts the seeds innermost (member = 4 × lr index + seed index), so each group is one seed with
   all 16 learning rates: 4 independent PBT populations of 16, whose members share their initial
   weights and batches and differ only in learning rate. Test accuracy is evaluated after
   every 500-step chunk; from step 1,000 on, after each chunk, the bottom quarter of each
   population copies the top quarter's state (truncation) and multiplies the copied learning rate
   by 0.8 or 1.25 (perturb), within [1e-5, 1].
2. **No exploit**: the same study without ``[pbt]``: every member keeps its initial learning rate.
3. **Best fixed learning rate**: the default study itself (4 learning rates × 8 seeds, the same
   steps); lr* is its learning rate with the best mean final test accuracy. Per population we
   report the member with lr* and that population's seed, and, at equal compute to a population
   (16 members × the same steps), the best of 16 fresh seeds at lr* (seeds 100 + 16p … 100 + 16p + 15).

Each PBT and no-exploit population costs 16 members × the steps; "best" is the member with the
highest final test accuracy in its population. PBT ranks its members on ``test_accuracy`` as the
issue's comparison does (MNIST-1D has no validation split here); every arm picks its best member
on the same test set, so the numbers are optimistic alike, but PBT also selects during training.
A train metric would not do instead: the MLP memorises the 4,000 training examples (at 6,000 steps
train accuracy is 1.000 for every learning rate from 1e-3 to 4.6e-3, whose test accuracies are
0.61-0.64; the lowest train loss is at 4.6e-3, the best test accuracy at 1e-2), so a train metric
ranks memorisation, not generalisation.

It prints per population the best final test accuracy of each arm, their mean ± std over the
populations and the learning-rate schedule of each population's PBT winner, and writes
``docs/pbt_mnist1d.png`` (left: test accuracy over steps, the PBT winner along its ancestry vs the
no-exploit winner vs lr*; right: the learning rate of each member of population 0, log scale)
and the numbers as ``docs/pbt_mnist1d.json``. About 4 minutes on a 2-core CPU (``--quick``: 2,000
steps, under 2 minutes, its figure and JSON under ``--out``).

    python scripts/pbt_mnist1d.py [--steps 6000] [--out runs/pbt-mnist1d] [--quick]
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402
from benchmarks.timing import environment  # noqa: E402

DEFAULT_STUDY = ROOT / "jaxdyn" / "studies" / "default.toml"
LEARNING_RATES = [float(f"{lr:.3g}") for lr in np.logspace(-5, 0, 16)]  # 1e-05, 2.15e-05, ..., 0.464, 1
POPULATIONS = 4  # PBT groups = seeds
CHUNK = 500
LR = "optim.learning_rate"


def default_config(steps: int) -> dict:
    """The default study as a dict, at ``steps`` steps, test accuracy after every chunk."""
    raw = tomllib.loads(DEFAULT_STUDY.read_text())
    raw["train"] |= {"steps": steps, "chunk_steps": CHUNK, "eval_every": 1}
    return raw


def population_config(steps: int, pbt: bool) -> dict:
    """Arms 1 and 2: 16 learning rates x 4 seeds, with or without ``[pbt]``."""
    raw = default_config(steps)
    raw["study"] = {"name": "pbt_mnist1d" if pbt else "no_exploit", "seeds": POPULATIONS}
    raw["grid"] = {LR: LEARNING_RATES}
    if pbt:
        raw["pbt"] = {"every": 1, "ready_after": 1, "metric": "test_accuracy", "mode": "max",
                      "exploit": "truncation", "fraction": 0.25, "explore": "perturb", "factors": [0.8, 1.25],
                      "hparams": [LR], "bounds": {LR: [LEARNING_RATES[0], LEARNING_RATES[-1]]},
                      "groups": POPULATIONS, "seed": 0}
    return raw


def fixed_config(steps: int, lr: float) -> dict:
    """Arm 3 at equal compute: lr* alone, 16 fresh seeds per population."""
    raw = default_config(steps)
    raw["study"] = {"name": "fixed_lr", "seeds": list(range(100, 100 + 16 * POPULATIONS))}
    raw["grid"] = {LR: [lr]}
    return raw


def population_of(members: pd.DataFrame) -> pd.Series:
    """The PBT group (= seed) of each member of arms 1 and 2: member index mod 4, as ``pbt.rounds`` has it."""
    group = members.member % POPULATIONS
    assert (group == members.init_seed).all(), "each PBT population should be one seed"
    assert (members.groupby(group).learning_rate.nunique() == len(LEARNING_RATES)).all()
    return group


def best_per_population(members: pd.DataFrame, population: pd.Series) -> pd.DataFrame:
    """Each population's member with the highest final test accuracy (diverged members' NaN left out)."""
    m = members.assign(population=population.to_numpy())
    idx = m.groupby("population").final_test_accuracy.idxmax()
    return m.loc[idx].set_index("population")


def ancestry_curve(res, member: int, acc: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy along the line of training that produced ``member``'s final state: each
    evaluation at step e read from the member whose state it was (the schedule's row before e;
    a round at step s comes after that step's evaluation)."""
    sched = res.schedule(member)
    rows = []
    for step in sorted(acc.step.unique()):
        owner = int(sched[sched.step < step].member.iloc[-1])
        value = acc[(acc.member == owner) & (acc.step == step)].value
        rows.append({"step": int(step), "member": owner, "value": float(value.iloc[0])})
    return pd.DataFrame(rows)


def lr_paths(res, members: list[int], steps: int) -> dict:
    """Each member slot's learning rate over steps from the lineage: ``member -> (steps, lrs)``."""
    lineage = res.lineage()
    first = res.members.set_index("member").learning_rate
    out = {}
    for m in members:
        rows = lineage[lineage.member == m].sort_values("round")
        xs = [0, *rows.step.tolist(), steps]
        ys = [float(first[m]), *rows["learning_rate_after"].tolist()]
        out[m] = (np.array(xs), np.array([*ys, ys[-1]]))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="train.steps of every arm (a multiple of 500, "
                                                                "at least 1500; default 6000, 2000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2,000 steps, figure and JSON under --out, not docs/")
    parser.add_argument("--out", default=f"runs/pbt-mnist1d-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--docs", default=None, help="where pbt_mnist1d.png and .json go (default docs/; "
                                                     "with --quick, --out)")
    args = parser.parse_args(argv)
    steps = args.steps or (2000 if args.quick else 6000)
    if steps % CHUNK or steps < 3 * CHUNK:
        parser.error(f"--steps {steps}: a multiple of {CHUNK}, at least {3 * CHUNK} (a PBT round needs a chunk after it)")
    out = Path(args.out)
    docs = Path(args.docs) if args.docs else (out if args.quick else ROOT / "docs")
    docs.mkdir(parents=True, exist_ok=True)

    walls = {}

    def run(name, config):
        tic = time.perf_counter()
        res = jaxdyn.run(config, out=out / name, progress=False, summary=False)
        walls[name] = time.perf_counter() - tic
        print(f"{name}: {len(res.members)} members x {steps} steps, {walls[name]:.0f} s", flush=True)
        return res

    start = time.perf_counter()
    default = run("default", default_config(steps))
    pbt = run("pbt", population_config(steps, pbt=True))
    plain = run("no_exploit", population_config(steps, pbt=False))

    # Arm 3: the default study's best learning rate by mean final test accuracy over its seeds.
    by_lr = default.members.groupby("learning_rate").final_test_accuracy.agg(["mean", "std", "size"])
    lr_star = float(by_lr["mean"].idxmax())
    fixed = run("fixed_lr", fixed_config(steps, lr_star))
    total = time.perf_counter() - start

    pbt_best = best_per_population(pbt.members, population_of(pbt.members))
    plain_best = best_per_population(plain.members, population_of(plain.members))
    fixed_best = best_per_population(fixed.members, (fixed.members.member // 16))
    star = default.members[default.members.learning_rate == lr_star].set_index("init_seed")
    # The no-exploit arm's own best fixed learning rate in hindsight (mean over the 4 seeds).
    plain_lr = plain.members.groupby("learning_rate").final_test_accuracy.mean()
    plain_lr_star = float(plain_lr.idxmax())
    plain_star = plain.members[plain.members.learning_rate == plain_lr_star].set_index("init_seed")

    pbt_acc = pbt.frame("test_accuracy", by=["learning_rate"])
    rows, schedules, curves = [], {}, {}
    for p in range(POPULATIONS):
        winner = int(pbt_best.loc[p].member)
        sched = pbt.schedule(winner)
        schedules[p] = sched
        curves[p] = ancestry_curve(pbt, winner, pbt_acc)
        rows.append({
            "population": p, "seed": p,
            "pbt_best": float(pbt_best.loc[p].final_test_accuracy), "pbt_best_member": winner,
            "pbt_best_slot_initial_lr": float(pbt_best.loc[p].learning_rate),
            "pbt_best_initial_lr": float(sched.learning_rate.iloc[0]),
            "pbt_best_line_started_as": int(sched.member.iloc[0]),
            "pbt_best_final_lr": float(sched.learning_rate.iloc[-1]),
            "no_exploit_best": float(plain_best.loc[p].final_test_accuracy),
            "no_exploit_best_lr": float(plain_best.loc[p].learning_rate),
            "fixed_lr_star_seed": float(star.loc[p].final_test_accuracy),
            "fixed_lr_star_best_of_16": float(fixed_best.loc[p].final_test_accuracy),
            "fixed_lr_star_mean_of_16": float(fixed.members[fixed.members.member // 16 == p].final_test_accuracy.mean()),
            "no_exploit_lr_star": float(plain_star.loc[p].final_test_accuracy),
            "pbt_diverged": int((pbt.members[pbt.members.member % POPULATIONS == p].diverged_at >= 0).sum()),
            "no_exploit_diverged": int((plain.members[plain.members.member % POPULATIONS == p]
                                        .diverged_at >= 0).sum()),
        })
    table = pd.DataFrame(rows)
    columns = {"pbt_best": "PBT best", "no_exploit_best": "no-exploit best",
               "fixed_lr_star_seed": f"lr*={lr_star:g} (seed p)",
               "fixed_lr_star_best_of_16": f"lr*={lr_star:g} best of 16",
               "fixed_lr_star_mean_of_16": f"lr*={lr_star:g} mean of 16"}
    if plain_lr_star != lr_star:  # else the same members as 'seed p' (the same-member check below)
        columns["no_exploit_lr_star"] = f"lr={plain_lr_star:g} (no-exploit's lr*)"
    summary = {k: {"mean": float(table[k].mean()), "std": float(table[k].std(ddof=1))} for k in columns}
    gains = (table.pbt_best - table.no_exploit_best)
    # A member's training depends only on its own seeds and hyperparameters: the default study's
    # members at the learning rates both grids hold must end where the no-exploit arm's do.
    common = set(by_lr.index) & set(LEARNING_RATES)
    key = ["learning_rate", "init_seed"]
    pair = default.members[default.members.learning_rate.isin(common)].merge(
        plain.members, on=key, suffixes=("_default", "_plain"))
    same_member_gap = float((pair.final_test_accuracy_default - pair.final_test_accuracy_plain).abs().max())

    print(f"\nPBT on MNIST-1D: MLP 40-100-100-10, Adam, {steps} steps per member, batch 100; "
          f"{len(LEARNING_RATES)} learning rates in [1e-5, 1] per population, {POPULATIONS} populations; "
          f"total wall time {total:.0f} s")
    print("default study (4 lr x 8 seeds): final test accuracy per lr "
          + ", ".join(f"{lr:g}: {r['mean']:.3f} ± {r['std']:.3f}" for lr, r in by_lr.iterrows())
          + f" -> lr* = {lr_star:g}")
    print("final test accuracy per population (best member of 16, except 'seed p'):")
    print(f"{'pop':>4}" + "".join(f" {v:>22}" for v in columns.values()) + "   PBT winner's lr: start -> end")
    for r in rows:
        print(f"{r['population']:>4}" + "".join(f" {r[k]:>22.3f}" for k in columns)
              + f"   {r['pbt_best_initial_lr']:.3g} -> {r['pbt_best_final_lr']:.3g}")
    print(f"{'mean':>4}" + "".join(f" {summary[k]['mean']:>14.3f} ± {summary[k]['std']:.3f}" for k in columns))
    print(f"same member in two studies (default vs no-exploit, lr in {sorted(common)} x 4 seeds): "
          f"largest final test accuracy difference {same_member_gap:.2g}")
    print(f"PBT best - no-exploit best: {gains.mean():+.3f} ± {gains.std(ddof=1):.3f} "
          f"(PBT ahead in {int((gains > 0).sum())} of {POPULATIONS} populations)")
    for p, sched in schedules.items():
        changes = sched[(sched.member != sched.member.shift()) | (sched.learning_rate != sched.learning_rate.shift())]
        path = " -> ".join(f"{lr:.3g} from step {s} (member {m})"
                           for s, m, lr in zip(changes.step, changes.member, changes.learning_rate))
        print(f"population {p}: PBT winner member {rows[p]['pbt_best_member']}'s schedule (its changes): {path}")

    figure = docs / "pbt_mnist1d.png"
    plot(curves, plain, plain_best, fixed, fixed_best, lr_star, pbt, schedules, steps, summary, figure)
    report = {
        "command": "python scripts/pbt_mnist1d.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])),
        "environment": environment(), "wall_s": walls | {"total": total}, "steps": steps,
        "setup": {"model": "MLP 40-100-100-10 ReLU (default study)", "optimizer": "adam", "batch_size": 100,
                  "learning_rates": LEARNING_RATES, "populations": POPULATIONS, "members_per_population": 16,
                  "pbt": population_config(steps, True)["pbt"], "fixed_lr_seeds": "100 + 16p ... 100 + 16p + 15"},
        "default_study": {"lr_star": lr_star, "by_lr": {f"{lr:g}": {"mean": r["mean"], "std": r["std"],
                                                                     "seeds": int(r["size"])}
                                                        for lr, r in by_lr.iterrows()}},
        "no_exploit_lr_star": plain_lr_star,
        "same_member_check": {"learning_rates": sorted(common), "members": len(pair),
                              "max_abs_final_test_accuracy_difference": same_member_gap},
        "populations": rows, "summary": summary,
        "pbt_minus_no_exploit": {"mean": float(gains.mean()), "std": float(gains.std(ddof=1))},
        "pbt_winner_schedules": {str(p): json.loads(s.to_json(orient="records")) for p, s in schedules.items()},
    }
    (docs / "pbt_mnist1d.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {figure} and {docs / 'pbt_mnist1d.json'}")
    return report


def plot(curves, plain, plain_best, fixed, fixed_best, lr_star, pbt, schedules, steps, summary, path: Path) -> None:
    fig = Figure(figsize=(13, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    plain_acc = plain.frame("test_accuracy", by=["learning_rate"])
    fixed_acc = fixed.frame("test_accuracy", by=["learning_rate"])
    arms = [("PBT best (along its ancestry)", "C0", "-", "pbt_best"),
            ("no exploit: best of 16 lrs", "C1", "--", "no_exploit_best"),
            (f"fixed lr* = {lr_star:g}: best of 16 seeds", "C2", ":", "fixed_lr_star_best_of_16")]
    for p in curves:
        lines = [curves[p],
                 plain_acc[plain_acc.member == int(plain_best.loc[p].member)],
                 fixed_acc[fixed_acc.member == int(fixed_best.loc[p].member)]]
        for (label, color, style, key), line in zip(arms, lines):
            s = summary[key]
            left.plot(line.step, line.value, color=color, linestyle=style, lw=1.6, alpha=0.85,
                      label=f"{label}: {s['mean']:.3f} ± {s['std']:.3f}" if p == 0 else None)
    left.set_xlabel("step", fontsize=12)
    left.set_ylabel("test accuracy", fontsize=12)
    left.set_title(f"MNIST-1D MLP: best member of each of {len(curves)} populations", fontsize=13)
    left.grid(alpha=0.3)
    left.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1,
                title="final test accuracy, mean ± std over populations", title_fontsize=10)
    left.tick_params(labelsize=11)

    population = 0
    members = sorted(pbt.members[pbt.members.member % POPULATIONS == population].member)
    paths = lr_paths(pbt, members, steps)
    first = pbt.members.set_index("member").learning_rate
    cmap = colormaps["viridis"]
    for m in members:
        xs, ys = paths[m]
        shade = (np.log10(first[m]) + 5) / 5
        right.step(xs, ys, where="post", color=cmap(shade), lw=1.2, alpha=0.8)
    sched = schedules[population]
    xs = [*sched.step, steps]
    ys = [*sched.learning_rate, sched.learning_rate.iloc[-1]]
    right.step(xs, ys, where="post", color="black", lw=2.5, label="the winner's schedule (results.schedule)")
    right.set_yscale("log")
    right.set_xlabel("step", fontsize=12)
    right.set_ylabel("learning rate (Adam)", fontsize=12)
    right.set_title(f"PBT population {population}: each member's learning rate\n"
                    "(colour: initial value; a jump: copy + perturb)", fontsize=13)
    right.grid(alpha=0.3, which="major")
    right.legend(fontsize=10, loc="lower right")
    right.tick_params(labelsize=11)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
