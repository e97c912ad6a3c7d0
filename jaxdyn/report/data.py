"""What a report is drawn from: every table of a run folder, finished or not.

A finished run has its merged tables (``metrics.parquet``, ``histograms.parquet``,
``pairs.parquet``, ``samples.parquet``, ``timing.csv``); a run that is still going
or was interrupted has only the per-chunk parts, which are read instead
(``jaxdyn.load`` does the same for the members and metrics).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxdyn.aggregate import AGGREGATES
from jaxdyn.analysis import Results, load
from jaxdyn.data import dataset_info, load_dataset
from jaxdyn.errors import ConfigError, as_path
from jaxdyn.explore import member_settings
from jaxdyn.losses import logged_loss
from jaxdyn.report.names import creation_order, layer_order
from jaxdyn.results import varying_settings
from jaxdyn.rundir import load_run_config
from jaxdyn.study import expand
from jaxdyn.tables import MetricParts
from jaxdyn.tasks import TaskKind

TABLES = {"hist_": "histograms.parquet", "pairs_": "pairs.parquet", "samples_": "samples.parquet",
          "time_": "timing.csv"}


def _table(run_dir: Path, prefix: str, finished: bool) -> pd.DataFrame:
    path = run_dir / TABLES[prefix]
    if finished and path.exists():
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    return MetricParts(run_dir, prefix).read()


def format_value(value) -> str:
    """A setting's value as a label shows it: ``0.001``, ``relu``, ``[32, 32]``."""
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


@dataclass
class ReportData:
    """A run's tables and how settings are grouped.

    Attributes:
      results: members and metrics (``jaxdyn.load``).
      histograms, pairs, samples, timing: the other tables (empty frames when absent).
      info: ``run.json`` (versions, devices).
      config: the run's resolved config.
      finished: whether the run wrote its final tables.
      aggregate: how seeds are combined: a key of ``jaxdyn.aggregate.AGGREGATES``.
      by: the member-table columns that make a setting (default: every varying
        hyperparameter and cohort setting, not the seeds).
    """

    run_dir: Path
    results: Results
    histograms: pd.DataFrame
    pairs: pd.DataFrame
    samples: pd.DataFrame
    timing: pd.DataFrame
    info: dict
    config: object
    finished: bool
    aggregate: str = "mean_std"
    by: list = field(default_factory=list)
    _model_order: list | None = field(default=None, repr=False)
    _baselines: dict | None = field(default=None, repr=False)

    @property
    def members(self) -> pd.DataFrame:
        return self.results.members

    def task_kind(self) -> TaskKind:
        """The run's task kind; a kind of the user's own that cannot be imported here reads as a
        plain one (no declared curves or finals, no ensemble), so the report still draws."""
        try:
            return self.config.task.spec()
        except ConfigError:
            return TaskKind(build=None)

    def loss_label(self, metric: str = "train_loss") -> str:
        """What ``metric`` (a loss) measures, in words: a supervised run's objective; a GAN's loss
        (``train_loss``/``test_loss`` are the sum of both players'); else ``""``."""
        if self.config is not None and self.config.task.kind == "gan":
            varies = "gan.loss" in dict(self.config.grid)  # then each cohort's own: the legend says which
            name = "" if varies else self.config.task.options.loss.replace("_", "-")
            if metric in ("train_loss", "test_loss"):
                return f"{name}, both players' sum" if name else "both players' sum"
            return name
        if self.config is None or self.config.task.kind != "supervised":
            return ""
        try:
            regression = dataset_info(self.config.data).regression
        except (ConfigError, OSError):
            return ""
        return logged_loss(self.config.loss.name, regression)

    def layer_order(self, names) -> list:
        """``names`` (layers a probe wrote) from input to output: the model's own creation order
        where it covers them, else the built-in stages (``report.names.layer_order``)."""
        if self._model_order is None:
            self._model_order = []
            try:
                (cohort, *_) = expand(self.config)
                seeds, hparams = cohort.member_arrays(lambda a: a)
                self._model_order = creation_order(cohort.task(), *jax.tree.map(lambda a: a[0], (seeds, hparams)))
            except Exception:  # noqa: BLE001 -- a model that cannot be rebuilt here: the stages order it
                pass
        return layer_order(names, self._model_order)

    def baselines(self) -> dict:
        """Scores of a model that ignores its input, the line a curve must get below (or above):
        ``input_blind_scores`` on the run's dataset. Empty unless a supervised run whose data settings
        are the same for every cohort (and can be loaded here)."""
        if self._baselines is None:
            self._baselines = {}
            cfg = self.config
            if (cfg is not None and cfg.task.kind == "supervised" and self.loss_label()
                    and not any(k.startswith("data.") for k in dict(cfg.grid))):
                try:
                    self._baselines = input_blind_scores(load_dataset(cfg.data), dataset_info(cfg.data).regression)
                except (ConfigError, OSError, ValueError):
                    pass
        return self._baselines

    def curves(self) -> tuple[str, ...]:
        """The metrics the curves view draws: losses, accuracy, and what the task kind declares."""
        declared = self.task_kind().curves
        # a kind that logs each player's loss (train_d_loss, train_g_loss) has a summed train_loss: leave it out
        split = {c.replace("_d_", "_").replace("_g_", "_") for c in declared}
        return (*(m for m in ("train_loss", "test_loss", "test_accuracy") if m not in split), *declared)

    @property
    def metrics(self) -> pd.DataFrame:
        return self.results.metrics

    def setting_of(self) -> pd.Series:
        """member -> its setting's label, such as ``learning_rate=0.01, activation=relu``."""
        return member_settings(self.members, self.by)

    def settings(self) -> list[str]:
        """Setting labels in the member table's order."""
        return list(dict.fromkeys(self.setting_of()))


def input_blind_scores(data, regression: bool) -> dict:
    """Test-set scores of the best predictor that ignores its input, fitted on the training set.

    Regression: the training mean of each output, scored as the runs score it,
    ``test_loss = ½ · mean_i Σ_j (y_ij − ȳ_j)²`` (``losses.squared_error``). Classification: the
    training class frequencies p, ``test_loss = −mean_i log p[y_i]`` (cross-entropy), and the most
    frequent training class, ``test_accuracy`` = its share of the test labels.
    """
    y, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
    if regression:
        centre = y.reshape(len(y), -1).astype(np.float64).mean(0)
        error = y_test.reshape(len(y_test), -1) - centre
        return {"test_loss": float(0.5 * np.square(error).sum(-1).mean())}
    counts = np.bincount(y.astype(np.int64), minlength=int(max(y.max(), y_test.max())) + 1)
    freq = counts / counts.sum()
    with np.errstate(divide="ignore"):
        loss = float(-np.log(freq[y_test.astype(np.int64)]).mean())
    return {"test_loss": loss, "test_accuracy": float(np.mean(y_test == counts.argmax()))}


def load_report_data(run_dir, aggregate: str = "mean_std", by=None) -> ReportData:
    """Read a run folder for a report.

    Raises:
      FileNotFoundError: not a run folder, or no chunk has finished yet.
      ValueError: an unknown ``aggregate``, or a ``by`` column the member table lacks.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate = {aggregate!r}: use one of {', '.join(AGGREGATES)}")
    run_dir = as_path(run_dir, "run_dir")
    results = load(run_dir)
    finished = (run_dir / "members.csv").exists() and (run_dir / "metrics.parquet").exists()
    keys = varying_settings(results.members) if by is None else list(by)
    missing = [k for k in keys if k not in results.members.columns]
    if missing:
        raise ValueError(f"by = {missing}: not columns of the member table; columns: "
                         f"{', '.join(results.members.columns)}")
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    tables = {prefix: _table(run_dir, prefix, finished) for prefix in TABLES}
    return ReportData(run_dir, results, tables["hist_"], tables["pairs_"], tables["samples_"], tables["time_"],
                      info, load_run_config(run_dir), finished, aggregate, keys)
