"""Aggregates over seeds: mean ± std, median with interquartile range, and the interquartile
mean (IQM) with a stratified-bootstrap confidence interval.

The IQM and its interval follow rliable (Agarwal et al. 2021, "Deep Reinforcement
Learning at the Edge of the Statistical Precipice"): the IQM is the mean of the
middle 50% of all scores (25% trimmed from each end, as ``scipy.stats.trim_mean``);
the interval is the percentile interval of the IQM over bootstrap resamples that
draw runs with replacement within each task (stratum) separately, so every task
keeps its number of runs. Here a "task" is a column of ``scores [runs, tasks]``: one
setting's seeds when settings are pooled, or a single column for one setting.
"""

import numpy as np
from scipy.stats import trim_mean

AGGREGATES = {
    "mean_std": "mean ± one standard deviation over seeds",
    "median_iqr": "median, and the 25th to 75th percentiles",
    "iqm": "interquartile mean with a 95% stratified-bootstrap confidence interval (rliable)",
}
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0


def iqm(scores) -> float:
    """The mean of the middle half of all ``scores`` (any shape)."""
    return float(trim_mean(np.asarray(scores, np.float64).reshape(-1), 0.25))


def stratified_bootstrap_ci(scores, statistic=iqm, reps: int = BOOTSTRAP_REPS, size: float = 0.95,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over resamples of ``scores [runs, tasks]`` (or ``[runs]``)
    in which each task's runs are drawn with replacement from that task's own runs."""
    scores = np.asarray(scores, np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = scores[picks, np.arange(tasks)]  # [reps, runs, tasks]
    if statistic is iqm:  # vectorised: the same trimmed mean for every resample at once
        values = trim_mean(resampled.reshape(reps, -1), 0.25, axis=1)
    else:
        values = np.array([statistic(r) for r in resampled])
    tail = (1 - size) / 2
    return float(np.percentile(values, 100 * tail)), float(np.percentile(values, 100 * (1 - tail)))


def aggregate(scores, how: str = "mean_std") -> tuple[float, float, float]:
    """``(centre, low, high)`` of ``scores``: NaN (diverged or missing) entries are left out."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate = {how!r}: use one of {', '.join(AGGREGATES)}")
    values = np.asarray(scores, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    if how == "mean_std":
        mean, std = values.mean(), values.std(ddof=1) if values.size > 1 else 0.0
        return (float(mean), float(mean - std), float(mean + std))
    if how == "median_iqr":
        low, median, high = np.percentile(values, [25, 50, 75])
        return (float(median), float(low), float(high))
    return (iqm(values), *stratified_bootstrap_ci(values))
