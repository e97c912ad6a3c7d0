"""Probes of GAN members: each player apart (metric names ``g_...`` and ``d_...``), checked
against the players' losses written out by hand and differentiated with ``jax.hessian``."""


import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxdyn
from jaxdyn import population as pop
from jaxdyn.data import load_dataset
from jaxdyn.data.synthetic import mixture
from jaxdyn.gan.config import GANConfig
from jaxdyn.gan.task import PROBE_SEED, GANTask, probe_views
from jaxdyn.models import MLP
from jaxdyn.models.mlp import MLPConfig
from jaxdyn.optim import FAMILIES
from jaxdyn.probes import PROBES, ProbesConfig
from jaxdyn.probes.hessian import HessianOptions
from jaxdyn.probes.run import ProbeSet
from test_gan import hparams, seeds

CENTERS, STD = mixture("ring")
N = 64  # the probe batch


def test_each_player_is_probed_against_its_own_loss_with_the_other_fixed(mesh):
    g_net, d_net = MLP((8,), 2, activation="tanh"), MLP((8,), 1, activation="tanh")
    task = GANTask(g_net, d_net, FAMILIES["adam"], FAMILIES["sgd"], (2,), 2, 32, track_updates=True)
    cfg = GANConfig(g_optim="adam", d_optim="sgd", generator=MLPConfig(hidden=(8,), activation="tanh"),
                    discriminator=MLPConfig(hidden=(8,), activation="tanh"))
    hp = {k: v for k, v in hparams(4, d_learning_rate=[0.1, 0.05, 0.02, 0.01]).items() if not k.startswith("d_")
          or k == "d_learning_rate"}
    ring = pop.replicate(load_dataset("ring"), mesh)
    state, metrics = pop.make_train_chunk(task, 10, 5, 2, mesh)(pop.init_population(task, seeds(4), hp, mesh), ring)
    assert set(metrics["g_update_norm"]) == {"hidden_0", "head", ""}  # each player's update norms, from the step
    probes = ProbesConfig(batch_size=N, tables=(("norms", PROBES["norms"].options()),
                                                ("hessian", HessianOptions(iters=40, preconditioned=True))))
    params0 = pop.init_population(task, seeds(4), hp, mesh).params
    rows, _, _ = ProbeSet(probes, probe_views(task, cfg), mesh).measure(state, params0, ring, 1, True, 10, 0,
                                                                        np.arange(4))
    real = jnp.asarray(ring.x_train[:N])
    z = jax.random.normal(jax.random.PRNGKey(PROBE_SEED), (N, 2))
    host = jax.device_get(state)
    for i in (0, 3):  # the fastest and the slowest discriminator
        p = jax.tree.map(lambda a: jnp.asarray(a[i]), host.params)
        g_apply = lambda gp, zz: g_net.apply({"params": gp}, zz, train=False, hparams={"dropout": 0.0})
        d_apply = lambda dp, xx: d_net.apply({"params": dp}, xx, train=False, hparams={"dropout": 0.0})[:, 0]

        def d_loss(dp):  # non-saturating: -log σ(D(x)) - log(1 - σ(D(G(z))))
            return -jnp.mean(jnp.log(jax.nn.sigmoid(d_apply(dp, real)))) - jnp.mean(
                jnp.log(1 - jax.nn.sigmoid(d_apply(dp, g_apply(p["generator"], z)))))

        def g_loss(gp):  # -log σ(D(G(z)))
            return -jnp.mean(jnp.log(jax.nn.sigmoid(d_apply(p["discriminator"], g_apply(gp, z)))))

        for prefix, loss, own in (("d_", d_loss, p["discriminator"]), ("g_", g_loss, p["generator"])):
            got = lambda metric, layer="": rows[(rows.member == i) & (rows.metric == prefix + metric)
                                                & (rows.layer == layer)].value.to_numpy()
            flat, unravel = ravel_pytree(own)
            np.testing.assert_allclose(got("grad_norm"), [jnp.linalg.norm(ravel_pytree(jax.grad(loss)(own))[0])],
                                       rtol=1e-4)
            np.testing.assert_allclose(got("weight_norm", "head"), [jnp.linalg.norm(ravel_pytree(own["head"])[0])], rtol=1e-5)
            top = jnp.linalg.eigvalsh(jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat))[-1]
            np.testing.assert_allclose(got("sharpness"), [top], rtol=2e-3, atol=1e-5)
        # Adam's ν preconditions G; D's SGD has no second moment, so it has no preconditioned row.
        assert len(rows[(rows.member == i) & (rows.metric == "g_preconditioned_sharpness")]) == 1
        assert not len(rows[rows.metric == "d_preconditioned_sharpness"])


def test_every_probe_runs_on_both_players_of_a_gan_study(tmp_path):
    cfg = {"study": {"seeds": 2}, "task": {"kind": "gan"}, "data": {"name": "ring"},
           "gan": {"loss": "wgan_gp", "generator": {"hidden": [16]}, "discriminator": {"hidden": [16]}},
           "train": {"steps": 40, "batch_size": 32, "chunk_steps": 20, "log_every": 10},
           "probes": {"batch_size": 32, "hessian": {"iters": 5, "trace_samples": 2}, "gradient_noise": {},
                      "ntk": {"examples": 8}, "weights": {}, "loss_slices": {"points": 3}, "cka": {},
                      "lmc_barrier": {"alphas": 3}}}
    res = jaxdyn.run(cfg, out=tmp_path / "run", progress=False, summary=False)
    names = set(res.metrics.metric)
    for player in "gd":
        for metric in ("weight_norm", "grad_norm", "update_norm", "update_ratio", "dist_from_init", "act_mean",
                       "sharpness", "hessian_trace", "grad_noise_scale", "ntk_trace", "spectral_norm",
                       "loss_slice_1d"):
            assert f"{player}_{metric}" in names, (player, metric, sorted(names))
    hist = set(__import__("pandas").read_parquet(tmp_path / "run" / "histograms.parquet").metric)
    pairs = set(__import__("pandas").read_parquet(tmp_path / "run" / "pairs.parquet").metric)
    assert hist == {"g_act_hist", "d_act_hist"}
    assert {"g_cka", "d_cka", "g_lmc_barrier", "d_lmc_barrier"} <= pairs
    assert "train_loss" in names and not any(n in names for n in ("weight_norm", "sharpness"))  # no unprefixed rows
    # The report draws both players' probes apart: g_/d_ heatmaps, histograms, curvature, slices, CKA, LMC.
    report = jaxdyn.write_report(tmp_path / "run")
    assert report.failed == {}
    assert report.views == ["summary", "curves", "layers", "activations", "curvature", "landscape", "other",
                            "similarity", "samples", "members"]
    drawn = {p.stem for p in report.images}
    for player in "gd":
        assert {f"layers_{player}_grad_norm", f"hist_{player}_act_hist", f"{player}_loss_slice_1d",
                f"{player}_cka", f"{player}_lmc"} <= drawn, sorted(drawn)
