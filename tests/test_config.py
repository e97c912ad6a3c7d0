"""Bad input fails before compiling, names the field and the fix, and leaves no run folder."""

import dataclasses
import os

import numpy as np
import pytest

import jaxdyn
from jaxdyn import population, study
from jaxdyn.config import ConfigError, load_config, to_dict, to_toml
from jaxdyn.data import DATASETS, Dataset, dataset_info, fixed
from jaxdyn.models import MODELS

TINY = {
    "study": {"name": "t", "seeds": 2},
    "model": {"hidden": [8]},
    "train": {"steps": 10, "batch_size": 8, "chunk_steps": 5, "log_every": 5},
}


@pytest.fixture
def no_compile(monkeypatch):
    """Anything that reaches the population layer is a failure of these tests."""
    def boom(*a, **k):
        raise AssertionError("reached compilation")

    monkeypatch.setattr(population, "init_population", boom)
    monkeypatch.setattr(population, "make_train_chunk", boom)
    monkeypatch.setattr(study, "check_memory", boom)  # it compiles the programs (test_memory.py)


def with_(section, **values):
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.mark.parametrize("cfg, message", [
    (with_("optim", learning_rat=0.1), "did you mean 'learning_rate'"),
    (with_("train", step=10), "unknown key train.step; did you mean 'steps'"),
    (with_("modle"), "unknown config section [modle]; did you mean 'model'"),
    (with_("optim", learning_rate=-1e-3), "optim.learning_rate = -0.001: must be >= 0"),
    (with_("optim", name="adam", eps=0.0), "optim.eps = 0.0: must be > 0"),
    (with_("optim", learning_rate=float("nan")), "optim.learning_rate = nan: must be a finite number"),
    (with_("optim", b1=1.5), "optim.b1 = 1.5: must lie in [0, 1)"),
    (with_("optim", momentum=0.9), "optim.momentum is not a number of optimizer 'adam' with schedule 'constant'"),
    (with_("study", seeds=0), "study.seeds = 0: must be >= 1"),
    (with_("study", seeds=-3), "study.seeds = -3: must be >= 1"),
    (with_("study", seeds=[1, 1]), "repeats a seed setting"),
    (with_("train", batch_size=5000), "train.batch_size = 5000 is larger than the mnist1d training set (4000 examples)"),
    (with_("train", steps=12), "train.steps = 12 is not a multiple of train.chunk_steps = 5"),
    (with_("train", steps="ten"), "train.steps = 'ten': expected an integer"),
    (with_("model", activation="relux"), "model.activation = 'relux' is not known; did you mean 'relu'"),
    (with_("optim", name="adamm"), "optim.name = 'adamm' is not known; did you mean 'adam'"),
    (with_("grid", **{"optim.learning_rate": []}), "grid axis 'optim.learning_rate' is empty"),
    (with_("grid", **{"optim.learnin_rate": [0.1]}), "did you mean 'optim.learning_rate'"),
    (with_("grid", **{"optim.learning_rate": [1e-3, -1.0]}), "optim.learning_rate = -1.0: must be >= 0"),
    (with_("grid", **{"optim.momentum": [0.9]}), "grid axis 'optim.momentum' is not a number of optimizer 'adam' with schedule 'constant'"),
    (with_("grid", **{"optim.learning_rate": [0.1, 0.1]}), "grid axis 'optim.learning_rate' repeats a value"),
    (with_("grid", **{"model.hidden": [[8], "wide"]}), "grid.\"model.hidden\" value = 'wide': expected a list of integers"),
    (with_("optim", learning_rate=1e-50), "optim.learning_rate = 1e-50: is below float32's smallest normal"),
    (with_("optim", eps=1e-40), "optim.eps = 1e-40: is below float32's smallest normal"),
    (with_("grid", **{"optim.learning_rate": [0.1, 0.10000000001]}), "repeats a value"),
    (with_("study", name="../escape"), "study.name = '../escape': it names the run folder"),
    (with_("optim", learning_rate=1e39), "optim.learning_rate = 1e+39: overflows float32"),
    (with_("study", seeds=[[3]]), "study.seeds entry [3]"),
    (with_("study", seeds=2**31), "at most 1,000,000 seeds"),
    ({**TINY, "optim": "adam"}, "[optim] must be a table"),
])
def test_bad_config_names_field_and_fix(cfg, message, tmp_path, no_compile):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        jaxdyn.run(cfg, out=out, progress=False)
    assert message in str(err.value)
    assert not out.exists()


def test_large_learning_rate_is_valid_input():
    load_config(with_("optim", learning_rate=1e4))  # diverging is a result, not an error


def test_unwritable_output_folder(tmp_path, no_compile):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits; use a file in the way instead
        locked.chmod(0o700)
        pytest.skip("running as root: permission bits do not block writes")
    with pytest.raises(ConfigError, match="not writable"):
        jaxdyn.run(TINY, out=locked / "a" / "run", progress=False)
    assert not (locked / "a").exists()


def test_file_blocked_output_folder(tmp_path, no_compile):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ConfigError, match="choose another --out folder"):
        jaxdyn.run(TINY, out=blocker / "run", progress=False)
    with pytest.raises(ConfigError, match="is a file"):
        jaxdyn.run(TINY, out=blocker, progress=False)
    assert blocker.read_text() == "a file where a folder should be"


def test_non_empty_output_folder(tmp_path, no_compile):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        jaxdyn.run(TINY, out=tmp_path, progress=False)


def test_a_folder_in_use_is_refused_before_compiling(tmp_path, no_compile):
    from jaxdyn import rundir

    out = tmp_path / "run"
    out.mkdir()
    holder = rundir._Lock(out / rundir.LOCK_NAME)
    try:
        with pytest.raises(jaxdyn.RunInUse, match=f"{out} is in use by process {os.getpid()}"):
            jaxdyn.run(TINY, out=out, progress=False)
    finally:
        holder.release()
    assert [p.name for p in out.iterdir()] == [rundir.LOCK_NAME]


@pytest.mark.parametrize("damage, message", [
    (lambda info: {**info, "n_devices": info["n_devices"] + 1}, "it ran on {n} cpu device(s), this process has"),
    (lambda info: {**info, "n_processes": 2}, "it ran as 2 process(es) and this run has 1"),
    (lambda info: {"versions": {}}, "run.json is missing or damaged"),
], ids=["devices", "processes", "damaged"])
def test_a_resume_that_cannot_continue_is_refused_before_compiling(tmp_path, no_compile, damage, message):
    import json

    from jaxdyn import rundir

    cfg = load_config(TINY)
    info = damage(rundir.run_info(cfg))
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    (tmp_path / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError) as err:
        jaxdyn.run(resume=tmp_path, progress=False)
    assert message.format(n=info.get("n_devices")) in str(err.value)


def test_a_dangling_link_and_an_unopenable_lock_are_refused_before_compiling(tmp_path, no_compile):
    import json

    from jaxdyn import rundir

    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=f"link to {tmp_path / 'nowhere'}, which does not exist; create that"):
        jaxdyn.run(TINY, out=tmp_path / "link", progress=False)
    run = tmp_path / "run"  # a lock that cannot be opened for writing (a read-only disk; here a folder)
    (run / rundir.LOCK_NAME).mkdir(parents=True)
    cfg = load_config(TINY)
    (run / "config.toml").write_text(to_toml(cfg))
    (run / "run.json").write_text(json.dumps(rundir.run_info(cfg)))
    with pytest.raises(ConfigError, match=f"output folder {run} is not writable .*make it writable to resume it"):
        jaxdyn.run(resume=run, progress=False)


def test_a_full_disk_says_to_free_space(tmp_path, no_compile, monkeypatch):
    import errno

    from jaxdyn import atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", full)
    with pytest.raises(ConfigError, match="not writable \\(No space left on device\\); free space on that disk, or "
                                          "choose another --out folder"):
        jaxdyn.run(TINY, out=tmp_path / "run", progress=False)


def test_nan_data_fails_before_run_folder(tmp_path, monkeypatch, no_compile):
    def nan_data():
        x = np.zeros((4000, 40), np.float32)
        x[7, 3] = np.nan
        return Dataset(x, np.zeros(4000, np.int32), np.zeros((1000, 40), np.float32), np.zeros(1000, np.int32))

    monkeypatch.setitem(DATASETS, "mnist1d", fixed(nan_data, dataset_info("mnist1d"), "NaN"))
    with pytest.raises(ConfigError, match="x_train holds 1 non-finite values"):
        jaxdyn.run(TINY, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_unreadable_config_files(tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b"[study]\nname = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match="not a valid UTF-8 TOML file"):
        load_config(tmp_path / "latin1.toml")
    with pytest.raises(ConfigError, match="is a folder; give a .toml file"):
        load_config(tmp_path)


def test_overrides_and_round_trip():
    cfg = load_config(TINY, ["optim.learning_rate=0.01", "model.activation=tanh",
                             "grid.optim.b1=[0.8, 0.9]", "model.hidden=[4, 4]"])
    assert dict(cfg.optim.hparams) == {"learning_rate": 0.01}
    assert cfg.model.activation == "tanh" and cfg.model.hidden == (4, 4)
    assert cfg.grid == (("optim.b1", (0.8, 0.9)),)
    assert load_config(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="write section.key=value"):
        load_config(TINY, ["learning_rate=0.1"])


def test_default_study_is_the_documented_one(tmp_path):
    cfg = load_config()
    assert cfg.model.hidden == (100, 100) and cfg.model.activation == "relu"
    assert cfg.optim.name == "adam" and cfg.train.batch_size == 100 and cfg.train.steps == 6000
    assert cfg.grid == (("optim.learning_rate", (1e-3, 3e-3, 1e-2, 3e-2)),)
    assert cfg.seed_pairs() == [(s, s) for s in range(8)]
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


def test_grid_values_are_coerced():
    raw = with_("grid", **{"model.hidden": [16, [8, 8]], "optim.learning_rate": [1, 0.5]})
    del raw["model"]
    cfg = load_config(raw)
    assert dict(cfg.grid) == {"model.hidden": ((16,), (8, 8)), "optim.learning_rate": (1.0, 0.5)}
    assert load_config(to_dict(cfg)) == cfg  # the saved form round-trips


def test_value_and_grid_axis_on_one_key():
    both = with_("optim", learning_rate=0.5)
    both["grid"] = {"optim.learning_rate": [1e-3, 1e-2]}
    with pytest.raises(ConfigError, match="optim.learning_rate is set in \\[optim\\] and is also a grid axis"):
        load_config(both)
    # An override is the last word: a value replaces the axis, an axis replaces the value.
    cfg = load_config(None, ["optim.learning_rate=0.05"])
    assert cfg.grid == () and dict(cfg.optim.hparams) == {"learning_rate": 0.05}
    cfg = load_config(TINY, ["model.hidden=[4]", "grid.model.hidden=[[2], [3]]"])
    assert cfg.grid == (("model.hidden", ((2,), (3,))),)


def test_seed_forms():
    assert load_config(with_("study", seeds=[3, 5])).seed_pairs() == [(3, 3), (5, 5)]
    assert load_config(with_("study", seeds=[[0, 1], [1, 0]])).seed_pairs() == [(0, 1), (1, 0)]


def test_output_folder_on_read_only_filesystem(no_compile):
    # /proc refuses new folders even to root.
    with pytest.raises(ConfigError, match="output folder /proc/jaxdyn_test/run is not writable"):
        jaxdyn.run(TINY, out="/proc/jaxdyn_test/run", progress=False)


def test_member_state_bytes_is_the_closed_form_count():
    from jaxdyn import memory, study

    cohort = study.expand(load_config(TINY))[0]
    n_params = (40 * 8 + 8) + (8 * 10 + 10)
    # Adam keeps params, mu and nu; the rest is scalars: step, alive, diverged_at, two keys
    # of 2 words (data, dropout), two counts (Adam's and inject_hyperparams') and 5 injected
    # hyperparameters (learning_rate, b1, b2, eps, and optax's own eps_root); then
    # MemberState.hparams: Adam's 4 and the 10 others (label_noise, noise_std, l1, l2,
    # label_smoothing, init_scale, dropout, leaky_slope, grad_clip, ema_decay).
    assert memory.member_state_bytes(cohort) == 3 * 4 * n_params + 4 + 1 + 4 + 2 * 8 + 2 * 4 + 5 * 4 + 14 * 4


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_set_model_kind_switches_the_default_study_for_every_kind(kind, capsys):
    from jaxdyn.study import expand

    cfg = load_config(None, [f"model.kind={kind}"])
    assert cfg.model.kind == kind
    out = capsys.readouterr().out
    takes = {f.name for f in dataclasses.fields(MODELS[kind].config)}
    for field in {"hidden", "activation"} - takes:  # the MLP's fields the new kind lacks leave, and it says so
        assert "left out" in out and field in out
    if MODELS[kind].generates:
        with pytest.raises(ConfigError, match="generates examples"):
            expand(cfg)
    else:
        assert len(expand(cfg)) == 1


def test_report_help_prints_help(capsys):
    from jaxdyn.cli import main

    with pytest.raises(SystemExit) as done:
        main(["report", "--help"])
    assert done.value.code == 0 and "95% stratified-bootstrap" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("options, least", [(["probes.cka.debiased=true"], 4), (["probes.cka.every=1"], 2)])
def test_cka_refuses_a_probe_batch_it_is_undefined_on(options, least):
    from jaxdyn.study import expand

    with pytest.raises(ConfigError, match=f"probes.cka needs probes.batch_size >= {least}"):
        expand(load_config(None, [f"probes.batch_size={least - 1}", *options]))


@pytest.mark.parametrize("steps, chunk, log_every, rounds", [
    (200, 49, 10, 7), (200, 49, 1, 1), (200, 49, 10, 1), (6000, 500, 100, 1), (12, 5, 1, 1), (40, 20, 10, 5),
    (1000, 300, 20, 25), (7, 3, 1, 2)])
def test_a_chunk_steps_fix_keeps_every_rule_at_once(steps, chunk, log_every, rounds):
    """The suggested chunk divides the steps and is a multiple of log_every and of a federated round's
    local steps (a fix for one rule used to break another: 49 for local_steps 7 with 200 steps, or 1
    for log_every 10); where no divisor can be, the suggested steps and chunk keep them all."""
    import re

    from jaxdyn.errors import chunk_steps_fix

    text = chunk_steps_fix(steps, chunk, log_every, rounds)
    ok = lambda s, c: s % c == 0 and c % log_every == 0 and c % rounds == 0
    if (m := re.fullmatch(r"set train.chunk_steps = (\d+)", text)):
        c = int(m[1])
        assert ok(steps, c)
        assert all(abs(d - chunk) >= abs(c - chunk) for d in range(1, steps + 1) if ok(steps, d))  # the nearest
    else:
        assert not any(ok(steps, d) for d in range(1, steps + 1))
        s, c = map(int, re.search(r"set train.steps = (\d+) and train.chunk_steps = (\d+)", text).groups())
        assert ok(s, c) and s >= steps
