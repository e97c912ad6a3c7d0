import jaxdyn  # noqa: F401  (first: gives XLA one CPU device per core before jax starts)

import chex
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

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


def assert_within_a_step(got, want, want_before, within=0.5):
    """``got`` is the same training as ``want``, ran by another compiled program, up to float rounding.

    ``want`` is the reference after T steps and ``want_before`` after T - 1 (for a loss curve:
    the curve and the curve one step later). Two compilations (vmapped or not, other group sizes,
    plain optax) round differently in the last bit, and training amplifies that by an amount that
    depends on the machine: an eps-sized perturbation of the init stays ~1 eps relative for 100
    Adam steps of the 40-32-10 MLP, until a ReLU pre-activation within rounding of 0 switches sign in
    one program only; that moves one sample's contribution through one unit, ~1/batch of an update,
    and the runs then stay ~0.04 of one step apart (measured). So the tolerance is the scale the
    computation itself gives, the reference's own last step, normwise over the whole tree: half a
    step leaves room for a dozen such switches, while a member that is a step behind or ahead, has
    another learning rate, seed or batch order, or is mixed with another member, is a step or more
    away and fails.
    """
    flat = lambda tree: np.asarray(ravel_pytree(tree)[0], np.float64)
    got, want, want_before = flat(got), flat(want), flat(want_before)
    step = np.linalg.norm(want - want_before)
    assert np.all(np.isfinite(got)) and step > 0, (got, step)
    off = np.linalg.norm(got - want)
    assert off <= within * step, f"{off:.3g} from the reference, {off / step:.3g} of its last step ({step:.3g})"


def assert_same_curve(got, want, want_next, within=0.5):
    """A logged curve ``got`` against the reference curve ``want`` of another program: closer to it
    than ``want_next`` (the reference one logged step later) is, by ``within``; see
    ``assert_within_a_step``. Per-step losses move by the batch-to-batch spread each step, ~0.1;
    the rounding of another compilation moves them by ~1e-4 of that."""
    assert_within_a_step(got, want, want_next, within)
