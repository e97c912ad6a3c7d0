"""Plots of a run's results."""

from jaxdyn.report.curves import plot_curves
from jaxdyn.report.samples import plot_samples

__all__ = ["plot_curves", "plot_samples"]
