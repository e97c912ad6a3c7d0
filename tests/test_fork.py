"""Forks (``[init] from = RUN``): members start from a trained member's bits, with their own
seeds and hyperparameters; a parent that does not fit is refused before anything compiles."""

import chex
import jax
import numpy as np
import pytest

import jaxdyn
from jaxdyn.checkpoint import load_state
from jaxdyn.population import make_mesh, plan_layout
from jaxdyn.runner import CohortPrograms
from jaxdyn.study import expand
from jaxdyn.config import load_config

PARENT = {"study": {"name": "parent", "seeds": 3}, "data": {"name": "digits"}, "model": {"hidden": [16]},
          "optim": {"name": "adam", "learning_rate": 0.01},
          "train": {"steps": 60, "batch_size": 32, "chunk_steps": 20, "log_every": 10, "eval_every": 1,
                    "checkpoint_every": 1}}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("fork") / "parent"
    jaxdyn.run(PARENT, out=out, progress=False, summary=False)
    return out


def child(parent, **init):
    return {**PARENT, "study": {"name": "child", "seeds": 4}, "init": {"from": str(parent), **init}}


def start_state(cfg):
    cohort = expand(load_config(cfg))[0]
    mesh = make_mesh()
    layout = plan_layout(len(cohort.members), mesh.size, 0, "cpu")
    return jax.device_get(CohortPrograms.build(cohort, layout, mesh).start()), len(cohort.members)


def rows(tree, index):
    return jax.tree.map(lambda a: np.asarray(a)[index], tree)


@pytest.mark.parametrize("step, chunks", [(-1, 3), (40, 2)])
def test_every_child_starts_from_the_parent_members_bits(parent, step, chunks):
    init = {"member": 1} | ({"step": step} if step >= 0 else {})
    state, k = start_state(child(parent, **init))
    saved = load_state(parent, 0, chunks)
    for i in range(k):
        chex.assert_trees_all_equal(rows(state.params, i), rows(saved["params"], 1))
    # Fresh optimizer state and step count; the children's own data seeds (0..3), not the parent's.
    assert np.all(np.asarray(state.opt_state.inner_state[0].count) == 0) and np.all(state.step == 0)
    assert len({tuple(np.asarray(d)) for d in state.data_key[:k]}) == k


def test_a_fork_at_step_0_starts_from_the_parent_members_initial_bits(parent):
    """No checkpoint holds step 0: the parent's initial state comes from its seeds, as its run
    made it (compared with the parent's own population initialisation)."""
    state, k = start_state(child(parent, member=2, step=0))
    want, _ = start_state(PARENT)
    for i in range(k):
        chex.assert_trees_all_equal(rows(state.params, i), rows(want.params, 2))


def test_keep_optimizer_carries_the_moments_and_members_all_maps_one_to_one(parent):
    state, k = start_state({**child(parent, members="all", keep_optimizer=True), "study": {"seeds": 3}})
    saved = load_state(parent)
    assert k == 3
    chex.assert_trees_all_equal(rows(state.params, slice(0, 3)), rows(saved["params"], slice(0, 3)))
    mu, count = state.opt_state.inner_state[0].mu, state.opt_state.inner_state[0].count
    chex.assert_trees_all_equal(rows(mu, slice(0, 3)), rows(saved["opt_state"]["inner_state"][0]["mu"], slice(0, 3)))
    np.testing.assert_array_equal(np.asarray(count)[:3], 60)


def test_a_fork_trains_on_from_where_the_parent_was(parent, tmp_path):
    """The first training window of a fork has the parent's late loss, far below a fresh start's."""
    got = jaxdyn.run(child(parent, member=0), out=tmp_path / "child", progress=False, summary=False)
    loss = got.frame("train_loss")
    first_child = loss[loss.step == 10].value.mean()
    parent_loss = jaxdyn.load(parent).frame("train_loss")
    assert first_child < parent_loss[parent_loss.step == 10].value.mean() - 0.5
    assert abs(first_child - parent_loss[parent_loss.step == 60].value.mean()) < 0.3


@pytest.mark.parametrize("change, message", [
    ({"model": {"hidden": [8]}}, r"params\['head'\]\['kernel'\] there is float32\[16, 10\], this study's member has float32\[8, 10\]"),
    ({"optim": {"name": "sgd"}, "keep": True}, "use the parent's optimizer, or keep_optimizer = false"),
    ({"step": 20}, "keeps checkpoints at steps 0, 40, 60 only"),
    ({"member": 7}, "has no member 7"),
    ({"members": "some"}, "the only choice is \"all\""),
])
def test_a_parent_that_does_not_fit_is_refused_before_compiling(parent, tmp_path, change, message):
    init = {"member": 0}
    if "step" in change or "member" in change:
        init |= change
        change = {}
    if "members" in change:
        init = {"members": change.pop("members")}
    if change.pop("keep", False):
        init["keep_optimizer"] = True
    with pytest.raises(jaxdyn.ConfigError, match=message):
        jaxdyn.run({**child(parent, **init), **change}, out=tmp_path / "x", progress=False, summary=False)
    assert not (tmp_path / "x").exists()


def test_dry_run_says_where_a_fork_starts(parent, tmp_path, capsys):
    import tomli_w

    from jaxdyn.cli import main

    (tmp_path / "child.toml").write_text(tomli_w.dumps(child(parent, member=2, step=40)))
    assert main(["run", str(tmp_path / "child.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"init: every member starts from member 2 of {parent} at step 40 (parameters and model state" in out
