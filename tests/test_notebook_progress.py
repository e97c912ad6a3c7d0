"""The notebook's progress bar: one HTML line per cohort, redrawn in place through a display handle."""

import re
from types import SimpleNamespace

import numpy as np

from jaxdyn.progress import NotebookProgress
from jaxdyn.report.samples import covered


class Handle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, obj):
        self.shown.append(obj._repr_html_())


def test_bar_is_redrawn_in_place_with_steps_and_alive_members():
    shown, handles = [], []

    def display(obj, display_id=False):
        assert display_id is True  # a handle, so the same cell output is redrawn rather than appended
        shown.append(obj._repr_html_())
        handles.append(Handle(shown))
        return handles[-1]

    cohort = SimpleNamespace(index=0, members=[0] * 6, settings={"model.init": "he_normal"},
                             config=SimpleNamespace(train=SimpleNamespace(steps=1000)))
    with NotebookProgress(2, display) as bar:
        bar.start_cohort(cohort, None, 0)
        bar.advance(500, 1234.0, 6)
        bar.advance(500, 1500.0, 5)
    assert len(handles) == 1  # displayed once, then updated
    last = shown[-1]
    assert '<progress value="1000" max="1000"' in last
    assert "cohort 1/2 model.init=he_normal: step 1,000/1,000, 1,500 member-steps/s" in last
    assert "alive 5/6" in last
    assert re.search(r'<progress value="500" max="1000"', shown[1])


def test_mode_coverage_marks_by_three_standard_deviations():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = np.array([[0.5, 0.0], [6.9, 0.0], [0.0, 12.9]])  # 0.5, 3.1 and 2.9 std from modes 0, 1, 2
    np.testing.assert_array_equal(covered(samples, centers, 1.0), [True, False, True])
