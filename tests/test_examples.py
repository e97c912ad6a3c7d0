"""Every shipped example study is valid: it loads, expands and builds its models without compiling."""

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdyn.config import load_config
from jaxdyn.study import expand
from jaxdyn.tasks.supervised import Seeds

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


def test_the_catalogue_is_there():
    names = {p.stem for p in EXAMPLES}
    assert {"mnist1d_linear", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru", "activation_init", "optimizers",
            "batchnorm_dropout", "l2_sweep", "lr_schedules"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_expands_and_builds(path):
    cohorts = expand(load_config(path))
    for cohort in cohorts:
        seeds = Seeds(*(jax.ShapeDtypeStruct((), np.int32) for _ in Seeds._fields))
        hparams = {h: jax.ShapeDtypeStruct((), np.float32) for h in cohort.hparam_names}
        jax.eval_shape(cohort.task().init, seeds, hparams)  # shapes only: no compile


def test_paper_architectures():
    head = lambda name: expand(load_config(EXAMPLES[0].parent / f"mnist1d_{name}.toml"))[0]
    for name, features in (("cnn", 125), ("gru", 480), ("linear", 40), ("mlp", 100)):
        cohort = head(name)
        seeds = Seeds(*(jax.ShapeDtypeStruct((), np.int32) for _ in Seeds._fields))
        hparams = {h: jax.ShapeDtypeStruct((), np.float32) for h in cohort.hparam_names}
        state = jax.eval_shape(cohort.task().init, seeds, hparams)
        assert state.params["head"]["kernel"].shape == (features, 10), name
        assert len(cohort.members) == 8
