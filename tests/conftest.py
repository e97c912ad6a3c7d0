import jaxdyn  # noqa: F401  (first: gives XLA one CPU device per core before jax starts)

import chex
import numpy as np
import pytest

from jaxdyn import population as pop
from jaxdyn.axes import MEMBER_HPARAMS
from jaxdyn.data import load_dataset
from jaxdyn.models import MLP
from jaxdyn.optim import FAMILIES
from jaxdyn.tasks.supervised import Seeds, SupervisedTask



@pytest.fixture(scope="session")
def dataset():
    return load_dataset("mnist1d")


@pytest.fixture(scope="session")
def mesh():
    return pop.make_mesh()


@pytest.fixture(scope="session")
def device_data(dataset, mesh):
    return pop.replicate(dataset, mesh)


def make_task(family="adam", hidden=(32,), batch=32):
    return SupervisedTask(MLP(hidden, 10), FAMILIES[family], batch, (40,))


def member_arrays(family, init_seeds, data_seeds, dropout_seeds=None, **hparams):
    """Seeds and a full hyperparameter dict for K members (K = len(init_seeds))."""
    k = len(init_seeds)
    dropout_seeds = init_seeds if dropout_seeds is None else dropout_seeds
    seeds = Seeds(*(np.asarray(s, np.int32) for s in (init_seeds, data_seeds, dropout_seeds)))
    defaults = {**FAMILIES[family].defaults, **{key.split(".")[1]: h.default for key, h in MEMBER_HPARAMS.items()}}
    hp = {name: np.full(k, v, np.float32) for name, v in defaults.items()}
    for name, values in hparams.items():
        hp[name] = np.broadcast_to(np.asarray(values, np.float32), (k,)).copy()
    return seeds, hp


def traced_once(task):
    """``task`` whose ``step`` fails the test when JAX traces it a second time."""
    import dataclasses

    class TracedOnce(type(task)):
        step = chex.assert_max_traces(type(task).step, n=1)

    return TracedOnce(**{f.name: getattr(task, f.name) for f in dataclasses.fields(task)})


def assert_same_run(got_dir, want_dir):
    """Two run folders hold bit-identical member tables, metrics and checkpointed states."""
    import chex
    import pandas as pd

    from jaxdyn.checkpoint import load_state

    got, want = jaxdyn.load(got_dir), jaxdyn.load(want_dir)
    pd.testing.assert_frame_equal(got.members, want.members, check_exact=True)
    pd.testing.assert_frame_equal(got.metrics, want.metrics, check_exact=True)
    chex.assert_trees_all_equal(load_state(got_dir), load_state(want_dir))
    return got
