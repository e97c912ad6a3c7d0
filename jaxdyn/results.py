"""Reading a run: ``load`` its tables, select a metric's rows, and the summary over seeds.

A run folder holds ``config.toml`` (resolved), ``members.csv``, ``metrics.parquet``
and ``checkpoints/`` once it has finished; before that, the per-chunk parts that
``tables`` wrote while it trained. ``load`` reads either, so a run can be looked
at while it goes on or after it was killed. Writing those tables is ``tables``'s
job; this module only reads them. The ``Results`` a user gets add the ensemble and
the plots on top (``api``), which read the run through this module.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from jaxdyn.aggregate import AGGREGATES, aggregate as combine
from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.errors import as_path
from jaxdyn.rundir import load_run_config
from jaxdyn.study import expand
from jaxdyn.tables import FINAL_COLUMNS, MetricParts, cohort_member_table, extra_finals, member_table


@dataclass
class RunTables:
    """What a study produced: the same tables as the run folder, as pandas frames.

    Attributes:
      run_dir: the run folder.
      members: one row per member: ids, cohort settings, seeds, hyperparameters,
        final metrics and ``diverged_at`` (-1 if the member never diverged).
      metrics: long table ``cohort, member, step, metric, value``.
    """

    run_dir: Path
    members: pd.DataFrame
    metrics: pd.DataFrame

    def summary(self, aggregate: str = "mean_std", by=None, metric: str = "") -> pd.DataFrame:
        """The final value of ``metric`` over seeds, per setting (``by``; default: ``setting_keys``, the
        cohort and every varying setting): ``aggregate`` is one of ``jaxdyn.aggregate.AGGREGATES``. ``metric`` defaults
        to the study's ``study.headline``, else the task's own (test accuracy; test MSE for regression;
        modes for a GAN); any logged whole-model metric works (``"sharpness"``: its last value per member).

        Raises:
          ValueError: ``metric`` is neither a final column nor a logged whole-model metric.
        """
        metric = metric or self.chosen_headline()
        return summarize(with_final(self.members, self.metrics, metric) if metric else self.members,
                         aggregate, by, metric)

    def chosen_headline(self) -> str:
        """The run's ``study.headline`` ("" when unset, or when its config cannot be read)."""
        try:
            return load_run_config(self.run_dir).study.headline
        except Exception:  # noqa: BLE001 -- tables without their config (several runs, a copy): the default
            return ""

    def lineage(self) -> pd.DataFrame:
        """A PBT study's rounds (``lineage.parquet``, or the rows written so far): one row per
        member per round, its ``parent`` and both scores, each explored hyperparameter
        ``<name>_before`` and ``<name>_after``. Empty for a study without ``[pbt]``."""
        path = self.run_dir / "lineage.parquet"
        return pd.read_parquet(path) if path.exists() else MetricParts(self.run_dir, "lineage_").read()

    def partition(self) -> pd.DataFrame:
        """A federated study's partitions (``partition.parquet``): per cohort and client, its
        ``examples`` and, for a classification dataset, ``label_<c>`` (its examples of class c).
        Empty for a study without ``[federated]`` (or before the run wrote its tables)."""
        path = self.run_dir / "partition.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()

    def schedule(self, member: int) -> pd.DataFrame:
        """The explored hyperparameters that produced ``member``'s final state, through its ancestors
        (Ray's "PBT replay" schedule): one row per stretch of training, ``step`` (from which step on),
        ``member`` (whose line of training it was) and the values trained with from then.

        Raises:
          KeyError: no such member, or the run has no PBT rounds.
        """
        lineage = self.lineage()
        if lineage.empty:
            raise KeyError(f"{self.run_dir} has no PBT rounds (no [pbt] table, or none due yet)")
        if member not in set(self.members.member):
            raise KeyError(f"no member {member} in {self.run_dir}")
        names = [c[: -len("_after")] for c in lineage.columns if c.endswith("_after")]
        by_round = {r: rows.set_index("member") for r, rows in lineage.groupby("round")}
        path, current = [], member
        for r in sorted(by_round, reverse=True):
            row = by_round[r].loc[current]
            path.append({"step": int(row.step), "member": current, **{n: row[f"{n}_after"] for n in names}})
            current = int(row.parent)
        first = by_round[min(by_round)].loc[current]
        path.append({"step": 0, "member": current, **{n: first[f"{n}_before"] for n in names}})
        return pd.DataFrame(path[::-1])

    def frame(self, metric: str, by=None, layer: str = "") -> pd.DataFrame:
        """Tidy rows of one metric: ``member, step, value`` and the setting columns ``by``
        (default: every hyperparameter and cohort setting that varies, not the seeds),
        plus ``init_seed``. ``layer`` picks a per-layer probe's layer (``""``: the whole model).

        Raises:
          KeyError: no such metric, with the metrics there are.
        """
        rows = self.metrics[(self.metrics.metric == metric) & (self.metrics.layer.fillna("") == layer)]
        if rows.empty:
            known = sorted(self.metrics.metric.unique())
            raise KeyError(f"no {metric!r} rows{f' for layer {layer!r}' if layer else ''} in {self.run_dir}; "
                           f"metrics: {', '.join(known)}")
        keys = list(by) if by is not None else varying_settings(self.members)
        missing = [k for k in keys if k not in self.members.columns]
        if missing:
            raise KeyError(f"by = {missing}: not columns of members.csv ({', '.join(self.members.columns)})")
        settings = self.members[["member", *dict.fromkeys([*keys, "init_seed"])]]
        return rows[["member", "step", "value"]].merge(settings, on="member").sort_values(["member", "step"],
                                                                                           ignore_index=True)

    def first_crossing(self, metric: str, threshold=None, *, below=None, layer: str = "") -> pd.DataFrame:
        """When each member first reached a value of ``metric``: the first evaluated step at which
        ``value >= threshold`` (``first_crossing("test_accuracy", 0.95)``) or, with ``below=``,
        ``value <= below`` (``first_crossing("train_loss", below=0.01)``). Give exactly one of the two.

        The step is one at which the metric was logged (test metrics every evaluation, train
        metrics at the end of each logging window, whose mean they are), never interpolated
        between two; a value exactly at the threshold counts (compared in the table's own
        precision: a float32 0.95 is at 0.95). NaN values (a diverged member's loss) never count
        as reaching it. ``layer`` picks a per-layer probe's layer, as ``frame``.

        Returns:
          One row per member of the member table, in member order: ``member``, the varying
          settings and ``init_seed`` (the columns ``frame`` gives), and ``step`` (float: NaN
          when the member never reached it, or has no rows of the metric at all).

        Raises:
          KeyError: no such metric (for that layer), with the metrics there are.
          ValueError: neither or both of ``threshold`` and ``below``, or one that is NaN.
        """
        target, downward = _one_threshold(threshold, below)
        rows = self.frame(metric, layer=layer)
        values = rows.value.to_numpy()
        if np.issubdtype(values.dtype, np.floating):  # as stored: 0.95 logged in float32 is at 0.95, not below
            target = values.dtype.type(target)
        hit = values <= target if downward else values >= target  # NaN compares False: never a crossing
        first = rows.step[hit].groupby(rows.member[hit]).min()
        keys = varying_settings(self.members)
        table = self.members[["member", *dict.fromkeys([*keys, "init_seed"])]].sort_values("member", ignore_index=True)
        return table.assign(step=table.member.map(first).astype(np.float64))

    def time_to(self, metric: str, threshold=None, *, below=None, layer: str = "", by=None,
                aggregate: str = "median") -> pd.DataFrame:
        """How long each setting took to reach a value of ``metric``, over its seeds: the per-member
        steps of ``first_crossing`` (same ``threshold`` / ``below`` and ``layer``), grouped as
        ``summary`` groups (``by``; default: the cohort and every varying setting).

        Returns:
          One row per setting: its ``by`` columns, ``step_<aggregate>`` (``aggregate`` is one of
          ``median``, ``mean``, ``min``, ``max``) over the seeds that reached the threshold (NaN when
          none did), and ``reached``, as ``"3/4"``: how many of the setting's seeds reached it. Read
          the two together: a median over 1 of 4 seeds is the one seed that got there.

        Raises:
          KeyError: no such metric, or a ``by`` column the member table lacks.
          ValueError: as ``first_crossing``, or an unknown ``aggregate``.
        """
        if aggregate not in TIME_AGGREGATES:
            raise ValueError(f"aggregate = {aggregate!r}: use one of {', '.join(TIME_AGGREGATES)}")
        keys = setting_keys(self.members) if by is None else list(by)
        missing = [k for k in keys if k not in self.members.columns]
        if missing:
            raise KeyError(f"by = {missing}: not columns of members.csv ({', '.join(self.members.columns)})")
        steps = self.first_crossing(metric, threshold, below=below, layer=layer)[["member", "step"]]
        marked = self.members[["member", *keys]].merge(steps, on="member").assign(_all=0)
        grouped = marked.groupby(keys or ["_all"], dropna=False)
        table = grouped.agg(members=("member", "size"), n=("step", "count"),
                            step=("step", aggregate)).reset_index()
        table = table.assign(reached=[f"{n}/{m}" for n, m in zip(table.n, table.members)])
        return table.rename(columns={"step": f"step_{aggregate}"})[[*keys, f"step_{aggregate}", "reached"]]


TIME_AGGREGATES = ("median", "mean", "min", "max")  # of the steps at which seeds reached a threshold


def _one_threshold(threshold, below) -> tuple[float, bool]:
    """``(the value, whether it is reached from above)`` of ``first_crossing``'s one threshold."""
    if (threshold is None) == (below is None):
        given = "both were" if threshold is not None else "neither was"
        raise ValueError(f"give exactly one of threshold (reached when value >= it) and below= (reached when "
                         f"value <= it); {given} given")
    value = float(below if threshold is None else threshold)
    if np.isnan(value):
        raise ValueError(f"{'below' if threshold is None else 'threshold'} = nan: no value reaches it")
    return value, threshold is None


def setting_keys(members: pd.DataFrame) -> list[str]:
    """The columns that group a run's members by setting: the cohort and the varying settings; a
    setting split into parts (``train.max_members_per_program``, a ``part`` column) spans several
    cohorts, so then the settings alone, which tell every setting apart."""
    return varying_settings(members) if "part" in members else ["cohort", *varying_settings(members)]


def varying_settings(members: pd.DataFrame) -> list[str]:
    """Member-table columns that tell settings apart: cohort settings and hyperparameters
    that take more than one value (not ids, seeds or results; a federated client's ``federation``
    and ``client`` are ids)."""
    fixed = {"member", "cohort", "part", "init_seed", "data_seed", "dropout_seed", "federation", "client", "local_steps", *FINAL_COLUMNS,
             *extra_finals(members.columns)}
    return [c for c in members.columns if c not in fixed and members[c].nunique(dropna=False) > 1]


def with_final(members: pd.DataFrame, metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``members`` with a ``final_<metric>`` column: as it is when the table has one, else each member's
    last logged whole-model value of ``metric`` (``layer`` empty) in the metrics table.

    Raises:
      ValueError: the run logged no whole-model ``metric``; the message lists what it did log.
    """
    if f"final_{metric}" in members:
        return members
    rows = metrics[(metrics.metric == metric) & (metrics.layer.fillna("") == "")] if len(metrics) else metrics
    if rows.empty:
        logged = sorted(set(metrics[metrics.layer.fillna("") == ""].metric)) if len(metrics) else []
        raise ValueError(f"headline {metric!r}: this run logged no whole-model {metric!r}; choose one of "
                         f"{', '.join(logged) or 'nothing (no metrics yet)'} (study.headline or metric=)")
    last = rows.sort_values("step").groupby("member").value.last()
    return members.assign(**{f"final_{metric}": members.member.map(last).astype(float)})


def headline(members: pd.DataFrame) -> str:
    """The metric a summary reports: the first final metric the task kind declares that the run
    logged (a GAN on a mixture: ``modes``), ``test_accuracy``, or ``test_loss`` when no member has
    an accuracy (regression: the loss is the mean squared error). The moving average's metrics
    (``train.ema_decay``: ``final_accuracy_ema``) sit beside the raw weights', never in their place."""
    declared = [c for c in extra_finals(members.columns) if not c.endswith("_ema")]
    if declared:
        return declared[0][len("final_"):]
    return "test_accuracy" if members.final_test_accuracy.notna().any() else "test_loss"


AGGREGATE_COLUMNS = {"mean_std": ("mean", "std"), "median_iqr": ("median", "q25", "q75"),
                     "iqm": ("iqm", "ci_low", "ci_high")}


def summarize(members: pd.DataFrame, aggregate: str = "mean_std", by=None, metric: str = "") -> pd.DataFrame:
    """The final headline metric over seeds, and members diverged, per setting.

    The columns are ``<metric>_mean, <metric>_std`` (``aggregate = "mean_std"``),
    ``<metric>_median, _q25, _q75`` (``"median_iqr"``) or ``<metric>_iqm, _ci_low,
    _ci_high`` (``"iqm"``: a 95% stratified-bootstrap interval), where the metric is
    ``metric`` (its ``final_<metric>`` column; default ``headline``: ``test_accuracy``, ``test_loss``
    for regression, ``modes`` for GANs).
    Diverged members' NaN finals are left out of the aggregate. In a federated study the unit is
    the federation (``federation_rows``): ``members`` counts federations, and one diverged only when
    every client of it did.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate = {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    if "federation" in members:
        members = federation_rows(members)
    keys = setting_keys(members) if by is None else list(by)
    metric = metric or headline(members)
    marked = members.assign(diverged=members.diverged_at >= 0, _all=0)
    grouped = marked.groupby(keys or ["_all"], dropna=False)
    table = grouped.agg(members=("member", "size"), diverged=("diverged", "sum")).reset_index()
    finals = [group[f"final_{metric}"].to_numpy() for _, group in grouped]  # in the order of agg's rows
    if aggregate == "mean_std":  # pandas' own, as before: the std of one seed is NaN
        stats = grouped[f"final_{metric}"].agg(["mean", "std"]).reset_index(drop=True)
        columns = {f"{metric}_mean": stats["mean"].to_numpy(), f"{metric}_std": stats["std"].to_numpy()}
    else:
        values = np.array([combine(f, aggregate) for f in finals]).reshape(-1, 3)
        names = AGGREGATE_COLUMNS[aggregate]
        columns = {f"{metric}_{n}": values[:, i] for i, n in enumerate(names)}
    table = table.assign(**columns)
    return table[[*keys, "members", *columns, "diverged"]]  # no keys: one row, all members


def federation_rows(members: pd.DataFrame) -> pd.DataFrame:
    """One row per federation of a federated study's member table: its first living client's row
    (every living client holds the global model, so its final test metrics are the federation's),
    or its first client's with ``diverged_at`` the earliest when every client diverged."""
    ordered = members.sort_values("member")
    alive = ordered[ordered.diverged_at < 0].groupby("federation").head(1)
    dead = ordered[~ordered.federation.isin(alive.federation)]
    gone = dead.groupby("federation").head(1).assign(
        diverged_at=dead.groupby("federation").diverged_at.min().reindex(dead.federation.unique()).to_numpy())
    return pd.concat([alive, gone]).sort_values("member", ignore_index=True)


def load(run_dir) -> RunTables:
    """The tables of a run folder: finished, or interrupted or still running (then from what it
    has written so far: the per-chunk parts, each finished cohort's member table, and the
    newest checkpoint's ``diverged_at`` for a cohort still under way)."""
    run_dir = as_path(run_dir, "run_dir")
    if (run_dir / "members.csv").exists() and (run_dir / "metrics.parquet").exists():
        return RunTables(run_dir, pd.read_csv(run_dir / "members.csv"), pd.read_parquet(run_dir / "metrics.parquet"))
    if not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir} is not a jaxdyn run folder: it has no config.toml (nor members.csv)")
    return _load_partial(run_dir)


def _load_partial(run_dir: Path) -> RunTables:
    """A run that has not finished: its members so far, with final values of the last rows written."""
    parts = MetricParts(run_dir)
    tables = []
    for cohort in expand(load_run_config(run_dir)):
        done = parts.dir / f"members_c{cohort.index:03d}.csv"
        if done.exists():
            tables.append(pd.read_csv(done))
            continue
        if not parts.files(cohort.index):
            continue  # not started: no member has a row yet
        diverged = np.full(len(cohort.members), -1)
        if committed_steps(cohort_checkpoint_dir(run_dir, cohort.index)):
            diverged = np.asarray(load_state(run_dir, cohort.index)["diverged_at"])
        tables.append(cohort_member_table(cohort, parts, diverged).astype({"diverged_at": int}))
    if not tables:
        raise FileNotFoundError(f"{run_dir}: no chunk has finished yet, so there is nothing to load")
    return RunTables(run_dir, member_table(tables), parts.read())


def print_summary(members: pd.DataFrame, console=None, metrics=None, metric: str = "") -> None:
    """The end-of-study table: the final headline metric (``metric``, else the task's own: test
    accuracy, test MSE, modes) mean ± std over seeds, and members diverged. Long headers wrap after
    an underscore rather than being cut, so the table fits an 80-column terminal. A ``metric`` the run
    did not log is said, and the task's own is shown instead."""
    console = console or Console()
    if metric and metrics is not None:
        try:
            members = with_final(members, metrics, metric)
        except ValueError as e:
            console.print(f"[yellow]{e}; showing the task's own headline[/yellow]")
            metric = ""
    table = summarize(members, metric=metric)
    metric = metric or headline(members)
    name = {"test_accuracy": "test accuracy", "test_loss": "test MSE" if members.final_test_accuracy.isna().all()
            else "test loss", "modes": "modes covered"}.get(metric, metric.replace("_", " "))
    out = Table(title=f"final {name} over seeds")
    keys = [c for c in table.columns if c not in ("members", f"{metric}_mean", f"{metric}_std", "diverged")]
    if "cohort" in keys and table.cohort.nunique() == 1 and len(keys) > 1:
        keys.remove("cohort")  # one cohort: its number says nothing
    unit = "federations" if "federation" in members else "members"
    rows = []
    for _, row in table.iterrows():
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        spread = "" if np.isnan(std) else f" ± {std:.2g}"  # one seed has no spread to show (not ± 0)
        rows.append([*(f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in keys),
                     str(int(row.members)), f"{mean:.4g}{spread}", str(int(row.diverged))])
    headers = [*keys, unit, name, "diverged"]
    widths = [max((len(r[i]) for r in rows), default=1) for i in range(len(headers))]
    # A value keeps its line (its width is the column's least) and a header wraps, when the values and
    # the headers' lines fit the console (each column's padding and rule take 3 characters); else
    # values fold too: never cut.
    longest = [max(max(len(line) for line in _wrapped(h).split("\n")), w) for h, w in zip(headers, widths)]
    fits = sum(w + 3 for w in longest) + 1 <= console.width
    for col, width in zip(headers, widths):
        out.add_column(_wrapped(col), justify="right", overflow="fold", min_width=width if fits else None)
    for cells in rows:
        out.add_row(*cells)
    console.print(out)
    lost = table[table.diverged == table.members]
    if len(lost):
        console.print("Diverged entirely (every seed; a result, not an error):")
        for _, row in lost.iterrows():
            setting = ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys)
            console.print(f"  {setting}: {int(row.members)} of {int(row.members)} {unit} diverged")


def _wrapped(name: str, width: int = 15) -> str:
    """``name`` broken into lines of at most ``width`` characters after its underscores and dots
    (a part longer than that keeps its own line): ``d_learning_rate_multiplier`` -> ``d_learning_``,
    ``rate_multiplier``; ``model.activation`` -> ``model.``, ``activation``."""
    lines = [""]
    for part in name.replace("_", "_\n").replace(".", ".\n").split("\n"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)
