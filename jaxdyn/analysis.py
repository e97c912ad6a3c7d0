"""``Results``: a run folder's tables with what a user does with them: the summary over
seeds, one metric's rows, the seeds as ensembles and as soups, and a metric's plot.

It sits above the modules it joins (``results`` reads the tables, ``ensemble`` evaluates
the checkpoints, ``explore`` draws) and below the report, which reads a run through it.
"""

import pandas as pd

from jaxdyn import results
from jaxdyn.ensemble import ensemble
from jaxdyn.explore import plot_metric
from jaxdyn.soup import soup


class Results(results.RunTables):
    """What a study produced: the run folder's tables as pandas frames (``run_dir``,
    ``members``, ``metrics``; see ``results.RunTables``), their summary, the ensembles
    and the plots."""

    def ensemble(self, by=None) -> pd.DataFrame:
        """Each setting's seeds as one ensemble (averaged predictions) beside the mean of its
        members' own test scores: ``jaxdyn.ensemble.ensemble``."""
        return ensemble(self.run_dir, by)

    def soup(self, by=None, held_out=None) -> pd.DataFrame:
        """Each setting's seeds averaged in weight space (the uniform soup, BatchNorm statistics
        recomputed; with ``held_out = (x, y)`` also the greedy soup), beside the members' mean and
        their ensemble: ``jaxdyn.soup.soup``."""
        return soup(self.run_dir, by, held_out)

    def plot(self, metric: str, by=None, aggregate: str = "mean_std", layer: str = ""):
        """A matplotlib ``Figure`` of ``metric`` against step: one line per setting (``by``),
        its centre and band over seeds as ``aggregate`` makes them."""
        keys = list(by) if by is not None else results.varying_settings(self.members)
        return plot_metric(self.frame(metric, keys, layer), metric, keys, aggregate)


def load(run_dir) -> Results:
    """``Results`` of a run folder: finished, or interrupted or still running (``results.load``)."""
    tables = results.load(run_dir)
    return Results(tables.run_dir, tables.members, tables.metrics)
