"""Plots of a run's results, and the report that gathers them (``write_report``)."""

from jaxdyn.report.curves import plot_curves
from jaxdyn.report.html import write_report
from jaxdyn.report.samples import plot_samples

__all__ = ["plot_curves", "plot_samples", "write_report"]
