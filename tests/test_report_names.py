"""What the report and the end-of-run table call things: layer order, metric words, the input-blind
baseline, shared settings, the headline metric and an 80-column table."""

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from jaxdyn.data.arrays import Dataset
from jaxdyn.report.data import input_blind_scores
from jaxdyn.report.names import describe, layer_order
from jaxdyn.results import print_summary, summarize, with_final


@pytest.mark.parametrize("names, expected", [
    (["head", "hidden_0", "hidden_1"], ["hidden_0", "hidden_1", "head"]),  # alphabetical puts head first
    (["head", "conv_1", "hidden_0", "conv_0", "conv_10", "conv_2"],
     ["conv_0", "conv_1", "conv_2", "conv_10", "hidden_0", "head"]),  # numeric, not string, order
    (["block_1", "attn_1", "mlp_0", "attn_0", "embed", "head", "block_0", "mlp_1", "ln_final"],
     ["embed", "attn_0", "mlp_0", "block_0", "attn_1", "mlp_1", "block_1", "ln_final", "head"]),
    (["layer_1", "head", "layer_0"], ["layer_0", "layer_1", "head"]),
])
def test_layers_run_from_input_to_output(names, expected):
    assert layer_order(names) == expected


def test_a_models_own_creation_order_wins_when_it_names_every_layer():
    assert layer_order(["out", "b", "a"], model_order=["b", "a", "out"]) == ["b", "a", "out"]
    # a name the model did not create (sown elsewhere): the stages order them all
    assert layer_order(["head", "hidden_0", "x"], model_order=["hidden_0", "head"]) == ["hidden_0", "x", "head"]


def test_metric_titles_are_words_with_the_name_beside():
    assert describe("test_loss", "cross-entropy") == "Test loss (cross-entropy)\ntest_loss"
    assert describe("g_dead_frac") == "Generator dead units (fraction)\ng_dead_frac"
    assert describe("d_grad_norm") == "Discriminator gradient norm\nd_grad_norm"
    assert describe("test_accuracy", "cross-entropy") == "Test accuracy\ntest_accuracy"  # not a loss: no objective
    assert describe("my_metric") == "my_metric"


def _data(y, y_test):
    y, y_test = np.asarray(y), np.asarray(y_test)
    return Dataset(np.zeros((len(y), 1), np.float32), y, np.zeros((len(y_test), 1), np.float32), y_test)


def test_input_blind_baseline_by_hand():
    # regression: predict the training mean 2; ½·mean((2−2)², (6−2)²) = ½·8 = 4
    assert input_blind_scores(_data(np.array([[1.0], [3.0]]), np.array([[2.0], [6.0]])), True) == {"test_loss": 4.0}
    # classes: frequencies (2/3, 1/3); test labels 0, 1; majority class 0 is right on half
    got = input_blind_scores(_data([0, 0, 1], [0, 1]), False)
    assert got["test_loss"] == pytest.approx(-(np.log(2 / 3) + np.log(1 / 3)) / 2)
    assert got["test_accuracy"] == 0.5


def _members(n_settings=3, seeds=2):
    rows = []
    for s in range(n_settings):
        for seed in range(seeds):
            rows.append({"member": len(rows), "cohort": 0, "init_seed": seed, "data_seed": seed, "dropout_seed": seed,
                         "g_learning_rate": 10.0 ** -(s + 2), "d_learning_rate_multiplier": 2.0 ** s, "b1": 0.9,
                         "final_train_loss": 1.0, "final_test_loss": 1.0 + s, "final_test_accuracy": 0.5 + 0.1 * s,
                         "diverged_at": -1})
    return pd.DataFrame(rows)


def _metrics(members):
    rows = [(m, step, "sharpness", "", float(m * 10 + step)) for m in members.member for step in (100, 200)]
    return pd.DataFrame(rows, columns=["member", "step", "metric", "layer", "value"])


def test_headline_from_the_metrics_is_each_members_last_value():
    members = _members()
    final = with_final(members, _metrics(members), "sharpness")
    np.testing.assert_array_equal(final.final_sharpness, members.member * 10 + 200.0)
    table = summarize(final, metric="sharpness")
    first = final[final.g_learning_rate == 1e-2].final_sharpness
    assert table.sharpness_mean.iloc[-1] == pytest.approx(first.mean())  # the largest rate sorts last
    with pytest.raises(ValueError, match="logged no whole-model 'modes'.*sharpness"):
        with_final(members, _metrics(members), "modes")


def test_end_of_run_table_fits_80_columns_without_cutting_names():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    members = _members()
    print_summary(members, console, metrics=_metrics(members), metric="sharpness")
    text = out.getvalue()
    flat = text
    assert "…" not in flat
    assert max(len(line) for line in flat.splitlines()) <= 80
    for part in ("g_learning_", "d_learning_", "multiplier", "final sharpness over seeds"):
        assert part in flat
    # a headline the run did not log is said, and the task's own is shown
    out = io.StringIO()
    print_summary(members, Console(file=out, width=80), metrics=_metrics(members), metric="modes")
    assert "logged no whole-model 'modes'" in out.getvalue() and "final test accuracy" in out.getvalue()


def test_one_seed_shows_its_value_without_a_spread():
    """The standard deviation of one seed does not exist (pandas: NaN); the table shows the value
    alone rather than "± 0", which reads as seeds that agreed."""
    out = io.StringIO()
    one = _members(seeds=1)
    print_summary(one, Console(file=out, width=100, force_terminal=False, color_system=None))
    text = out.getvalue()
    assert "±" not in text and "0.5 " in text and "0.6 " in text
    out = io.StringIO()
    print_summary(_members(), Console(file=out, width=100, force_terminal=False, color_system=None))
    assert "0.5 ± 0" in out.getvalue()  # two seeds that agree: a spread of 0, shown


def test_one_evaluation_is_a_point_with_its_spread_and_its_own_tick():
    from matplotlib.figure import Figure

    from jaxdyn.explore import draw_metric

    frame = pd.DataFrame({"member": [0, 1, 2, 3], "step": [40] * 4, "value": [0.5, 0.6, 0.7, 0.9], "lr": [1, 1, 2, 2]})
    ax = Figure().subplots()
    assert draw_metric(ax, frame, "test_accuracy", ["lr"], "mean_std") == ["lr=1", "lr=2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["40"]  # not an offset axis around 40
    bars = [c for c in ax.containers]
    assert len(bars) == 2
    # the error bar spans mean ± std (pandas' sample std, as the aggregate): lr=2 is 0.8 ± 0.1414
    (segments,) = bars[1].lines[2]
    np.testing.assert_allclose(segments.get_segments()[0][:, 1], [0.8 - np.std([0.7, 0.9], ddof=1),
                                                                  0.8 + np.std([0.7, 0.9], ddof=1)])
    assert [t.get_text() for t in ax.texts] == ["0.55", "0.8"]


def test_a_zero_at_step_0_keeps_a_log_colour_scale_and_draws_as_its_floor():
    from matplotlib.colors import LogNorm

    from jaxdyn.report.probe_views import _for_norm, _norm

    grid = np.array([[0.0, 1.0, 100.0], [0.0, 2.0, np.nan]])  # distance from init: 0 at step 0
    norm = _norm(grid.ravel())
    assert isinstance(norm, LogNorm) and (norm.vmin, norm.vmax) == (1.0, 100.0)
    drawn = _for_norm(grid, norm)
    np.testing.assert_array_equal(drawn[:, 0], [1.0, 1.0])
    assert np.isnan(drawn[1, 2])  # no value stays no value (grey)
    assert not isinstance(_norm(np.array([-1.0, 1.0, 100.0])), LogNorm)


def test_end_of_run_values_keep_their_line_when_they_fit_and_are_never_cut():
    """At 80 columns each "mean ± std" stays on one line (headers wrap after underscores and dots);
    at 50, where the values cannot all keep their width, they fold but nothing is cut off."""
    members = pd.DataFrame({"member": range(8), "cohort": [0] * 4 + [1] * 4,
                            "model.activation": ["relu"] * 4 + ["tanh"] * 4, "init_seed": [0, 1] * 4,
                            "data_seed": [0, 1] * 4, "dropout_seed": [0, 1] * 4,
                            "learning_rate": [0.001, 0.001, 0.003, 0.003] * 2,
                            "final_train_loss": [1.0] * 8, "final_test_loss": [2.0] * 8,
                            "final_test_accuracy": [0.26, 0.35, 0.52, 0.61, 0.25, 0.39, 0.61, 0.81],
                            "diverged_at": [-1] * 8})
    cells = {f"{m:.4g} ± {s:.2g}" for m, s in members.groupby(["model.activation", "learning_rate"])
             .final_test_accuracy.agg(["mean", "std"]).itertuples(index=False)}
    for width in (80, 50):
        out = io.StringIO()
        print_summary(members, Console(file=out, width=width, force_terminal=False, color_system=None))
        lines = out.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width and "…" not in out.getvalue()
        row_ends = [line.rstrip().rsplit("│", 2)[-2].strip() for line in lines if line.rstrip().endswith("│")]
        assert "0" in row_ends  # the last column (diverged) is there on every row: nothing cropped
        if width == 80:
            assert all(any(cell in line for line in lines) for cell in cells), out.getvalue()
            assert any("model." in line for line in lines) and any("activation" in line for line in lines)
