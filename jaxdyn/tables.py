"""The tables a run writes while it trains: tidy rows, per-chunk parts, member tables.

Every number a run measures becomes a long row ``cohort, member, step, metric,
layer, value`` (``tidy``). Each chunk's rows go to their own file under
``parts/`` at once, by an atomic rename (``MetricParts``, ``write_atomic``), so a
killed run loses nothing past its last chunk and a resume drops the parts past its
checkpoint and reruns them. A finished cohort's member table is its members'
settings and seeds with their final values read back from those parts
(``cohort_member_table``); the study concatenates the cohorts' (``member_table``).

This module is the bottom of the results side: the runner and the study write
through it, and ``results`` (loading, summaries, the ``Results`` API) reads what it
wrote. It knows nothing of either.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jaxdyn.atomic import SUFFIX, write_atomic
from jaxdyn.axes import MEMBER_CHOICES, MEMBER_HPARAMS

METRIC_COLUMNS = ["cohort", "member", "step", "metric", "layer", "value"]
FINAL_COLUMNS = ["final_train_loss", "final_test_loss", "final_test_accuracy", "diverged_at"]


def extra_finals(columns) -> list[str]:
    """The final metrics a task kind declared beyond ``FINAL_COLUMNS`` (``TaskKind.finals``), in order."""
    return [c for c in columns if c.startswith("final_") and c not in FINAL_COLUMNS]


class MetricParts:
    """Per-chunk parquet files of one run's table: ``parts/{prefix}c{cohort}_{chunks_done}.parquet``
    (``chunks_done = 0``: step 0, the state the cohort started from).

    ``prefix`` is empty for the metrics (``metrics.parquet``), ``hist_`` for the
    probes' histograms (``histograms.parquet``), ``pairs_`` for cross-member rows
    (``pairs.parquet``), ``samples_`` for generated samples (``samples.parquet``) and
    ``time_`` for each chunk's wall time (``timing.csv``).
    """

    PREFIXES = ("", "hist_", "pairs_", "samples_", "time_", "lineage_")

    def __init__(self, run_dir: Path, prefix: str = ""):
        self.dir = Path(run_dir) / "parts"
        self.prefix = prefix

    def files(self, cohort: int | None = None) -> list[Path]:
        """This table's part files, of one cohort or of all, in chunk order."""
        pattern = f"{self.prefix}c{cohort:03d}_*.parquet" if cohort is not None else f"{self.prefix}c*.parquet"
        return sorted(self.dir.glob(pattern))

    def write(self, cohort: int, chunks_done: int, frame: pd.DataFrame) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{self.prefix}c{cohort:03d}_{chunks_done:06d}.parquet"
        write_atomic(path, lambda p: frame.to_parquet(p, index=False))

    def drop_after(self, cohort: int, chunks_done: int) -> None:
        """Forget chunks past the checkpoint a resume starts from (every table's); they will be rerun."""
        for prefix in self.PREFIXES:
            for path in MetricParts(self.dir.parent, prefix).files(cohort):
                if int(path.stem.split("_")[-1]) > chunks_done:
                    path.unlink()
        for tmp in self.dir.glob(f"*{SUFFIX}"):  # a killed writer's leftovers
            tmp.unlink()

    def read(self, cohort: int | None = None) -> pd.DataFrame:
        files = self.files(cohort)
        if not files:
            if self.prefix:
                return pd.DataFrame()
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(METRIC_COLUMNS, ["int32", "int32", "int64", "str", "str", "float32"])})
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@dataclass(frozen=True)
class RunParts:
    """The tables a run writes after each chunk, by what they hold."""

    metrics: MetricParts
    histograms: MetricParts
    pairs: MetricParts
    samples: MetricParts
    timing: MetricParts
    lineage: MetricParts

    @classmethod
    def of(cls, run_dir: Path) -> "RunParts":
        return cls(MetricParts(run_dir), MetricParts(run_dir, "hist_"), MetricParts(run_dir, "pairs_"),
                   MetricParts(run_dir, "samples_"), MetricParts(run_dir, "time_"), MetricParts(run_dir, "lineage_"))


def tidy(metrics: dict, members: np.ndarray, cohort: int, steps: np.ndarray, prefix: str) -> pd.DataFrame:
    """Long rows from ``{name: [K, T]}`` arrays (padding members already cut off).

    Args:
      metrics: name -> float array ``[K, T]`` (or ``[K]`` when T = 1), a whole-model
        value (``layer`` empty); or name -> ``{layer: [K, T]}``, per-layer values of a
        probe, whose names are written as they are (no prefix).
      members: member ids ``[K]``.
      steps: step of each column ``[T]``.
      prefix: prepended to each whole-model metric name, e.g. ``"train_"``.
    """
    frames = []

    def rows(metric, layer, values):
        values = np.asarray(values, np.float32).reshape(len(members), len(steps))
        return pd.DataFrame({
            "cohort": np.int32(cohort),
            "member": np.repeat(members.astype(np.int32), len(steps)),
            "step": np.tile(steps.astype(np.int64), len(members)),
            "metric": metric,
            "layer": layer,
            "value": values.reshape(-1),
        })

    for name, values in metrics.items():
        if isinstance(values, dict):
            frames.extend(rows(name, layer, v) for layer, v in values.items())
        else:
            frames.append(rows(prefix + name, "", values))
    return pd.concat(frames, ignore_index=True)


def sample_rows(values: np.ndarray, members: np.ndarray, cohort: int, step: int) -> pd.DataFrame:
    """Rows ``cohort, member, step, sample, x0 … x{D-1}`` from samples ``[K, n, D]`` (one flattened example per row)."""
    k, n, d = values.shape
    frame = pd.DataFrame(values.reshape(k * n, d).astype(np.float32), columns=[f"x{i}" for i in range(d)])
    frame.insert(0, "sample", np.tile(np.arange(n, dtype=np.int32), k))
    frame.insert(0, "step", np.int64(step))
    frame.insert(0, "member", np.repeat(members.astype(np.int32), n))
    frame.insert(0, "cohort", np.int32(cohort))
    return frame


def final_values(metrics: pd.DataFrame, finals=()) -> pd.DataFrame:
    """Per member: train loss, test loss/accuracy and the test metrics ``finals`` names (those
    logged) at their last logged step (NaN stays NaN)."""
    wanted = {"train_loss": "final_train_loss", "test_loss": "final_test_loss",
              "test_accuracy": "final_test_accuracy"}
    wanted.update({f"test_{name}": f"final_{name}" for name in finals if f"test_{name}" in set(metrics.metric)})
    rows = metrics[metrics.metric.isin(list(wanted))].sort_values("step", kind="stable")
    # tail, not last(): last() skips NaN and would report a diverged member's pre-divergence loss.
    last = rows.groupby(["member", "metric"]).tail(1).set_index(["member", "metric"]).value.unstack("metric")
    return last.rename(columns=wanted).reindex(columns=list(wanted.values()))


def cohort_member_table(cohort, parts: MetricParts, diverged_at: np.ndarray) -> pd.DataFrame:
    """One cohort's members with their settings, final metrics (from its parts so far) and ``diverged_at``.

    Args:
      cohort: a ``study.Cohort`` (its ``index``, ``settings`` and ``members`` are read).
      parts: the run's metric parts.
      diverged_at: per member ``[K_padded]`` or ``[K]``; the padding is cut off.
    """
    members = cohort.members["member"].to_numpy()
    finals = final_values(parts.read(cohort.index), cohort.config.task.spec().finals).reindex(members)
    settings = {k: str(list(v)) if isinstance(v, tuple) else v for k, v in cohort.settings.items()}
    table = cohort.members.assign(**settings)  # member_table puts columns in order
    for col in finals.columns:
        table[col] = finals[col].to_numpy()
    table["diverged_at"] = diverged_at[: len(members)]
    return table


def member_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate cohorts' member tables in a fixed column order: ids, cohort settings,
    seeds, optimizer hyperparameters (the union over families), the other member
    hyperparameters (loss, model, train) and choices (``init``), final metrics."""
    members = pd.concat(tables, ignore_index=True)
    first = ["member", "cohort", *(["part"] if "part" in members else [])]  # part: train.max_members_per_program
    settings = [c for c in members.columns if "." in c]
    seeds = ["init_seed", "data_seed", "dropout_seed"]
    others = [key.split(".")[1] for key in (*MEMBER_HPARAMS, *MEMBER_CHOICES) if key.split(".")[1] in members.columns]
    finals = FINAL_COLUMNS + extra_finals(members.columns)
    optim = [c for c in members.columns if c not in {*first, *settings, *seeds, *others, *finals}]
    return members[first + settings + seeds + optim + others + finals]
