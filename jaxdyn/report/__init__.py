"""Plots of a run's results, and the report that gathers them (``write_report``)."""

from jaxdyn.report.curves import plot_curves
from jaxdyn.report.samples import plot_samples

__all__ = ["plot_curves", "plot_samples", "write_report"]


def write_report(run_dir, aggregate: str = "mean_std", by=None, progress=None):
    """``report.html`` of a run folder: ``jaxdyn.report.html.write_report``."""
    from jaxdyn.report.html import write_report as write

    return write(run_dir, aggregate, by, progress)
