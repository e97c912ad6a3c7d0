"""A value in the wrong place is named briefly: an array passed where a path or a number belongs
makes a message of one line, naming the argument or field, not megabytes of repr."""

import numpy as np
import pytest

import jaxdyn
from jaxdyn.errors import BRIEF, brief

BIG = np.zeros((1000, 40), np.float32)


def test_brief_shows_arrays_by_shape_and_cuts_long_values():
    assert brief(BIG) == "<ndarray float32[1000, 40]>"
    assert brief("abc") == "'abc'" and brief(3) == "3"
    long = brief("x" * 5000)
    assert long.startswith("'xxx") and "(str, 5002 characters)" in long and len(long) < BRIEF + 40


@pytest.mark.parametrize("call, field", [
    (lambda: jaxdyn.run(BIG, progress=False, summary=False), "config = <ndarray float32[1000, 40]>"),
    (lambda: jaxdyn.run(out=BIG, progress=False, summary=False), "out = <ndarray float32[1000, 40]>"),
    (lambda: jaxdyn.run(resume=BIG, progress=False, summary=False), "resume = <ndarray"),
    (lambda: jaxdyn.load(BIG), "run_dir = <ndarray"),
    (lambda: jaxdyn.extract_member(BIG, 0), "run_dir = <ndarray"),
    (lambda: jaxdyn.write_report(BIG), "run_dir = <ndarray"),
    (lambda: jaxdyn.run({"train": {"steps": BIG}}, progress=False, summary=False), "train.steps = <ndarray"),
    (lambda: jaxdyn.run({"optim": {"name": "x" * 3000}}, progress=False, summary=False), "(str, 3002 characters)"),
])
def test_a_value_in_the_wrong_place_is_named_in_one_short_line(call, field):
    with pytest.raises(jaxdyn.ConfigError) as err:
        call()
    message = str(err.value)
    assert field in message and len(message) < 400 and "\n" not in message, message
