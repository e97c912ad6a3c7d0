"""The PacGAN mode metrics on hand-made sample sets."""

import jax
import numpy as np
import pytest

from jaxdyn.data.synthetic import mixture
from jaxdyn.gan import mode_metrics


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_all_samples_on_one_mode(name):
    centers, std = mixture(name)
    rng = np.random.default_rng(0)
    samples = centers[3] + std * rng.normal(size=(2500, 2)) * 0.5  # well inside 3 std
    m = {k: float(v) for k, v in mode_metrics(samples, centers, std).items()}
    assert m["modes"] == 1 and m["high_quality"] == 1.0
    np.testing.assert_allclose(m["reverse_kl"], np.log(len(centers)), rtol=1e-6)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_spread_evenly_over_every_mode(name):
    centers, std = mixture(name)
    per_mode = 100
    samples = np.repeat(centers, per_mode, axis=0) + std * np.tile([[1.0, -1.0]], (len(centers) * per_mode, 1))
    m = {k: float(v) for k, v in mode_metrics(samples, centers, std).items()}
    assert m["modes"] == len(centers) and m["high_quality"] == 1.0
    assert abs(m["reverse_kl"]) < 1e-6


def test_far_off_noise_covers_nothing_and_a_mix_counts_only_good_samples():
    centers, std = mixture("ring")
    far = np.random.default_rng(1).uniform(5, 9, size=(2500, 2))
    m = {k: float(v) for k, v in mode_metrics(far, centers, std).items()}
    assert m["modes"] == 0 and m["high_quality"] == 0 and np.isnan(m["reverse_kl"])
    # Half the samples on two modes (one just inside 3 std, one just outside), half far off.
    inside = centers[0] + np.array([2.9 * std, 0.0])
    outside = centers[1] + np.array([3.1 * std, 0.0])
    samples = np.concatenate([np.repeat([inside], 1000, 0), np.repeat([outside], 250, 0), far[:1250]])
    m = {k: float(v) for k, v in mode_metrics(samples, centers, std).items()}
    assert m["modes"] == 1 and m["high_quality"] == pytest.approx(0.4)
    np.testing.assert_allclose(m["reverse_kl"], np.log(8), rtol=1e-6)


def test_mode_metrics_run_vmapped_per_member():
    centers, std = mixture("ring")
    one = centers[np.arange(800) % 8] + 0.1 * std
    collapsed = np.repeat(centers[:1], 800, 0)
    out = jax.jit(jax.vmap(lambda s: mode_metrics(s, centers, std)))(np.stack([one, collapsed]))
    np.testing.assert_array_equal(np.asarray(out["modes"]), [8, 1])
