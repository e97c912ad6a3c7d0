"""On-device augmentation: per member and step, repeatable, what it claims to be, absent in evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.data import Augment, load_dataset

from conftest import make_task, member_arrays


def batch_key(data_seed: int, step: int):
    return jax.random.fold_in(jax.random.PRNGKey(data_seed), step)  # as the train step derives it


def test_shift_rolls_each_example_within_range_per_member_and_step():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 40, 2)), jnp.float32)
    aug = Augment(shift=3)
    out = np.asarray(aug(x, batch_key(0, 5), jnp.float32(0)))
    shifts = []
    for e, o in zip(np.asarray(x), out):
        match = [s for s in range(-3, 4) if np.array_equal(np.roll(e, s, axis=0), o)]
        assert len(match) == 1
        shifts.append(match[0])
    assert set(shifts) == set(range(-3, 4))  # every offset occurs in 64 draws
    np.testing.assert_array_equal(out, aug(x, batch_key(0, 5), jnp.float32(0)))  # same seed and step: same
    assert not np.array_equal(out, aug(x, batch_key(0, 6), jnp.float32(0)))  # another step
    assert not np.array_equal(out, aug(x, batch_key(1, 5), jnp.float32(0)))  # another member


def test_noise_has_the_member_std():
    x = jnp.zeros((200, 40), jnp.float32)
    out = np.asarray(Augment(noise=True)(x, batch_key(0, 0), jnp.float32(0.3)))
    assert abs(out.std() - 0.3) < 0.01 and abs(out.mean()) < 0.01
    np.testing.assert_array_equal(Augment(noise=True)(x, batch_key(0, 0), jnp.float32(0.0)), x)


def test_crop_and_flip_are_windows_of_the_padded_image_mirrored_half_the_time():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(100, 8, 8, 1)), jnp.float32)
    out = np.asarray(Augment(crop=2, flip=True)(x, batch_key(3, 1), jnp.float32(0)))
    flips = 0
    for e, o in zip(np.asarray(x), out):
        padded = np.pad(e, ((2, 2), (2, 2), (0, 0)))
        windows = [(i, j, f) for i in range(5) for j in range(5) for f in (False, True)
                   if np.array_equal(o, (padded[i:i + 8, j:j + 8][:, ::-1] if f else padded[i:i + 8, j:j + 8]))]
        assert windows, "each output is a crop of the padded image, perhaps mirrored"
        flips += windows[0][2]
    assert 30 <= flips <= 70  # about half, well inside 4 std of Binomial(100, 1/2)


def test_augmentation_is_in_training_steps_only(dataset, mesh):
    plain = make_task()
    noisy = make_task().__class__(**{**plain.__dict__, "augment": Augment(shift=2, noise=True)})
    seeds, hp = member_arrays("adam", [0, 1], [0, 1], noise_std=0.5)
    data = pop.replicate(dataset, mesh)
    state = pop.init_population(plain, seeds, hp, mesh)
    # Evaluation sees the data as it is: identical scores from both tasks.
    a = pop.make_evaluate(plain, mesh)(state, data.x_test, data.y_test)
    b = pop.make_evaluate(noisy, mesh)(state, data.x_test, data.y_test)
    np.testing.assert_array_equal(a["loss"], b["loss"])
    # A training step sees augmented inputs: another gradient.
    after_plain, _ = pop.make_train_chunk(plain, 1, 1, 1, mesh)(state, data)
    after_noisy, _ = pop.make_train_chunk(noisy, 1, 1, 1, mesh)(pop.init_population(plain, seeds, hp, mesh), data)
    assert not np.array_equal(after_plain.params["head"]["kernel"], after_noisy.params["head"]["kernel"])


def test_noise_std_is_a_member_axis_and_zero_noise_is_no_noise(tmp_path):
    base = {"study": {"seeds": 1}, "model": {"hidden": [16]},
            "train": {"steps": 40, "batch_size": 32, "chunk_steps": 20, "log_every": 20}}
    res = jaxdyn.run({**base, "grid": {"data.noise_std": [0.0, 1.0]}}, out=tmp_path / "a", progress=False,
                     summary=False)
    solo = jaxdyn.run(base, out=tmp_path / "b", progress=False, summary=False)
    m = res.members.set_index("noise_std")
    assert m.loc[0.0, "final_train_loss"] == solo.members.final_train_loss[0]  # bitwise: the noise adds 0
    assert m.loc[1.0, "final_train_loss"] != m.loc[0.0, "final_train_loss"]


@pytest.mark.parametrize("data, message", [
    ({"name": "digits", "shift": 2}, "data.shift = 2: shifts sequences ([T] or [T, F] examples), but 'digits'"),
    ({"name": "mnist1d", "crop": 2}, "data.crop = 2: augments images ([H, W, C] examples), but 'mnist1d'"),
    ({"name": "mnist1d", "flip": True}, "data.flip = True: augments images"),
    ({"name": "mnist1d", "shift": 40}, "data.shift = 40: must be below the sequence length 40"),
    ({"name": "mnist1d", "noise_std": -1.0}, "data.noise_std = -1.0"),
])
def test_bad_augmentation_settings(data, message):
    from jaxdyn.config import load_config
    from jaxdyn.study import expand

    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config({"data": data}))
    assert message in str(err.value)


def test_a_digits_cnn_trains_with_crop_and_flip(tmp_path):
    cfg = {"study": {"seeds": 1}, "data": {"name": "digits", "crop": 1, "flip": True},
           "model": {"kind": "cnn", "channels": [8], "kernels": [3], "strides": [1], "padding": "same"},
           "train": {"steps": 100, "batch_size": 32, "chunk_steps": 50, "log_every": 50}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    # 10 classes: chance is 0.1. Measured over 8 seeds: 0.612 +- 0.051 (min 0.571); 0.35 <= mean - 5 std.
    assert res.members.final_test_accuracy[0] > 0.35
    assert load_dataset("digits").x_train.shape[1:] == (8, 8, 1)
