"""``model.init`` is a member choice: a grid over the initialiser makes members of one cohort, each
initialised with its own scheme inside the one compiled init, bitwise as that scheme alone would."""

import json
import re
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.checkpoint import load_state
from jaxdyn.cli import main
from jaxdyn.config import load_config, to_toml
from jaxdyn.errors import ConfigError
from jaxdyn.results import varying_settings
from jaxdyn.rundir import load_run_config, run_info
from jaxdyn.study import expand

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCHEMES = ["zeros", "orthogonal", "he_normal", "uniform"]
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}
QUIET = {"progress": False, "summary": False}
# One small study of each model kind whose kernels the initialiser draws.
KINDS = {
    "mlp": ({"kind": "mlp", "hidden": [12, 6]}, {}),
    "cnn": ({"kind": "cnn", "channels": [4], "kernels": [3], "strides": [1], "padding": [1], "hidden": [6]}, {}),
    "rnn": ({"kind": "rnn", "cell": "lstm", "hidden_size": 6}, {"name": "adding", "seq_len": 5}),
    "transformer": ({"kind": "transformer", "d_model": 8, "heads": 2}, {"name": "adding", "seq_len": 5}),
}


class OwnInit(nn.Module):
    """A module of the user's own that names its initialiser in a field of its own."""

    kernel_init: str = "zeros"
    n_out: int = 10

    @nn.compact
    def __call__(self, x, *, train=False, hparams=None):
        init = nn.initializers.zeros if self.kernel_init == "zeros" else nn.initializers.lecun_normal()
        return nn.Dense(self.n_out, kernel_init=init)(x.reshape(x.shape[0], -1))


def study(model, data=None, **grid):
    return {"study": {"seeds": 2}, "model": model, "data": data or {"name": "mnist1d"}, "probes": NO_PROBES,
            "train": {"steps": 4, "chunk_steps": 2, "log_every": 1, "batch_size": 8}, "grid": grid}


def initial_state(cohort, mesh):
    """The cohort's members as the run initialises them (``population.make_init``), on the host."""
    layout = pop.plan_layout(len(cohort.members), mesh.size, 0, "cpu")
    seeds, hparams = cohort.member_arrays(partial(pop.pad_members, layout=layout))
    return jax.device_get(pop.init_population(cohort.task(), seeds, hparams, mesh))


def test_a_grid_over_the_initialiser_is_one_cohort():
    cohorts = expand(load_config(EXAMPLES / "activation_init.toml"))
    assert len(cohorts) == 4  # one per activation; 24 when each initialiser was its own cohort
    assert [c.settings for c in cohorts] == [{"model.activation": a} for a in ("relu", "tanh", "sigmoid", "gelu")]
    members = cohorts[0].members
    assert len(members) == 6 * 4 and list(members["init"]) == [s for s in
        ["zeros", "normal", "glorot_uniform", "he_normal", "lecun_normal", "orthogonal"] for _ in range(4)]
    _, hparams = cohorts[0].member_arrays(lambda a: a)
    assert hparams["init"].dtype == np.int32 and list(hparams["init"]) == [i for i in range(6) for _ in range(4)]
    # A cohort of one scheme carries no index: its program is exactly what it was.
    plain = expand(load_config(study({"kind": "mlp", "hidden": [8], "init": "orthogonal"})))
    assert list(plain[0].members["init"]) == ["orthogonal"] * 2
    assert "init" not in plain[0].member_arrays(lambda a: a)[1]
    with pytest.raises(ConfigError, match=r"model.init = 'he_norml' is not known.*he_normal"):
        expand(load_config(study({"kind": "mlp"}, **{"model.init": ["zeros", "he_norml"]})))


@pytest.mark.parametrize("kind", KINDS)
def test_each_member_initialises_bitwise_as_its_scheme_alone(kind, mesh):
    model, data = KINDS[kind]
    schemes = SCHEMES if kind == "mlp" else ["orthogonal", "uniform"]  # the QR one, and one of jaxdyn's own
    scales = {"model.init_scale": [1.0, 0.5]}
    (mixed,) = expand(load_config(study(model, data, **{"model.init": schemes}, **scales)))
    state = initial_state(mixed, mesh)
    for scheme in schemes:
        (alone,) = expand(load_config(study({**model, "init": scheme}, data, **scales)))
        solo = initial_state(alone, mesh)
        for i, row in enumerate(alone.members.itertuples()):
            j = mixed.members.index[(mixed.members["init"] == scheme) & (mixed.members.init_seed == row.init_seed)
                                    & (mixed.members.init_scale == row.init_scale)][0]
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[j], b[i]), state.params, solo.params)
        assert set(state.hparams) == set(solo.hparams)  # the index is read at init, never kept in a member's state


def test_the_dry_run_compiles_per_activation_not_per_initialiser(capsys, tmp_path):
    cfg = study({"kind": "mlp", "hidden": [8]}, **{"model.activation": ["relu", "tanh"], "model.init": SCHEMES})
    (tmp_path / "study.toml").write_text(to_toml(load_config(cfg)))
    assert main(["run", str(tmp_path / "study.toml"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    # 8 cohorts and 24 programs when each initialiser made its own cohort.
    assert re.search(r"2 cohorts, 16 members \(\d+ with padding\), 6 programs to compile", printed), printed


def test_a_mixed_cohort_trains_as_its_solo_runs_and_its_table_names_each_scheme(tmp_path):
    schemes = ["zeros", "orthogonal", "he_normal"]
    model = {"kind": "mlp", "hidden": [16]}
    res = jaxdyn.run(study(model, **{"model.init": schemes}), out=tmp_path / "mixed", **QUIET)
    members = pd.read_csv(tmp_path / "mixed" / "members.csv")
    assert list(members["init"]) == [s for s in schemes for _ in range(2)] and members.cohort.nunique() == 1
    assert "init" in varying_settings(members)
    assert sorted(res.summary()["init"]) == sorted(schemes)
    mixed = load_state(tmp_path / "mixed", 0)
    for scheme in schemes:
        jaxdyn.run(study({**model, "init": scheme}), out=tmp_path / scheme, **QUIET)
        solo = load_state(tmp_path / scheme, 0)
        rows = np.flatnonzero(members["init"] == scheme)
        assert int(np.asarray(mixed["step"])[rows[0]]) == 4
        # Member i of a population equals its solo run within float tolerance (DESIGN.md).
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[rows], b[:2], rtol=1e-5, atol=1e-6),
                     mixed["params"], solo["params"])
    member = jaxdyn.extract_member(tmp_path / "mixed", 3)  # orthogonal, seed 1: its own scheme, alone
    assert member.config.model.init == "orthogonal" and member.model.kernel_init == ("orthogonal",)


def test_a_module_of_your_own_keeps_its_initialiser_structural():
    kind = f"{__name__}:OwnInit"
    cohorts = expand(load_config(study({"kind": kind}, **{"model.kernel_init": ["zeros", "lecun"]})))
    assert [c.settings for c in cohorts] == [{"model.kernel_init": "zeros"}, {"model.kernel_init": "lecun"}]
    assert "init" not in cohorts[0].members
    with pytest.raises(ConfigError, match="module of your own, which draws its own weights.*field for it"):
        load_config(study({"kind": kind}, **{"model.init": ["zeros", "lecun_normal"]}))


def test_a_gan_keeps_each_players_own_initialiser(mesh):
    players = {"generator": {"hidden": [8], "init": "orthogonal"}, "discriminator": {"hidden": [8], "init": "zeros"}}
    cfg = {**study({"kind": "mlp"}, {"name": "ring"}), "task": {"kind": "gan"}, "gan": players}
    (cohort,) = expand(load_config(cfg))
    assert "init" not in cohort.members  # the [gan] players' tables are not grid axes
    state = initial_state(cohort, mesh)
    assert not np.any(state.params["discriminator"]["hidden_0"]["kernel"])
    kernel = state.params["generator"]["hidden_0"]["kernel"][0]  # [2, 8]: orthonormal rows
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(2), atol=1e-5)


def test_a_run_folder_written_before_keeps_its_cohorts_per_initialiser(tmp_path):
    cfg = load_config(study({"kind": "mlp", "hidden": [8]}, **{"model.init": SCHEMES}))
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    (tmp_path / "run.json").write_text(json.dumps({"n_devices": 1}))  # no "member_choices": an older jaxdyn's
    old = load_run_config(tmp_path)
    cohorts = expand(old)
    assert [c.settings for c in cohorts] == [{"model.init": s} for s in SCHEMES] and "init" not in cohorts[0].members
    assert [list(c.members.member) for c in cohorts] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # the ids it wrote
    assert "member_choices" not in run_info(old)  # so its checkpoints' record of the layout still matches
    assert run_info(cfg)["member_choices"] == ["model.init"]
    (tmp_path / "run.json").write_text(json.dumps({"n_devices": 1, "member_choices": ["model.init"]}))
    assert len(expand(load_run_config(tmp_path))) == 1
