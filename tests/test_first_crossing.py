"""``first_crossing`` and ``time_to``: when each member first reached a value, and per setting over
seeds, on hand-made tables whose answers are known; and the report summary's time-to-learn table."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxdyn.analysis import Results
from jaxdyn.report.data import ReportData
from jaxdyn.report.time_to import _step, shared_threshold, time_to_learn

NAN = math.nan
STEPS = (10, 20, 30, 40)
# member -> test_accuracy at STEPS; members 0-2 have learning_rate 0.1, 3-5 have 0.01.
TEST_ACCURACY = {
    0: (0.2, 0.5, 0.95, 0.97),   # exactly at 0.95 at step 30
    1: (0.1, 0.96, NAN, 0.99),   # reaches at 20; the NaN after is no matter
    2: (0.1, 0.2, 0.3, 0.4),     # never
    3: (0.1, NAN, NAN, NAN),     # diverged: NaN never counts
    # 4: no test_accuracy rows at all
    5: (0.99, 0.99, 0.99, 0.99),  # at the first step
}
TRAIN_LOSS = {m: (2.0, 0.5, 0.01, 0.001) for m in range(6)} | {3: (2.0, NAN, NAN, NAN), 2: (2.0, 1.0, 0.9, 0.8)}


def members() -> pd.DataFrame:
    k = np.arange(6)
    return pd.DataFrame({"member": k, "cohort": 0, "init_seed": k % 3, "data_seed": k % 3, "dropout_seed": k % 3,
                         "learning_rate": np.where(k < 3, 0.1, 0.01), "b1": 0.9,
                         "final_train_loss": 0.1, "final_test_loss": 0.5, "final_test_accuracy": 0.9,
                         "diverged_at": np.where(k == 3, 20, -1)})


def metric_rows(values: dict, metric: str, layer: str = "", dtype=np.float32) -> pd.DataFrame:
    rows = [(0, m, s, metric, layer, v) for m, vs in values.items() for s, v in zip(STEPS, vs)]
    frame = pd.DataFrame(rows, columns=["cohort", "member", "step", "metric", "layer", "value"])
    return frame.astype({"value": dtype})


def results(dtype=np.float32, extra=()) -> Results:
    metrics = pd.concat([metric_rows(TEST_ACCURACY, "test_accuracy", dtype=dtype),
                         metric_rows(TRAIN_LOSS, "train_loss", dtype=dtype),
                         metric_rows({0: (1.0, 2.0, 3.0, 4.0)}, "grad_norm", layer="hidden_0", dtype=dtype),
                         *extra], ignore_index=True)
    return Results(Path("/nonexistent/run"), members(), metrics)


def steps_of(table: pd.DataFrame) -> list:
    return [None if math.isnan(s) else s for s in table.step]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_first_logged_step_at_or_past_the_threshold(dtype):
    table = results(dtype).first_crossing("test_accuracy", 0.95)
    # One row per member, in member order, with the varying settings and the seed, as frame gives them.
    assert list(table.columns) == ["member", "learning_rate", "init_seed", "step"]
    assert table.member.tolist() == list(range(6)) and table.step.dtype == np.float64
    # 0: exactly at 0.95 counts (a float32 0.95 too); 1: 20; 2: never; 3: only NaN after; 4: no rows; 5: the first.
    assert steps_of(table) == [30, 20, None, None, None, 10]
    # Not interpolated: between 0.5 at step 20 and 0.95 at step 30, 0.9 is first logged at 30.
    assert results(dtype).first_crossing("test_accuracy", 0.9).step[0] == 30
    # Just above a value is not reached by it.
    assert steps_of(results(dtype).first_crossing("test_accuracy", 0.991)) == [None] * 6


def test_below_and_a_layer():
    r = results()
    assert steps_of(r.first_crossing("train_loss", below=0.01)) == [30, 30, None, None, 30, 30]
    assert steps_of(r.first_crossing("train_loss", below=2.0)) == [10, 10, 10, 10, 10, 10]
    assert steps_of(r.first_crossing("grad_norm", 2.5, layer="hidden_0")) == [30, None, None, None, None, None]


def test_the_median_over_the_seeds_that_reached_it_and_how_many_did():
    r = results()
    table = r.time_to("test_accuracy", 0.95)
    assert list(table.columns) == ["cohort", "learning_rate", "step_median", "reached"]
    by_rate = table.set_index("learning_rate")
    assert by_rate.loc[0.1, "step_median"] == 25 and by_rate.loc[0.1, "reached"] == "2/3"  # 30 and 20
    assert by_rate.loc[0.01, "step_median"] == 10 and by_rate.loc[0.01, "reached"] == "1/3"
    never = r.time_to("test_accuracy", 0.999)
    assert never.step_median.isna().all() and never.reached.tolist() == ["0/3", "0/3"]
    assert r.time_to("test_accuracy", 0.95, aggregate="max").set_index("learning_rate").step_max[0.1] == 30
    assert r.time_to("train_loss", below=0.01, aggregate="min").step_min.tolist() == [30, 30]
    pooled = r.time_to("test_accuracy", 0.95, by=[], aggregate="mean")
    assert list(pooled.columns) == ["step_mean", "reached"] and pooled.reached[0] == "3/6"
    assert pooled.step_mean[0] == pytest.approx(20)
    by_seed = r.time_to("test_accuracy", 0.95, by=["init_seed"])
    assert by_seed.reached.tolist() == ["1/2", "1/2", "1/2"] and by_seed.step_median.tolist() == [30, 20, 10]


def test_errors_say_what_to_give():
    r = results()
    with pytest.raises(KeyError, match="no 'val_accuracy' rows .*metrics: grad_norm, test_accuracy, train_loss"):
        r.first_crossing("val_accuracy", 0.9)
    with pytest.raises(KeyError, match="for layer 'hidden_9'"):
        r.first_crossing("grad_norm", 1.0, layer="hidden_9")
    with pytest.raises(ValueError, match="exactly one of threshold .* and below=.*neither was given"):
        r.first_crossing("train_loss")
    with pytest.raises(ValueError, match="both were given"):
        r.first_crossing("train_loss", 0.5, below=0.1)
    with pytest.raises(ValueError, match="threshold = nan"):
        r.first_crossing("train_loss", NAN)
    with pytest.raises(ValueError, match="neither was given"):
        r.time_to("train_loss")
    with pytest.raises(ValueError, match="aggregate = 'iqm': use one of median, mean, min, max"):
        r.time_to("train_loss", below=0.1, aggregate="iqm")
    with pytest.raises(KeyError, match=r"by = \['lr'\]: not columns of members.csv"):
        r.time_to("train_loss", below=0.1, by=["lr"])
    with pytest.raises(KeyError, match="no 'val_loss' rows"):
        r.time_to("val_loss", below=0.1)


def report_data(r: Results) -> ReportData:
    empty = pd.DataFrame()
    return ReportData(r.run_dir, r, empty, empty, empty, empty, {}, None, True, "mean_std", ["learning_rate"])


def test_the_shared_threshold_is_half_way_from_the_lowest_value_to_the_best_final_value():
    rows = metric_rows({0: (0.1, 0.3, 0.5, 0.4), 1: (0.2, NAN, 0.9, 0.8), 2: (0.3, NAN, NAN, NAN)}, "a")
    # lowest 0.1, best last finite value 0.8 (member 1; member 0 ended at 0.4): 0.45, floored to 3 digits.
    assert shared_threshold(rows) == pytest.approx(0.45, abs=1e-6)
    assert shared_threshold(metric_rows({0: (0.1234, 0.5, 0.6, 0.7)}, "a")) == 0.411  # 0.4117 floored
    assert math.isnan(shared_threshold(metric_rows({0: (0.5, 0.5, 0.4, 0.3)}, "a")))  # nothing rose


def test_the_report_summary_shows_the_time_to_each_accuracy():
    train = {m: (0.2, 0.4 + 0.1 * (m >= 3), 0.8, 1.0) for m in range(6)}
    test_once = pd.DataFrame([(0, m, 40, "test_accuracy", "", 0.9) for m in range(6)],
                             columns=["cohort", "member", "step", "metric", "layer", "value"])
    r = results(extra=[metric_rows(train, "train_accuracy")])
    caption, table = time_to_learn(report_data(r))
    # train: from 0.2 to 1.0, half-way 0.6 (first at 30 for every member); test: 0.1 to 0.99, 0.545.
    assert list(table.columns) == ["learning_rate", "train accuracy ≥ 0.6: median step", "train: reached",
                                   "test accuracy ≥ 0.545: median step", "test: reached"]
    assert table["train accuracy ≥ 0.6: median step"].tolist() == ["30", "30"]
    assert table.learning_rate.tolist() == [0.01, 0.1]  # sorted, as the summary table
    assert table["test accuracy ≥ 0.545: median step"].tolist() == ["10", "25"]  # member 5; members 1 and 0
    assert table["test: reached"].tolist() == ["1/3", "2/3"]
    assert "50% of the way" in caption and "Not shown" not in caption
    assert [_step(s) for s in (7.5, 1500.0, NAN)] == ["7.5", "1,500", "not reached"]  # a median between two steps
    # Test accuracy evaluated once (at the end) says nothing about when: left out, and the caption says so.
    r = Results(r.run_dir, r.members, pd.concat([r.metrics[r.metrics.metric != "test_accuracy"], test_once]))
    caption, table = time_to_learn(report_data(r))
    assert [c for c in table.columns if c.startswith("test")] == []
    assert "Not shown: test accuracy, logged at only 1 step (train.eval_every" in caption
    # One setting split into parts (train.max_members_per_program) with nothing varying: the summary
    # groups by nothing, and the two accuracies' one-row tables stand side by side (a merge failed).
    one = r.members.assign(learning_rate=0.1, part=[0, 0, 0, 1, 1, 1])
    trained = Results(r.run_dir, one, pd.concat([r.metrics[r.metrics.metric != "test_accuracy"],
                                                 metric_rows(TEST_ACCURACY, "test_accuracy")]))
    caption, table = time_to_learn(ReportData(r.run_dir, trained, *[pd.DataFrame()] * 4, {}, None, True, "mean_std", []))
    assert list(table.columns) == ["train accuracy ≥ 0.6: median step", "train: reached",
                                   "test accuracy ≥ 0.545: median step", "test: reached"]
    assert table["train: reached"].tolist() == ["6/6"] and table["test: reached"].tolist() == ["3/6"]
    # No accuracy (regression): no table at all.
    regression = r.members.assign(final_test_accuracy=NAN)
    assert time_to_learn(report_data(Results(r.run_dir, regression, r.metrics))) is None
