"""Population-based training on its paper's toy problem (Jaderberg et al. 2017, Fig. 2).

Run it from the repository root:

    python examples/pbt_toy.py [OUT] [--figure [PATH]]

Two members start at θ = (0.9, 0.9) and climb the surrogate Q̂(θ | h) = 1.2 − (h0 θ0² +
h1 θ1²) by gradient ascent, while what counts is Q(θ) = 1.2 − (θ0² + θ1²). Here h =
(mix, 1 − mix) with one member at mix = 1 (h = (1, 0)) and the other at mix = 0 (h =
(0, 1)), as in the paper. Alone, each shrinks one coordinate only and Q stops at
1.2 − 0.81 = 0.39. With PBT (a round after every chunk of 4 steps), the worse member
copies the better one's θ and mix and draws a new mix half the time, so both
coordinates shrink and Q climbs towards 1.2. It prints each study's best final Q.

``OUT`` is the folder for the two run directories (``OUT/alone``, ``OUT/pbt``; default:
a new one under ``runs/`` each). ``--figure`` also draws the paper's figure, to PATH
(default ``docs/pbt_toy.png``): each member's path in the θ plane over the contours of
Q, without and with PBT, and Q against step. The path is read from the metrics
``train_theta0`` and ``train_theta1`` the task's step reports (θ averaged over each log
window of 4 steps, so PBT's copies show as jumps between windows).

The task is ``examples/custom_task.py``'s, with the mix as its one surrogate number.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).parent))  # custom_task, and "pbt_toy:MIXED" for the config

import jaxdyn  # noqa: E402
from custom_task import Quadratic, surrogate, true_objective  # noqa: E402
from jaxdyn.tasks import MemberState, Seeds, TaskKind, fresh_state  # noqa: E402

START = (0.9, 0.9)
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "pbt_toy.png"


@dataclass(frozen=True)
class Mixed(Quadratic):
    """ONE member of the toy: θ in ``params``, h = (mix, 1 − mix) from its ``mix``."""

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        return fresh_state(jnp.asarray(START, jnp.float32), (), hparams, seeds)

    def step(self, state: MemberState, data) -> tuple[MemberState, dict]:
        hp = state.hparams
        h = jnp.stack([hp["mix"], 1 - hp["mix"]])
        theta = state.params + hp["learning_rate"] * jax.grad(surrogate)(state.params, h)
        q = true_objective(theta)
        # θ itself too, logged as train_theta0 / train_theta1: the path the figure draws.
        metrics = {"loss": 1.2 - q, "Q": q, "theta0": theta[0], "theta1": theta[1]}
        return state._replace(params=theta, step=state.step + 1), metrics


MIXED = TaskKind(
    build=lambda config, members: Mixed(),
    doc="PBT's toy (Jaderberg et al. 2017, Fig. 2): climb 1.2 - (mix θ0² + (1 - mix) θ1²)",
    hparams={"task.mix": jaxdyn.HParam(1.0, 0.0, 1.0, high_open=False, doc="h = (mix, 1 - mix)"),
             "task.learning_rate": jaxdyn.HParam(0.02, low_open=True, doc="step size of the gradient ascent")},
    finals=("Q",), curves=("train_Q", "test_Q"))

STUDY = {
    "study": {"name": "pbt_toy", "seeds": 1},
    "task": {"kind": "pbt_toy:MIXED"},
    "data": {"name": "ring"},  # not read by the task; every study has a dataset
    "train": {"steps": 400, "batch_size": 1, "chunk_steps": 4, "log_every": 4, "eval_every": 1,
              "checkpoint_every": 25},
    "probes": {"norms": {"every": 0}, "activations": {"every": 0}},  # no network to probe
    "grid": {"task.mix": [1.0, 0.0]},
}
PBT = {"every": 1, "metric": "test_Q", "mode": "max", "exploit": "truncation", "fraction": 0.5,
       "explore": "resample", "resample_probability": 0.5, "hparams": ["task.mix"]}


def main(out=None, figure=None) -> dict:
    """Run the toy without and with PBT; return each one's best final Q. ``figure``: where
    to draw the paper's figure (``None``: nowhere)."""
    best, results = {}, {}
    for name, study in (("alone", STUDY), ("pbt", {**STUDY, "pbt": PBT})):
        res = jaxdyn.run(study, out=None if out is None else Path(out) / name, progress=False, summary=False)
        best[name] = float(res.members.final_Q.max())
        results[name] = res
        print(f"{name}: best final Q = {best[name]:.3f}")
    if figure is not None:
        draw(results, Path(figure))
        print(f"figure: {figure}")
    return best


def paths(res) -> dict[int, pd.DataFrame]:
    """Each member's ``step, theta0, theta1, Q`` from the start (step 0) on: θ averaged over
    each log window, Q at each evaluation (the end of every chunk, what PBT compares)."""
    def column(metric, name):
        return res.frame(metric, by=[])[["member", "step", "value"]].rename(columns={"value": name})

    rows = column("train_theta0", "theta0").merge(column("train_theta1", "theta1"), on=["member", "step"])
    rows = rows.merge(column("test_Q", "Q"), on=["member", "step"], how="outer")
    start = {"step": 0, "theta0": START[0], "theta1": START[1], "Q": 1.2 - sum(t * t for t in START)}
    return {int(m): pd.concat([pd.DataFrame([start]), g.drop(columns="member")], ignore_index=True)
            for m, g in rows.groupby("member")}


# Each arm's best member (by final Q; the first on a tie) dark, the other light; in (c), where
# the two nearly coincide, the other is dashed over the best.
STYLE = {("alone", True): dict(color="#c0392b", ls="-", lw=3.0),
         ("alone", False): dict(color="#f1948a", ls="--", lw=2.0),
         ("pbt", True): dict(color="#1f4e9c", ls="-", lw=3.0),
         ("pbt", False): dict(color="#6fa8dc", ls="--", lw=2.0)}
ARM = {"alone": "alone", "pbt": "PBT"}


def best_member(res) -> int:
    return int(res.members.member[res.members.final_Q.idxmax()])


def label(name, res, member) -> str:
    row = res.members.set_index("member").loc[member]
    mix = f", mix = {row.mix:g}" if name == "alone" else ""  # PBT's members change theirs
    rank = "best" if member == best_member(res) else "other"
    return f"{ARM[name]}: member {member}{mix} ({rank}, final Q = {row.final_Q:.2f})"


def theta_plane(ax, name, res, title) -> None:
    """Contours of Q and each member's path of θ; a PBT copy is a dotted black jump."""
    grid = np.linspace(-0.12, 1.02, 200)
    t0, t1 = np.meshgrid(grid, grid)
    q = 1.2 - t0 ** 2 - t1 ** 2
    ax.contourf(t0, t1, q, levels=40, cmap="Greys_r", alpha=0.35)
    lines = ax.contour(t0, t1, q, levels=[0.0, 0.39, 0.7, 0.95, 1.1], colors="0.45", linewidths=0.8)
    angles = [np.radians(45 if name == "alone" else 40 if v == 0 else 22) for v in lines.levels]  # off the paths
    spots = [(np.sqrt(1.2 - v) * np.cos(a), np.sqrt(1.2 - v) * np.sin(a)) for v, a in zip(lines.levels, angles)]
    ax.clabel(lines, fmt=lambda v: f"Q = {v:g}", fontsize=10, manual=spots)
    lineage = res.lineage()
    copies = set() if lineage.empty else set(zip(lineage.member[lineage.copied], lineage.step[lineage.copied]))
    best = best_member(res)
    for member, p in sorted(paths(res).items(), key=lambda kv: kv[0] != best):
        xs, ys = p.theta0.to_numpy(), p.theta1.to_numpy()
        gx, gy = [], []  # the path, broken after each window that ended in a copy
        for i, step in enumerate(p.step):
            jump = (member, step) in copies
            gx += [xs[i], np.nan] if jump else [xs[i]]
            gy += [ys[i], np.nan] if jump else [ys[i]]
            if jump and i + 1 < len(xs):
                head = np.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) > 0.04  # long enough for an arrowhead
                ax.annotate("", xy=(xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]), zorder=4,
                            arrowprops=dict(arrowstyle="-|>" if head else "-", color="k", lw=1.0, ls=":",
                                            mutation_scale=11, shrinkA=0, shrinkB=0))
        ax.plot(gx, gy, marker="o", ms=3.5, zorder=3, label=label(name, res, member),
                **{**STYLE[name, member == best], "ls": "-", "lw": 2.0})
    if copies:
        ax.plot([], [], color="k", lw=1.0, ls=":", label="copy of the better member's θ and mix "
                                                          f"(in {len(copies)} of {lineage['round'].nunique()} rounds)")
    ax.plot(*START, "ko", ms=9, zorder=4, label=f"start θ = {START}")
    ax.plot(0, 0, "*", color="gold", mec="k", ms=18, zorder=4, label="optimum θ = 0 (Q = 1.2)")
    ax.set(xlim=(grid[0], grid[-1]), ylim=(grid[0], grid[-1]), aspect="equal", xlabel="θ0", ylabel="θ1",
           title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)


def q_curves(ax, results: dict) -> None:
    """Q of every member of both arms against step, with the levels alone and PBT reach."""
    for name, res in results.items():
        best = best_member(res)
        for member, p in sorted(paths(res).items(), key=lambda kv: kv[0] != best):
            q = p.dropna(subset=["Q"])
            ax.plot(q.step, q.Q, label=label(name, res, member), **STYLE[name, member == best])
    steps = STUDY["train"]["steps"]
    for level, text in ((1.2, "1.2: the maximum, θ = 0"), (0.39, "0.39 = 1.2 − 0.9²: one coordinate left")):
        ax.axhline(level, color="k", ls=(0, (4, 3)), lw=1.2, zorder=1)
        ax.text(steps - 5, level - 0.04, text, ha="right", va="top", fontsize=11)
    ax.set(xlim=(0, steps), ylim=(-0.5, 1.3), xlabel="step", ylabel="Q(θ) = 1.2 − (θ0² + θ1²)",
           title="(c) Q of each member, after every chunk of 4 steps")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)


def draw(results: dict, path: Path) -> None:
    """The paper's Fig. 2 from the two runs: θ's path without and with PBT, and Q against step."""
    with rc_context({"font.size": 12, "axes.titlesize": 13, "legend.fontsize": 10.5}):
        fig = Figure(figsize=(17, 6), layout="constrained")
        alone_ax, pbt_ax, q_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.15])
        theta_plane(alone_ax, "alone", results["alone"], "(a) alone: each member shrinks one coordinate")
        theta_plane(pbt_ax, "pbt", results["pbt"], "(b) PBT: the worse member copies θ (jumps)")
        q_curves(q_ax, results)
        fig.suptitle("PBT's toy problem (Jaderberg et al. 2017, Fig. 2): two members climb "
                     "Q̂ = 1.2 − (mix θ0² + (1 − mix) θ1²), one at mix = 1 and one at mix = 0", fontsize=14)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=None,
                        help="folder for the run directories OUT/alone and OUT/pbt (default: new ones under runs/)")
    parser.add_argument("--figure", nargs="?", const=FIGURE, default=None, metavar="PATH",
                        help="also draw the figure, to PATH (default docs/pbt_toy.png)")
    args = parser.parse_args()
    main(args.out, figure=args.figure)
