"""Plots of a run's results."""

from jaxdyn.report.curves import plot_curves

__all__ = ["plot_curves"]
