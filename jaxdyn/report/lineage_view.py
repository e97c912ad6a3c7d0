"""The report's view of population-based training: who copied whom at each round,
each explored hyperparameter's path per member, and the schedule that produced the
best member (Jaderberg et al. 2017, Fig. 5 draws the same three things).

A round's row scores the member *before* it copies, so a copy at the round at step
``s`` begins the member's next stretch of training: its edge runs from the parent at
``s`` to the member at its next round (or its last step). Members that kept their
own weights continue on their own row.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxdyn.report.data import ReportData
from jaxdyn.report.views import Plot, View, log_axis, panel_grid, table_html
from jaxdyn.results import headline

MAX_ROWS = 64  # members the lineage figure draws one row each; past this it draws a subset


@dataclass
class Pbt:
    """What the view draws from: the run's rounds and how a better member is chosen.

    Attributes:
      lineage: ``lineage.parquet``'s rows, sorted by member and round.
      metric: the metric the rounds ranked by; ``mode``: ``max`` or ``min``.
      hparams: the explored hyperparameters' short names (``learning_rate``).
      best: the member with the best final value of ``final``; ``final``: its column in members.csv.
      last: member -> ``(its last step, its last logged metric value)``.
    """

    lineage: pd.DataFrame
    metric: str
    mode: str
    hparams: list
    best: int
    final: str
    last: pd.DataFrame


def lineage(d: ReportData) -> View | None:
    rows = d.results.lineage()
    if rows.empty:
        return None
    pbt = _pbt(d, rows)
    shown, note = _shown_members(d, pbt)
    schedule = d.results.schedule(pbt.best)
    copies = int(rows.copied.sum())
    cfg = d.config.pbt
    burn_in = f" after {cfg.ready_after} of burn-in" if cfg is not None and cfg.ready_after else ""
    how = (f"every {cfg.every} chunks{burn_in}, members are ranked by {pbt.metric} "
           f"({'higher' if pbt.mode == 'max' else 'lower'} is better); the worse ones copy a better member's "
           f"weights and hyperparameters ({cfg.exploit}) and then {cfg.explore} "
           f"{', '.join(pbt.hparams)}. ") if cfg is not None else ""
    intro = (f"Population-based training: {how}{rows['round'].nunique()} rounds, {copies} copies among "
             f"{len(d.members)} members. The best member by {pbt.final} is member {pbt.best}.")
    best_value = d.members.set_index("member")[pbt.final].get(pbt.best)
    return View("lineage", "Population-based training", intro, [
        Plot("lineage", _lineage_figure(pbt, shown, schedule),
             f"One row per member{note}; a dot at each round coloured by the {pbt.metric} it was ranked "
             f"by, and at the end by its last {pbt.metric}. A red line is a copy: from the parent at the round "
             f"to the member at its next round, whose training went on from the parent's weights. Grey lines: "
             f"members that kept their own weights. The black path is member {pbt.best}'s ancestry."),
        Plot("lineage_hparams", _hparam_figure(d, pbt, schedule),
             f"Each explored hyperparameter over training, one grey step line per member (the value it "
             f"trained with from each step on). Red: the best member, {pbt.best}; black dashes: the "
             f"schedule its final weights were trained with, through its ancestors."),
        f"<h3>The best member's schedule (member {pbt.best}, {pbt.final} {best_value:.4g})</h3>"
        f"<p>From each step on, whose line of training it was and the values it trained with "
        f"(<code>jaxdyn.load(run).schedule({pbt.best})</code>).</p>",
        table_html(schedule),
    ])


def _pbt(d: ReportData, rows: pd.DataFrame) -> Pbt:
    """The rounds, the ranking metric, and the best member: by the final value of the metric
    PBT ranked by, where members.csv has it, else by the report's headline metric."""
    cfg = d.config.pbt
    metric = str(rows.metric.iloc[0])
    mode = cfg.mode if cfg is not None else "max"
    final = f"final_{metric}"
    if final not in d.members or d.members[final].isna().all():
        final = f"final_{headline(d.members)}"
        mode = "min" if "loss" in final else "max"
    values = d.members.set_index("member")[final]
    best = int(values.idxmax() if mode == "max" else values.idxmin())
    logged = d.metrics[(d.metrics.metric == metric) & (d.metrics.layer.fillna("") == "")]
    last = logged.sort_values("step").groupby("member")[["step", "value"]].last()
    steps = d.metrics.groupby("member").step.max()
    last = last.reindex(steps.index).assign(step=lambda f: f.step.fillna(steps))
    hparams = [c[: -len("_after")] for c in rows.columns if c.endswith("_after")]
    return Pbt(rows.sort_values(["member", "round"], ignore_index=True), metric, mode, hparams, best,
               final, last)


def _shown_members(d: ReportData, pbt: Pbt) -> tuple[list, str]:
    """The members the lineage figure draws, in member order, and a note when not all of them: the
    best member's own PBT population (its cohort, and its group when ``[pbt] groups`` splits
    cohorts), then if that is still too many, its ancestors and the best others by ``pbt.final``."""
    members = d.members.sort_values("member")
    if len(members) <= MAX_ROWS:
        return list(members.member), ""
    cohort = members[members.cohort == members.set_index("member").cohort[pbt.best]].member.to_numpy()
    groups = d.config.pbt.groups if d.config.pbt is not None else 1
    pool = cohort[np.arange(len(cohort)) % groups == list(cohort).index(pbt.best) % groups]
    note = f" (the {len(pool)} of member {pbt.best}'s population, of {len(members)} members)"
    if len(pool) > MAX_ROWS:
        ancestors = list(dict.fromkeys(d.results.schedule(pbt.best).member))
        ranked = members[members.member.isin(pool)].sort_values(pbt.final, ascending=pbt.mode == "min")
        pool = list(dict.fromkeys([pbt.best, *ancestors, *ranked.member]))[:MAX_ROWS]
        note = (f" ({MAX_ROWS} of {len(members)}: member {pbt.best}, its ancestors and the best others by "
                f"{pbt.final}; copies from members not drawn are left out)")
    return sorted(int(m) for m in pool), note


def _lineage_figure(pbt: Pbt, shown: list, schedule: pd.DataFrame) -> Figure:
    row_of = {m: i for i, m in enumerate(shown)}
    rows = pbt.lineage[pbt.lineage.member.isin(row_of)]
    # The end of each stretch: the member's next round, or its last step.
    rows = rows.assign(until=rows.groupby("member").step.shift(-1).fillna(rows.member.map(pbt.last.step)))
    height = max(3.2, 0.16 * len(shown) + 1.6)
    fig = Figure(figsize=(11, height), layout="constrained")
    ax = fig.subplots()
    kept, copied = rows[~rows.copied], rows[rows.copied & rows.parent.isin(row_of)]
    first = rows.groupby("member").first()
    burn_in = [[(0, row_of[m]), (s, row_of[m])] for m, s in zip(first.index, first.step)]
    own = [[(s, row_of[m]), (u, row_of[m])] for m, s, u in zip(kept.member, kept.step, kept.until)]
    ax.add_collection(LineCollection(burn_in + own, colors="0.75", linewidths=1, zorder=1))
    edges = [[(s, row_of[p]), (u, row_of[m])] for m, p, s, u in
             zip(copied.member, copied.parent, copied.step, copied.until)]
    ax.add_collection(LineCollection(edges, colors="C3", linewidths=1.2 if len(shown) <= 16 else 0.9,
                                     alpha=0.8 if len(shown) <= 16 else 0.6, zorder=2))
    xs = [0, *schedule.step[1:], pbt.last.step[pbt.best]]
    ys = [row_of.get(m, np.nan) for m in [schedule.member[0], *schedule.member]]
    ax.plot(xs, ys, color="k", lw=2.2, zorder=3, label=f"member {pbt.best}'s ancestry")
    ends = pbt.last.loc[shown]
    scores = np.concatenate([rows.score.to_numpy(np.float64), ends.value.to_numpy(np.float64)])
    finite = scores[np.isfinite(scores)]
    norm = Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    cmap = colormaps["viridis" if pbt.mode == "max" else "viridis_r"].with_extremes(bad="0.6")
    size = 70 if len(shown) <= 16 else 30
    dots = ax.scatter(np.concatenate([rows.step, ends.step]),
                      np.concatenate([rows.member.map(row_of), [row_of[m] for m in ends.index]]),
                      c=scores, cmap=cmap, norm=norm, s=size, zorder=4, edgecolors="k", linewidths=0.4,
                      plotnonfinite=True)
    fig.colorbar(dots, ax=ax, label=f"{pbt.metric} ({'higher' if pbt.mode == 'max' else 'lower'} is better)",
                 shrink=min(0.9, 5 / height))
    ticks = sorted({0, *rows.step, *ends.step.dropna()})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize="small", rotation=90 if len(ticks) > 20 else 0)
    labelled = range(0, len(shown), max(1, -(-len(shown) // 32)))
    ax.set_yticks(list(labelled), [str(shown[i]) for i in labelled], fontsize="small")
    ax.set(xlabel="step (a dot at each PBT round and at the end)", ylabel="member",
           ylim=(len(shown) - 0.5, -0.5), xlim=(-0.02 * ticks[-1], ticks[-1] * 1.02),
           title=f"PBT lineage: who copied whom, coloured by {pbt.metric}")
    keys = [Line2D([], [], color="C3", lw=1.2), Line2D([], [], color="0.75"), ax.lines[0]]
    fig.legend(keys, ["a copy: parent at a round → member at its next", "kept its own weights",
                      ax.lines[0].get_label()], loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return fig


def _hparam_figure(d: ReportData, pbt: Pbt, schedule: pd.DataFrame) -> Figure:
    fig, axes = panel_grid(len(pbt.hparams), 2, 9 if len(pbt.hparams) == 1 else 6.2, 3.8,
                           legend_width=0)
    members = d.members.set_index("member")
    rounds = sorted(pbt.lineage.step.unique())
    for ax, name in zip(axes, pbt.hparams):
        every = []
        for member, rows in pbt.lineage.groupby("member", sort=True):
            start = members[name][member] if name in members else rows[f"{name}_before"].iloc[0]
            values = np.array([start, *rows[f"{name}_after"]], np.float64)
            steps = np.array([0, *rows.step, pbt.last.step[member]], np.float64)
            every.append(values)
            line = dict(color="C3", lw=2.4, zorder=3, label=f"member {member} (best by {pbt.final})") \
                if member == pbt.best else dict(color="0.55", lw=0.8, alpha=0.5, zorder=1)
            ax.step(steps, [*values, values[-1]], where="post", **line)
        path = schedule[name].to_numpy(np.float64)
        ax.step([*schedule.step, pbt.last.step[pbt.best]], [*path, path[-1]], where="post", color="k",
                lw=1.6, ls="--", zorder=4, label=f"member {pbt.best}'s schedule, through its ancestors")
        for step in rounds:
            ax.axvline(step, color="0.85", lw=0.8, zorder=0)
        if log_axis(np.concatenate(every), name):
            ax.set_yscale("log")
        ax.set(xlabel="step (grey verticals: PBT rounds)", ylabel=name, title=f"{name} per member over training")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small", loc="best")
    return fig


__all__ = ["lineage"]
