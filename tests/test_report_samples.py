"""``samples.png``: which steps are shown, the labels, pages past PER_PAGE members, and each data kind drawn."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxdyn.report.samples import PER_PAGE, member_labels, plot_samples, shown_steps
from jaxdyn.tables import sample_rows


def test_shown_steps_spread_evenly_and_keep_the_last():
    assert shown_steps([100, 200, 300, 400, 500, 600, 700, 800]) == [100, 300, 600, 800]
    assert shown_steps([200, 100, 200]) == [100, 200]
    assert shown_steps([5]) == [5]


def members_table(k: int) -> pd.DataFrame:
    return pd.DataFrame({"member": np.arange(k), "cohort": 0, "init_seed": np.arange(k) % 3,
                         "d_learning_rate": np.where(np.arange(k) < k // 2, 1e-3, 1e-4),
                         "final_modes": np.arange(k) % 9, "final_high_quality": 0.5,
                         "diverged_at": np.where(np.arange(k) == 1, 700, -1)})


def test_labels_name_settings_seed_modes_and_divergence():
    labels = member_labels(members_table(4))
    assert labels[0] == "member 0\nd_learning_rate=0.001\nseed 0\nmodes 0, high quality 0.5"
    assert labels[1].endswith("diverged at 700") and "d_learning_rate=0.001" in labels[1]


def rows(k: int, shape, steps=(500, 1000)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    d = int(np.prod(shape))
    return pd.concat([sample_rows(rng.normal(size=(k, 16, d)), np.arange(k), 0, s) for s in steps],
                     ignore_index=True)


def test_points_images_and_curves_are_drawn_and_pages_split(tmp_path):
    centers = np.array([[1.0, 0.0], [0.0, 1.0]])
    k = PER_PAGE + 3
    written = plot_samples(members_table(k), rows(k, (2,)), (2,), tmp_path / "samples.png", centers)
    assert [p.name for p in written] == ["samples.png", "samples_2.png"]
    first, second = (plt.imread(p) for p in written)
    assert first.shape[0] > 5 * second.shape[0]  # 24 rows against 3
    for shape in ((8, 8), (40,)):
        (path,) = plot_samples(members_table(2), rows(2, shape), shape, tmp_path / f"s{len(shape)}.png")
        assert plt.imread(path)[..., :3].std() > 0.05


def test_a_member_without_samples_at_a_step_gets_a_marked_empty_panel(tmp_path):
    table = rows(2, (2,))
    table = table[~((table.member == 1) & (table.step == 1000))]  # diverged before its last evaluation
    (path,) = plot_samples(members_table(2), table, (2,), tmp_path / "samples.png")
    assert plt.imread(path)[..., :3].std() > 0.05
