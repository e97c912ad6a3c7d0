"""``Results``: a run folder's tables (or several runs' tables, side by side) with what a user
does with them: the summary over seeds, one metric's rows, the seeds as ensembles and as soups,
and a metric's plot.

It sits above the modules it joins (``results`` reads the tables, ``comparison`` joins several
runs', ``ensemble`` evaluates the checkpoints, ``explore`` draws) and below the report, which
reads a run through it.

Several runs (``load([a, b])``, ``compare(a, b)``) make one ``Results`` whose ``members`` and
``metrics`` start with a ``run`` column. A member is ``(run, member)`` there: member ids repeat
across runs, so the methods ``RunTables`` keys on ``member`` run on a copy whose ids are made
unique, and the rows they return carry the run's own ids again.
"""

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jaxdyn import comparison, results
from jaxdyn.ensemble import ensemble
from jaxdyn.errors import ConfigError, brief
from jaxdyn.explore import plot_metric
from jaxdyn.soup import soup


@dataclass(repr=False)
class Results(results.RunTables):
    """What a study produced: the run folder's tables as pandas frames (``run_dir``,
    ``members``, ``metrics``; see ``results.RunTables``), their summary, the ensembles
    and the plots.

    Attributes:
      runs: ``{label: run folder}`` of a comparison of several runs (its tables carry a ``run``
        column and ``run_dir`` is None); empty for one run.
    """

    runs: dict = field(default_factory=dict)

    def _runs(self) -> dict:
        return self.runs or {self.run_dir.name: self.run_dir}

    def _flat(self) -> results.RunTables:
        """The tables with member (and federation) ids unique across runs, ``RunTables``' own
        methods working on them as on one run; messages name the runs."""
        offsets = self.members.groupby("run", sort=False).member.max().add(1).cumsum().shift(fill_value=0)
        members = self.members.assign(member=self.members.member + self.members.run.map(offsets).to_numpy())
        if "federation" in members:
            feds = self.members.groupby("run", sort=False).federation.max().add(1).cumsum().shift(fill_value=0)
            members = members.assign(federation=members.federation + members.run.map(feds).to_numpy())
        metrics = self.metrics.assign(member=self.metrics.member + self.metrics.run.map(offsets).to_numpy())
        return results.RunTables(comparison.describe(self.runs), members, metrics)

    def _own_ids(self, rows: pd.DataFrame, flat: results.RunTables) -> pd.DataFrame:
        """``rows`` of ``flat``'s unique member ids with each run's own ``run`` and ``member`` again."""
        ids = pd.DataFrame({"run": self.members.run.to_numpy(), "member": self.members.member.to_numpy()},
                           index=flat.members.member.to_numpy())
        back = ids.loc[rows.member.to_numpy()]
        rows = rows.assign(run=back.run.to_numpy(), member=back.member.to_numpy())
        return rows[["run", *(c for c in rows.columns if c != "run")]]

    def summary(self, aggregate: str = "mean_std", by=None, metric: str = "") -> pd.DataFrame:
        """The final value of ``metric`` over seeds per setting (``results.RunTables.summary``); for
        several runs the default ``by`` is the run, the cohort, and every setting that varies, within
        a run or between runs (the config diff), and the default ``metric`` the runs' shared
        ``study.headline`` (else the task's own)."""
        if not self.runs:
            return super().summary(aggregate, by, metric)
        keys = self._groups() if by is None else by
        return self._in_run_order(self._flat().summary(aggregate, keys, metric or self.chosen_headline()))

    def chosen_headline(self) -> str:
        """The run's ``study.headline``; for several runs the one they share ("" when they differ)."""
        if not self.runs:
            return super().chosen_headline()
        chosen = {self._one(label).chosen_headline() for label in self.runs}
        return chosen.pop() if len(chosen) == 1 else ""

    def frame(self, metric: str, by=None, layer: str = "") -> pd.DataFrame:
        """Tidy rows of one metric (``results.RunTables.frame``); for several runs with ``run`` first."""
        if not self.runs:
            return super().frame(metric, by, layer)
        keys = results.varying_settings(self.members) if by is None else list(by)
        flat = self._flat()
        return self._own_ids(flat.frame(metric, [k for k in keys if k != "run"], layer), flat)

    def first_crossing(self, metric: str, threshold=None, *, below=None, layer: str = "") -> pd.DataFrame:
        """When each member first reached a value of ``metric`` (``results.RunTables.first_crossing``);
        for several runs one row per ``(run, member)``."""
        if not self.runs:
            return super().first_crossing(metric, threshold, below=below, layer=layer)
        flat = self._flat()
        return self._own_ids(flat.first_crossing(metric, threshold, below=below, layer=layer), flat)

    def time_to(self, metric: str, threshold=None, *, below=None, layer: str = "", by=None,
                aggregate: str = "median") -> pd.DataFrame:
        """How long each setting took to reach a value of ``metric`` (``results.RunTables.time_to``);
        for several runs grouped by run too."""
        if not self.runs:
            return super().time_to(metric, threshold, below=below, layer=layer, by=by, aggregate=aggregate)
        return self._in_run_order(self._flat().time_to(metric, threshold, below=below, layer=layer,
                                                       by=self._groups() if by is None else by, aggregate=aggregate))

    def _in_run_order(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows grouped by ``run`` in the order the runs were given (groupby sorts them by name)."""
        if "run" not in table:
            return table
        order = {label: i for i, label in enumerate(self.runs)}
        return table.sort_values("run", key=lambda runs: runs.map(order), kind="stable", ignore_index=True)

    def _groups(self) -> list[str]:
        """Several runs' default grouping: the run, the cohort (unless a run splits its cohorts into
        parts: ``results.setting_keys``), then every varying setting."""
        return ["run", *(k for k in results.setting_keys(self.members) if k != "run")]

    def lineage(self) -> pd.DataFrame:
        """A PBT study's rounds (``results.RunTables.lineage``); for several runs with ``run`` first."""
        return self._each(lambda t: results.RunTables.lineage(t))

    def partition(self) -> pd.DataFrame:
        """A federated study's partitions (``results.RunTables.partition``); for several runs with ``run`` first."""
        return self._each(lambda t: results.RunTables.partition(t))

    def schedule(self, member: int, run: str | None = None) -> pd.DataFrame:
        """The hyperparameters that produced ``member``'s final state (``results.RunTables.schedule``);
        several runs need the member's ``run``."""
        if not self.runs:
            return super().schedule(member)
        if run not in self.runs:
            raise KeyError(f"run = {run!r}: give the member's run, one of {', '.join(self.runs)}")
        return results.RunTables.schedule(self._one(run), member)

    def _one(self, label: str) -> results.RunTables:
        """One run's rows of a comparison, with its own folder."""
        keep = lambda table: table[table.run == label].drop(columns="run")
        return results.RunTables(self.runs[label], keep(self.members), keep(self.metrics))

    def _each(self, table_of) -> pd.DataFrame:
        if not self.runs:
            return table_of(self)
        frames = [table_of(self._one(label)) for label in self.runs]
        frames = [f.assign(run=label)[["run", *f.columns]] for label, f in zip(self.runs, frames) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def ensemble(self, by=None) -> pd.DataFrame:
        """Each setting's seeds as one ensemble (averaged predictions) beside the mean of its
        members' own test scores: ``jaxdyn.ensemble.ensemble``. Several runs are read each from its
        own folder's checkpoints, a row per setting of each run."""
        if not self.runs:
            return ensemble(self.run_dir, by)
        return self._per_run(lambda path, keys: ensemble(path, keys), by)

    def soup(self, by=None, held_out=None) -> pd.DataFrame:
        """Each setting's seeds averaged in weight space (the uniform soup, BatchNorm statistics
        recomputed; with ``held_out = (x, y)`` also the greedy soup), beside the members' mean and
        their ensemble: ``jaxdyn.soup.soup``. Several runs: per run, as ``ensemble``."""
        if not self.runs:
            return soup(self.run_dir, by, held_out)
        return self._per_run(lambda path, keys: soup(path, keys, held_out), by)

    def _per_run(self, table_of, by) -> pd.DataFrame:
        """``table_of(run folder, keys)`` for each run, grouped by the keys that vary within it; the
        keys constant in a run (the config diff) are added as columns, and ``run`` first."""
        keys = [k for k in (results.varying_settings(self.members) if by is None else by) if k != "run"]
        missing = [k for k in keys if k not in self.members.columns]
        if missing:
            raise KeyError(f"by = {missing}: not columns of the member table ({', '.join(self.members.columns)})")
        frames = []
        for label, path in self.runs.items():
            rows = self.members[self.members.run == label]
            own = [k for k in keys if rows[k].nunique(dropna=False) > 1]
            fixed = {k: rows[k].iloc[0] for k in keys if k not in own}
            frames.append(table_of(path, own).assign(run=label, **fixed))
        table = pd.concat(frames, ignore_index=True)
        return table[["run", *keys, *(c for c in table.columns if c not in {"run", *keys})]]

    def config_diff(self) -> pd.DataFrame:
        """The config keys whose values differ between the runs: one row per dotted key, one column
        per run (``None`` where a run's config lacks the key). Empty for one run."""
        return comparison.config_diff(self.runs) if self.runs else pd.DataFrame()

    def plot(self, metric: str, by=None, aggregate: str = "mean_std", layer: str = "", ax=None):
        """A matplotlib ``Figure`` of ``metric`` against step: one line per setting (``by``; for
        several runs, each run's settings apart), its centre and band over seeds as ``aggregate``
        makes them. ``ax``: a matplotlib ``Axes`` to draw into (its figure is returned)."""
        keys = list(by) if by is not None else results.varying_settings(self.members)
        return plot_metric(self.frame(metric, keys, layer), metric, keys, aggregate, ax=ax)

    def __repr__(self) -> str:
        where = f"{len(self.runs)} runs ({', '.join(self.runs)})" if self.runs else f"{self.run_dir}"
        return f"<jaxdyn.Results of {where}: {_shape(self)}; {_headline_text(self)}>"

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: the run folders, cohorts x members, steps, divergence,
        and the headline table (its first rows)."""
        runs = self._runs()
        names = ", ".join(f"<code>{html.escape(label)}</code> <small>({html.escape(str(p))})</small>"
                          for label, p in runs.items())
        summary = self.summary()
        table = summary.to_html(index=False, max_rows=8, na_rep="", border=0, float_format=lambda v: f"{v:.4g}")
        return (f"<div><b>jaxdyn Results</b> of {'runs ' if self.runs else 'run '}{names}<br>"
                f"{html.escape(_shape(self))}<br><small>final {html.escape(_centre(summary)[0])} "
                f"over seeds, per setting:</small>{table}</div>")


def _shape(res: Results) -> str:
    """``2 cohorts × 4 members, step 40, 1 diverged``."""
    m = res.members
    if m.empty:
        return "no members yet"
    cohorts = m.groupby(["run", "cohort"] if res.runs else ["cohort"]).size()
    size = f"{len(cohorts)} cohort{'s' * (len(cohorts) != 1)} × {cohorts.iloc[0]} members" \
        if cohorts.nunique() == 1 else f"{len(cohorts)} cohorts, {len(m)} members"
    step = int(res.metrics.step.max()) if len(res.metrics) else 0
    return f"{size}, step {step}, {int((m.diverged_at >= 0).sum())} diverged"


def _centre(summary: pd.DataFrame) -> tuple[str, np.ndarray]:
    """``(metric, its centre per setting)`` of a ``summary`` table: the column after ``members``."""
    column = summary.columns[list(summary.columns).index("members") + 1]
    return column.rsplit("_", 1)[0], summary[column].to_numpy(np.float64)


def _headline_text(res: Results) -> str:
    """``final test_accuracy 0.81 to 0.93 over 4 settings`` (one setting: its mean)."""
    try:
        metric, means = _centre(res.summary())
    except (KeyError, ValueError):  # tables without a final metric: a repr must never raise
        return "no final metric"
    means = means[np.isfinite(means)]
    if not means.size:
        return f"final {metric}: none finite"
    if means.size == 1:
        return f"final {metric} {means[0]:.4g} (mean over seeds)"
    return f"final {metric} {means.min():.4g} to {means.max():.4g} over {means.size} settings"


def load(run_dir, labels=None) -> Results:
    """``Results`` of a run folder: finished, or interrupted or still running (``results.load``).

    Several folders (a list, or ``{label: folder}``) load as one comparison: see ``compare``.
    """
    if isinstance(run_dir, (list, tuple, dict)):
        return compare(run_dir, labels=labels)
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ConfigError(f"run_dir = {brief(run_dir)}: give a run folder (a str or a pathlib.Path), or a list of "
                          "them (or {label: folder}) to compare runs")
    if labels is not None:
        raise ConfigError(f"labels = {brief(labels)}: labels name several runs; give a list of run folders with them")
    tables = results.load(run_dir)
    return Results(tables.run_dir, tables.members, tables.metrics)


def compare(*runs, labels=None) -> Results:
    """Several runs as one ``Results``: ``compare(a, b)``, ``compare([a, b], labels=["base", "wide"])``
    or ``compare({"base": a, "wide": b})``.

    Its ``members`` and ``metrics`` start with a ``run`` column: the run folder's name, or the label
    (folders that share a name are told apart by their parents: ``exp1/run``, ``exp2/run``). Runs may
    have different configs: a setting that differs between them (``config_diff()``) is a column of the
    member table, so the default ``by`` of ``summary``, ``frame``, ``plot`` and ``time_to`` groups by it.

    Raises:
      ConfigError: no run, a run that is no path, or labels that do not match the runs one to one.
      FileNotFoundError: a folder that is no run folder, or a run with nothing written yet.
    """
    given = runs[0] if len(runs) == 1 and isinstance(runs[0], (list, tuple, dict)) else list(runs)
    paths = comparison.run_paths(given, labels)
    tables, _ = comparison.combine(paths)
    return Results(None, tables.members, tables.metrics, {label: Path(p) for label, p in paths.items()})
