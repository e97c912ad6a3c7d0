"""``jaxdyn export tensorboard RUN_DIR OUT``: one TensorBoard run per member.

Each member's folder ``OUT/member_NNNNN`` holds, written by tensorboardX:
- every metric as a scalar series: ``train_loss``, ``test_accuracy``, a per-layer
  probe as ``grad_norm/hidden_0`` (the whole-model value as ``grad_norm``), a loss
  slice's point as ``loss_slice_2d/-1_-1`` (``tag_name``);
- the activation histograms as TensorBoard histograms (``act_hist/hidden_0``);
- the member's hyperparameters and settings through the HParams plugin, with its
  final metrics (``final/test_accuracy``, ...) as the session's metrics, so that
  TensorBoard's HParams table, grouping and parallel coordinates work across members.

Cross-member tables (CKA, LMC) and GAN samples have no per-member place in
TensorBoard; they stay in the run folder and the report.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from jaxdyn.results import load
from jaxdyn.tables import FINAL_COLUMNS, MetricParts, extra_finals



def tag_name(metric: str, layer: str) -> str:
    """The TensorBoard tag of a metric: ``grad_norm``, ``grad_norm/hidden_0``; characters that
    TensorBoard tags cannot hold become ``_`` (a 2D loss slice's ``-1,-1`` is ``-1_-1``)."""
    return re.sub(r"[^-/\w.]", "_", f"{metric}/{layer}" if layer else metric)


def _hparam_value(value):
    """A value the HParams plugin takes (bool, number, string), or None to leave it out."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def member_hparams(members: pd.DataFrame) -> list[dict]:
    """Per member: every setting, seed and hyperparameter column (not ids or results)."""
    results = {*FINAL_COLUMNS, *extra_finals(members.columns)}
    columns = [c for c in members.columns if c not in results and c != "member"]
    out = []
    for row in members[columns].to_dict("records"):
        values = {k: _hparam_value(v) for k, v in row.items()}
        out.append({k: v for k, v in values.items() if v is not None})
    return out


def export_tensorboard(run_dir, out, progress: bool = True) -> list[Path]:
    """Write one TensorBoard run per member of ``run_dir`` under ``out``; return the run folders.

    Works on a run that is finished, interrupted or still going (what it has written so far).

    Raises:
      FileNotFoundError: ``run_dir`` is not a run folder, or nothing is written yet.
      FileExistsError: ``out`` already holds this run's export (choose a new folder).
    """
    import logging

    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)  # a diverged member's NaN is its value

    run_dir, out = Path(run_dir), Path(out)
    res = load(run_dir)
    taken = [p for p in (out.iterdir() if out.is_dir() else []) if p.name.startswith("member_")]
    if taken:
        raise FileExistsError(f"{out} already holds {len(taken)} member runs; export into a new folder "
                              "(TensorBoard would mix the two exports' events)")
    finished = (run_dir / "histograms.parquet").exists()
    hist = pd.read_parquet(run_dir / "histograms.parquet") if finished else MetricParts(run_dir, "hist_").read()
    scalars = dict(tuple(res.metrics.groupby("member")))
    histograms = dict(tuple(hist.groupby("member"))) if len(hist) else {}
    finals = [c for c in [*FINAL_COLUMNS, *extra_finals(res.members.columns)]
              if c in res.members.columns and c != "diverged_at"]
    written = []
    rows = list(zip(res.members.member, member_hparams(res.members), res.members[finals].to_dict("records")))
    with _bar(len(rows), progress) as advance:
        for member, hp, final in rows:
            path = out / f"member_{int(member):05d}"
            writer = SummaryWriter(logdir=str(path))
            mine = scalars.get(member, pd.DataFrame(columns=res.metrics.columns))
            for (metric, layer), series in mine.groupby(["metric", mine.layer.fillna("")], sort=False):
                tag = tag_name(metric, layer)
                for step, value in zip(series.step.to_numpy(), series.value.to_numpy(np.float64)):
                    writer.add_scalar(tag, value, int(step))
            if member in histograms:
                _histograms(writer, histograms[member])
            last = int(mine.step.max()) if len(mine) else 0
            # Every member names the same final metrics (a diverged member's NaN loss included), so that
            # TensorBoard sees one experiment.
            metrics = {f"final/{k[len('final_'):]}": float(v) for k, v in final.items()}
            for summary in hparams(hp, metrics):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():  # the HParams plugin reads a session's metrics from scalars
                writer.add_scalar(tag, value, last)
            writer.close()
            written.append(path)
            advance()
    return written


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
