"""GAN studies from a config: [task] kind = "gan", the [gan] section, its axes and its messages."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.config import load_config, to_toml
from jaxdyn.study import expand

from conftest import assert_same_run

GAN = {"study": {"seeds": 2}, "task": {"kind": "gan"}, "data": {"name": "ring"},
       "gan": {"g_learning_rate": 1e-3, "g_b1": 0.5, "d_b1": 0.5,
               "generator": {"hidden": [64, 64]}, "discriminator": {"hidden": [64, 64]}},
       "train": {"steps": 2000, "batch_size": 100, "chunk_steps": 1000, "log_every": 100}}
NO_PROBES = {"norms": {"every": 0}, "activations": {"every": 0}}  # where a test is not about them: fewer compiles


def test_a_gan_study_on_the_ring(tmp_path):
    cfg = {**GAN, "grid": {"gan.loss": ["non_saturating", "least_squares"], "gan.d_learning_rate": [1e-3, 3e-4]},
           "train": {**GAN["train"], "eval_every": 1}, "probes": NO_PROBES}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    m = res.members
    assert len(m) == 2 * 2 * 2 and sorted(m["gan.loss"].unique()) == ["least_squares", "non_saturating"]
    assert {"g_learning_rate", "d_learning_rate", "g_b1", "d_b1", "gp_weight", "final_modes",
            "final_high_quality", "final_reverse_kl"} <= set(m.columns)
    assert m.final_modes.mean() > 2, m.final_modes  # a collapsed generator covers one mode
    assert (m.diverged_at == -1).all()
    metrics = set(res.metrics.metric)
    assert {"train_d_loss", "train_g_loss", "test_modes", "test_high_quality", "test_reverse_kl"} <= metrics
    assert not any(m.startswith(("g_", "d_")) for m in metrics)  # probes off (test_gan_probes runs them)
    assert list(res.summary().columns[-3:]) == ["modes_mean", "modes_std", "diverged"]
    assert np.allclose(m.groupby("member").g_learning_rate.first(), 1e-3)
    # What each member generates, at every evaluation: 256 points each, and their picture.
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert list(samples.columns) == ["cohort", "member", "step", "sample", "x0", "x1"]
    assert sorted(samples.step.unique()) == [0, 1000, 2000] and (samples.groupby(["member", "step"]).size() == 256).all()
    final = samples[samples.step == 2000]
    assert abs(np.hypot(final.x0, final.x1).median() - 1) < 0.2  # the generators have found the unit ring
    image = plt.imread(tmp_path / "run" / "samples.png")
    assert image.shape[0] > 8 * 100 and image[..., :3].std() > 0.05  # a row per member, and not blank
    # The report shows the GAN's curves, modes against the learning rate, and the sample grids.
    report = jaxdyn.write_report(tmp_path / "run")
    assert report.failed == {} and report.views == ["summary", "curves", "hparams", "other", "samples", "members"]
    assert [p.name for p in report.images] == ["curves.png", "final_vs_hparams.png", "other_metrics.png",
                                               "samples.png"]  # other: the reverse KL
    assert (tmp_path / "run" / "report" / "samples.png").read_bytes() in [p.read_bytes() for p in report.images]
    page = report.path.read_text()
    assert "Final modes per setting" in page and "modes_mean" in page and "ensemble" not in page


def test_gan_config_round_trips_through_toml():
    cfg = load_config({**GAN, "gan": {**GAN["gan"], "loss": "hinge", "n_critic": 2, "gp_weight": 5.0}})
    again = load_config(__import__("tomllib").loads(to_toml(cfg)))
    assert again == cfg and again.gan.n_critic == 2 and dict(again.gan.hparams)["gp_weight"] == 5.0
    assert again.member_hparams()["d_learning_rate"] == 1e-3  # Adam's default for the other player


@pytest.mark.parametrize("change, message", [
    ({"task": {"kind": "supervised"}}, "[gan] is set but task.kind is not \"gan\""),
    ({"gan": {"loss": "wgan"}}, "gan.loss = 'wgan' is not known; did you mean 'wgan_gp'?"),
    ({"gan": {"g_learnin_rate": 1e-3}}, "gan.g_learnin_rate is not a number of this GAN; did you mean 'g_learning_rate'?"),
    ({"gan": {"d_b1": 1.5}}, "gan.d_b1 = 1.5: must lie in [0, 1)"),
    ({"gan": {"n_critic": 0}}, "gan.n_critic = 0: must be >= 1"),
    ({"gan": {"d_optim": "adamm"}}, "gan.d_optim = 'adamm' is not known; did you mean 'adam'?"),
    ({"gan": {"generator": {"hiden": [8]}}}, "gan.generator.hiden is not a field of model kind 'mlp'"),
    ({"gan": {"loss": "wgan_gp", "discriminator": {"norm": "batch"}}}, "WGAN-GP's per-sample gradient penalty"),
    ({"grid": {"gan.gp_weight": [1.0, -1.0]}}, "gan.gp_weight = -1.0: must be >= 0"),
    ({"grid": {"gan.d_learning_rate": [1e-3, -1.0]}}, "gan.d_learning_rate = -1.0: must be >= 0"),
])
def test_bad_gan_settings_fail_before_compiling(change, message):
    cfg = {**GAN, **{k: v for k, v in change.items() if k != "gan"}}
    if "gan" in change:
        cfg["gan"] = {**GAN["gan"], **change["gan"]}
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config(cfg))
    assert message in str(err.value), str(err.value)


def test_an_interrupted_gan_study_resumes_bitwise(tmp_path):
    import pandas as pd
    import tomli_w

    from test_runs import _start, sigterm_and_resume

    cfg = {**GAN, "study": {"name": "gan", "seeds": 2}, "probes": NO_PROBES,
           "train": {"steps": 1500, "batch_size": 100, "chunk_steps": 250, "log_every": 50, "checkpoint_every": 1}}
    (tmp_path / "gan.toml").write_text(tomli_w.dumps(cfg))
    whole = _start(["gan.toml", "--out", "whole"], tmp_path)
    out, _ = whole.communicate()
    assert whole.returncode == 0, out
    sigterm_and_resume(["gan.toml", "--out", "cut"], tmp_path, "cut")
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    pd.testing.assert_frame_equal(*(pd.read_parquet(tmp_path / run / "samples.parquet") for run in ("cut", "whole")),
                                  check_exact=True)
