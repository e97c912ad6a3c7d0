"""The report's view of federated averaging: the global model's test accuracy against the round,
how far the clients drift from their average and how well their updates agree, and how the
partition dealt the labels (``partition.parquet``)."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxdyn.explore import draw_metric
from jaxdyn.report.data import ReportData
from jaxdyn.report.views import Plot, View, colors, legend, panel_grid

MAX_PARTITIONS = 4  # cohorts whose label histograms are drawn


def federated(d: ReportData) -> View | None:
    members = d.members
    if "federation" not in members or d.config.federated is None:
        return None
    f = d.config.federated
    n_fed, clients = members.federation.nunique(), int(members.client.max()) + 1
    intro = (f"Federated averaging: {n_fed} federation(s) of {clients} clients; each round a share "
             f"{f.client_fraction:g} of a federation's clients takes its local steps from the global model on its "
             f"own examples, and the server averages them ({f.weighting}-weighted, server optimizer "
             f"{f.server_optim}). Every living client holds the global model after a round, so the test metrics "
             "are the global model's; a band spans the federations of a setting.")
    blocks = [Plot("federated_rounds", _rounds_figure(d),
                   "Left: the global model's test accuracy against the round (mean ± one std over the federations of "
                   "each setting). Middle: client drift, the distance of each participating client's weights from "
                   "their weighted average before the server step (mean over the clients, then over federations). "
                   "Right: the mean cosine between the updates of pairs of participating clients (1: they agree; "
                   "0: unrelated; non-IID clients pull apart).")]
    partition = d.results.partition()
    if len(partition):
        blocks.append(Plot("federated_partition", _partition_figure(partition, d),
                           "How the training set was dealt: each client's examples per class (partition.parquet); "
                           "one panel per cohort."))
    return View("federated", "Federated averaging", intro, blocks)


def _round_of(d: ReportData) -> pd.Series:
    """Each member's local steps per round (its cohort's, ``members.csv``'s ``local_steps``)."""
    return d.members.set_index("member")["local_steps"]


def _federation_frame(d: ReportData, metric: str, first_client: bool) -> pd.DataFrame:
    """Rows of ``metric`` (whole model) as one value per federation and round: client 0's
    (``first_client``) or the mean over the federation's clients that have one."""
    rows = d.metrics[(d.metrics.metric == metric) & (d.metrics.layer.fillna("") == "")]
    if rows.empty:
        return rows
    ids = d.members.set_index("member")[["federation", "client"]]
    rows = rows.join(ids, on="member")
    if first_client:
        rows = rows[rows.client == 0]
    else:
        rows = rows.groupby(["federation", "step"], as_index=False).value.mean()
        first = d.members.groupby("federation").member.min()
        rows = rows.assign(member=rows.federation.map(first))
    per_round = _round_of(d)
    rows = rows.assign(step=rows.step / rows.member.map(per_round))
    return rows[["member", "step", "value"]].merge(d.members[["member", *d.by]], on="member")


def _rounds_figure(d: ReportData) -> Figure:
    panels = [("test_accuracy", "global test accuracy", True), ("client_drift", "client drift ‖w_k − w̄‖", False),
              ("update_cosine", "mean cosine between client updates", False)]
    fig, axes = panel_grid(len(panels), 3, 4.6, 3.6)
    palette = colors(d)
    for ax, (metric, title, first) in zip(axes, panels):
        frame = _federation_frame(d, metric, first)
        if frame.empty or not np.isfinite(frame.value.to_numpy(np.float64)).any():
            ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center", transform=ax.transAxes)
        else:
            draw_metric(ax, frame, metric, d.by, "mean_std", palette, log=False)
        ax.set(title=f"{title}\n({metric})", xlabel="round", ylabel="")
        ax.grid(alpha=0.3)
    legend(fig, palette, "mean ± std over federations")
    return fig


def _partition_figure(partition: pd.DataFrame, d: ReportData) -> Figure:
    cohorts = sorted(partition.cohort.unique())[:MAX_PARTITIONS]
    fig, axes = panel_grid(len(cohorts), 2, 6.0, 3.4, legend_width=0.0)
    settings = d.members.groupby("cohort").first()
    for ax, cohort in zip(axes, cohorts):
        rows = partition[partition.cohort == cohort].sort_values("client")
        hist = rows[[c for c in rows.columns if c.startswith("label_")]].to_numpy()
        if hist.size:
            image = ax.imshow(hist.T, aspect="auto", cmap="viridis", interpolation="nearest", origin="lower")
            fig.colorbar(image, ax=ax, label="examples")
            ax.set(ylabel="class")
        else:
            ax.bar(rows.client, rows.examples)
            ax.set(ylabel="examples")
        label = ", ".join(f"{k}={settings.loc[cohort, k]}" for k in d.by if k in settings.columns) or f"cohort {cohort}"
        ax.set(xlabel="client", title=f"cohort {cohort}: {label}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


__all__ = ["federated"]
