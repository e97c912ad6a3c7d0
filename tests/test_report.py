"""Learning-curve plot: the drawn lines are the per-setting mean over seeds."""

import numpy as np
import pandas as pd

from jaxdyn.report import plot_curves


def test_curves_plot_mean_over_seeds(tmp_path):
    members = pd.DataFrame({
        "member": [0, 1, 2, 3], "cohort": 0, "init_seed": [0, 1, 0, 1], "data_seed": [0, 1, 0, 1],
        "learning_rate": [0.1, 0.1, 0.01, 0.01], "final_test_accuracy": 0.5, "diverged_at": [-1, -1, -1, 5],
    })
    rows = []
    for member, base in enumerate([1.0, 3.0, 10.0, 20.0]):
        for step in (5, 10):
            loss = base / step if not (member == 3 and step == 10) else np.nan  # member 3 diverged
            rows += [(0, member, step, "train_loss", loss), (0, member, step, "test_loss", 2 * base),
                     (0, member, step, "test_accuracy", base / 100)]
    metrics = pd.DataFrame(rows, columns=["cohort", "member", "step", "metric", "value"])
    fig = plot_curves(members, metrics, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    train = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines}
    np.testing.assert_allclose(train["learning_rate=0.1"], [(1 + 3) / 2 / 5, (1 + 3) / 2 / 10])
    # The diverged member leaves the mean where its loss is NaN.
    np.testing.assert_allclose(train["learning_rate=0.01"], [(10 + 20) / 2 / 5, 10 / 10])
    acc = {line.get_label(): line.get_ydata() for line in fig.axes[2].lines}
    np.testing.assert_allclose(acc["learning_rate=0.01"], [0.15, 0.15])
