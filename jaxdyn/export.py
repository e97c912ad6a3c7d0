"""``jaxdyn export tensorboard RUN_DIR OUT``: one TensorBoard run per member.

Each member's folder ``OUT/member_NNNNN`` holds, written by tensorboardX:
- every metric as a scalar series: ``train_loss``, ``test_accuracy``, a per-layer
  probe as ``grad_norm/hidden_0`` (the whole-model value as ``grad_norm``), a loss
  slice's point as ``loss_slice_2d/-1_-1`` (``tag_name``);
- the activation histograms as TensorBoard histograms (``act_hist/hidden_0``);
- its HParams session: the member's own settings, seeds and hyperparameters, and its
  results (``final/test_accuracy``, ..., ``diverged_at``) as scalars, the session's metrics.

``OUT`` itself holds the HParams experiment, written once: every hyperparameter column of
``members.csv`` (with its type and the values the members took) and every result column, so
that TensorBoard's HParams table shows each column of ``members.csv``, empty where a member
lacks the hyperparameter (an SGD member's ``b1``), and its grouping and parallel coordinates
work across members.

Cross-member tables (CKA, LMC) and GAN samples have no per-member place in
TensorBoard; they stay in the run folder and the report.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from jaxdyn.atomic import check_writable
from jaxdyn.results import load
from jaxdyn.tables import FINAL_COLUMNS, MetricParts, extra_finals


def tag_name(metric: str, layer: str) -> str:
    """The TensorBoard tag of a metric: ``grad_norm``, ``grad_norm/hidden_0``; characters that
    TensorBoard tags cannot hold become ``_`` (a 2D loss slice's ``-1,-1`` is ``-1_-1``)."""
    return re.sub(r"[^-/\w.]", "_", f"{metric}/{layer}" if layer else metric)


def hparam_columns(members: pd.DataFrame) -> list[str]:
    """The columns of ``members.csv`` that TensorBoard shows as hyperparameters: every setting, seed
    and hyperparameter (all but the member id, which is the run's name, and the results)."""
    results = {*FINAL_COLUMNS, *extra_finals(members.columns)}
    return [c for c in members.columns if c not in results and c != "member"]


def metric_tags(members: pd.DataFrame) -> dict[str, str]:
    """The result columns of ``members.csv`` and their TensorBoard tags, in order:
    ``final_test_accuracy`` is ``final/test_accuracy``, ``diverged_at`` stays (-1: never)."""
    columns = [c for c in [*FINAL_COLUMNS, *extra_finals(members.columns)] if c in members.columns]
    return {c: f"final/{c[len('final_'):]}" if c.startswith("final_") else c for c in columns}


def _typed_column(column: pd.Series) -> tuple[int, list]:
    """The column's one HParams data type, inferred as the plugin infers it (all bools, all
    numbers, else strings), and its values in that type: ``None`` where a member lacks the
    value (an SGD member's ``b1``)."""
    from tensorboard.plugins.hparams import api_pb2

    values = [None if pd.isna(v) else v for v in column]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        dtype, cast = api_pb2.DATA_TYPE_BOOL, bool
    elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
             for v in present):
        dtype, cast = api_pb2.DATA_TYPE_FLOAT64, float
    else:
        dtype, cast = api_pb2.DATA_TYPE_STRING, str
    return dtype, [None if v is None else cast(v) for v in values]


def _hparams_summary(tag: str, **plugin_data):
    """A tensorboardX summary carrying HParams plugin data (TensorBoard's own proto, as bytes)."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **plugin_data)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def _experiment(typed: dict[str, tuple[int, list]], tags: list[str]):
    """The one experiment summary: every hyperparameter column with its type, the values the
    members took (the dashboard's filters) and whether they differ, and every result as a metric."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    infos = []
    for name, (dtype, values) in typed.items():
        present = [v for v in values if v is not None]
        # `differs` as the plugin computes it when it infers an experiment: the dashboard shows the
        # columns that differ first (only five at the start), so the study's axes lead.
        info = api_pb2.HParamInfo(name=name, type=dtype, differs=len(set(present)) > 1)
        if dtype != api_pb2.DATA_TYPE_FLOAT64:
            info.domain_discrete.extend(sorted(set(present)))
        elif present:
            info.domain_interval.CopyFrom(api_pb2.Interval(min_value=min(present), max_value=max(present)))
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in tags]
    return _hparams_summary(metadata.EXPERIMENT_TAG,
                            experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics))


def _session(hparams: dict, ended: bool) -> list:
    """A member's session: its start with its own hyperparameter values, and its end once the run
    has finished. A value it lacks is left out, which the dashboard shows as an empty cell and
    treats as missing when it filters or sorts (``exclude_missing_values``)."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, float):
            start.hparams[name].number_value = value
        elif value is not None:
            start.hparams[name].string_value = value
    summaries = [_hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start)]
    if ended:
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
        summaries.append(_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
    return summaries


def export_tensorboard(run_dir, out, progress: bool = True) -> list[Path]:
    """Write one TensorBoard run per member of ``run_dir`` under ``out``, and the HParams experiment
    in ``out`` itself; return the member run folders.

    Works on a run that is finished, interrupted or still going (what it has written so far; the
    members of an unfinished run have no session end, so the dashboard shows their status as unknown).

    Raises:
      FileNotFoundError: ``run_dir`` is not a run folder, or nothing is written yet.
      FileExistsError: ``out`` already holds an export (choose a new folder).
      ConfigError: ``out`` cannot be written.
    """
    import logging

    from tensorboardX import SummaryWriter
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)  # a diverged member's NaN is its value

    run_dir, out = Path(run_dir), Path(out)
    check_writable(out, f"export folder {out}", "give a folder you can write to")
    res = load(run_dir)
    taken = [p for p in (out.iterdir() if out.is_dir() else [])
             if p.name.startswith(("member_", "events.out.tfevents"))]
    if taken:
        raise FileExistsError(f"{out} already holds a TensorBoard export ({len(taken)} runs and event files); "
                              "export into a new folder (TensorBoard would mix the two exports' events)")
    finished = (run_dir / "histograms.parquet").exists()
    hist = pd.read_parquet(run_dir / "histograms.parquet") if finished else MetricParts(run_dir, "hist_").read()
    scalars = dict(tuple(res.metrics.groupby("member")))
    histograms = dict(tuple(hist.groupby("member"))) if len(hist) else {}
    # The dashboard takes its columns from the first experiment it finds. tensorboardX's hparams()
    # writes one into every run from that run's own values, so an SGD member's dropped Adam's b1, b2
    # and eps for all. As TensorBoard documents, ONE experiment at the root declares every column;
    # each member's run holds only its session. TensorBoard's own protos, not tensorboardX's older
    # copy, because only they carry `differs`, which picks the columns the dashboard shows first.
    typed = {c: _typed_column(res.members[c]) for c in hparam_columns(res.members)}
    tags = metric_tags(res.members)
    with SummaryWriter(logdir=str(out)) as root:
        root.file_writer.add_summary(_experiment(typed, list(tags.values())))
    written = []
    with _bar(len(res.members), progress) as advance:
        for i, member in enumerate(res.members.member):
            path = out / f"member_{int(member):05d}"
            session = _session({c: values[i] for c, (_, values) in typed.items()}, ended=finished)
            results = {tag: float(res.members[c].iloc[i]) for c, tag in tags.items()}
            with SummaryWriter(logdir=str(path)) as writer:
                mine = scalars.get(member, res.metrics.iloc[:0])
                _scalars(writer, mine)
                if member in histograms:
                    _histograms(writer, histograms[member])
                for summary in session:
                    writer.file_writer.add_summary(summary)
                # The plugin reads a session's metrics from its scalars: every member writes every
                # result (a diverged member's NaN loss included), at its last step.
                last = int(mine.step.max()) if len(mine) else 0
                for tag, value in results.items():
                    writer.add_scalar(tag, value, last)
            written.append(path)
            advance()
    return written


def _scalars(writer, rows: pd.DataFrame) -> None:
    """One member's metric rows as TensorBoard scalar series, one per metric and layer."""
    for (metric, layer), series in rows.groupby(["metric", rows.layer.fillna("")], sort=False):
        tag = tag_name(metric, layer)
        for step, value in zip(series.step.to_numpy(), series.value.to_numpy(np.float64)):
            writer.add_scalar(tag, value, int(step))


def _histograms(writer, rows: pd.DataFrame) -> None:
    """The probes' binned counts as TensorBoard histograms (bucket right edges and counts)."""
    for (metric, layer, step), h in rows.sort_values("bin").groupby(["metric", "layer", "step"], sort=False):
        counts = h.value.to_numpy(np.float64)
        centres = (h.left.to_numpy(np.float64) + h.right.to_numpy(np.float64)) / 2
        total = counts.sum()
        if total <= 0:
            continue
        writer.add_histogram_raw(tag_name(metric, layer), min=float(h.left.min()), max=float(h.right.max()),
                                 num=float(total), sum=float(counts @ centres),
                                 sum_squares=float(counts @ centres**2),
                                 bucket_limits=h.right.to_numpy(np.float64).tolist(),
                                 bucket_counts=counts.tolist(), global_step=int(step))


class _bar:
    """A rich progress bar over members (or nothing)."""

    def __init__(self, total: int, show: bool):
        self.total, self.show = total, show

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.progress import Progress

        self._progress = Progress()
        self._progress.__enter__()
        task = self._progress.add_task("tensorboard export", total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc):
        if self.show:
            self._progress.__exit__(*exc)
