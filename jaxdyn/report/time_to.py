"""The summary's "time to learn" (classification runs): per setting, the median step at which
its seeds first reached a train and a test accuracy, and how many did (``Results.time_to``).

Each threshold is shared by every member, so that the steps compare across settings, and
taken from the run: half of the way from the lowest value logged to the best member's
final value. Absolute defaults (0.99 train, 0.95 test accuracy) are reached by no member of
most runs. A threshold near the best final value is reached by little but the best setting,
which the final-accuracy table already says. And one relative to each member's own final
value times when a member stopped improving, not how fast it learnt: in a run still
improving at its end every member gets a step near the last, and a member that stalls low
looks quick. Half-way is reached by most settings that learn at all, and the step tells
their speed apart. Other thresholds: ``Results.time_to`` and ``Results.first_crossing``.
"""

import math

import numpy as np
import pandas as pd

from jaxdyn.report.data import ReportData
from jaxdyn.results import headline

METRICS = {"train_accuracy": "train", "test_accuracy": "test"}
FRACTION = 0.5  # of the way from the lowest value logged to the best member's final value
MIN_STEPS = 3  # a metric logged at fewer steps says too little about when


def shared_threshold(rows: pd.DataFrame, fraction: float = FRACTION) -> float:
    """``fraction`` of the way from the lowest finite value of ``rows`` (one metric's
    ``member, step, value``) to the highest of the members' last finite values, floored to
    three significant digits so that the threshold shown is the one used; NaN when there is
    no way to go (no finite value, or none above the lowest)."""
    rows = rows[np.isfinite(rows.value.to_numpy(np.float64))]
    if rows.empty:
        return math.nan
    low = float(rows.value.min())
    best = float(rows.sort_values("step").groupby("member").value.last().max())
    if best <= low:
        return math.nan
    target = low + fraction * (best - low)
    if target <= 0:
        return target
    digits = 2 - math.floor(math.log10(target))
    return math.floor(target * 10.0 ** digits) / 10.0 ** digits  # the double nearest the decimal shown


def time_to_learn(d: ReportData) -> tuple[str, pd.DataFrame | None] | None:
    """``(caption, table)``: per setting (grouped as the summary table), for train and test
    accuracy, the median step at which its seeds first reached the ``shared_threshold`` and how
    many did; the table is None (the caption says why) when neither was logged at enough steps.
    None for a run without accuracy (regression, GANs)."""
    if headline(d.members) != "test_accuracy":
        return None
    metrics = d.metrics[d.metrics.layer.fillna("") == ""]
    table, shown, left = None, [], []
    for metric, short in METRICS.items():
        rows = metrics[metrics.metric == metric]
        steps = rows.step.nunique()
        threshold = shared_threshold(rows) if steps >= MIN_STEPS else math.nan
        if math.isnan(threshold):
            if steps >= MIN_STEPS:
                left.append(f"{short} accuracy, which no member raised above its lowest value")
            elif steps:
                left.append(f"{short} accuracy, logged at only {steps} step{'' if steps == 1 else 's'}"
                            + (" (train.eval_every sets how often, in chunks)" if short == "test" else ""))
            continue
        times = d.results.time_to(metric, threshold, by=d.by or None)
        times = times.assign(step_median=[_step(s) for s in times.step_median]).rename(columns={
            "step_median": f"{short} accuracy ≥ {threshold:.3g}: median step", "reached": f"{short}: reached"})
        if table is None:
            table = times
        else:  # joined on the setting's columns; with nothing varying, one row each, side by side
            keys = [c for c in times.columns if c in table.columns]
            table = table.merge(times, on=keys) if keys else table.join(times)
        shown.append(f"{short} accuracy every {_spacing(rows):,} steps"
                     + (" (each a mean over its logging window)" if short == "train" else ""))
    if not shown and not left:
        return None
    caption = ""
    if shown:
        caption = (f"The first logged step at which a member's accuracy reached the threshold: the median over "
                   f"the seeds that reached it, and how many did. Each threshold is shared by all members, so "
                   f"that steps compare across settings, and is {FRACTION:.0%} of the way from the lowest value "
                   f"logged in this run to the best final value: most settings that learn reach it (a fixed 0.95 "
                   f"test accuracy is reached by few members of most runs), and the step tells their speed apart; "
                   f"how far each got is the table above. Steps are only as fine as the logging: "
                   f"{', '.join(shown)}. Thresholds of your own: Results.time_to(\"test_accuracy\", 0.95), or per "
                   f"member Results.first_crossing. ")
    if left:
        caption += f"Not shown: {'; '.join(left)}."
    return caption.strip(), table


def _step(s: float) -> str:
    """A median step: ``1,500``, ``7.5`` (between two logged steps), or ``not reached``."""
    return "not reached" if s != s else f"{s:,.0f}" if s == int(s) else f"{s:,.1f}"


def _spacing(rows: pd.DataFrame) -> int:
    """The smallest gap between the steps at which a metric was logged."""
    return int(np.diff(np.sort(rows.step.unique())).min())
