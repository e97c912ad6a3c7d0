"""A GAN as one population member: generator and discriminator, two optimizers, one state.

Everything here works on ONE member; ``population.py`` vmaps it unchanged, because
a GAN member is an ordinary ``MemberState`` whose ``params`` and ``model_state``
hold ``{"generator": ..., "discriminator": ...}`` and whose ``opt_state`` is the
pair ``(generator's, discriminator's)``. The divergence guard, checkpoints and
resume therefore need nothing new.

Each step makes ``n_critic`` discriminator updates, then one generator update. The
randomness of step t comes from the member's keys folded with t: real batches
from its data key, latent noise (and the gradient penalty's mixing) from its third
seed, which for a GAN is the latent seed (``Seeds.dropout_seed``).

Member hyperparameters carry a player prefix: ``g_learning_rate``, ``g_b1``, ...
for the generator's optimizer family, ``d_...`` for the discriminator's (the
families may differ), and ``gp_weight`` for WGAN-GP's penalty.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdyn import extension, streams
from jaxdyn.data import Dataset, dataset_spec
from jaxdyn.gan.losses import GAN_LOSSES, discriminator_loss, generator_loss, gradient_penalty
from jaxdyn.gan.metrics import class_metrics, mode_metrics
from jaxdyn.models import MODELS, build_model
from jaxdyn.models.layers import SOWN
from jaxdyn.optim import FAMILIES, OptimizerFamily
from jaxdyn.schedules import SCHEDULES
from jaxdyn.streams import Stream
from jaxdyn.probes.base import ProbeView
from jaxdyn.tasks.base import MemberState, Seeds, fresh_state
from jaxdyn.tasks.supervised import layer_norms

EVAL_SEED = 0x6A7  # the latent batch every member is evaluated on: the same for all
PROBE_SEED = 0x6A8  # the latents of the probe batch (and the penalty's mixing there)
PLAYERS = ("generator", "discriminator")


@dataclass(frozen=True)
class GANTask:
    """Training of a generator against a discriminator.

    Attributes:
      generator: maps latents ``[B, latent_dim]`` to ``[B, prod(data_shape)]``.
      discriminator: maps ``[B, *data_shape]`` to ``[B, 1]`` logits (a critic for WGAN-GP).
      g_optimizer, d_optimizer: the two optimizer families.
      data_shape: shape of one real example.
      loss: one of ``GAN_LOSSES``.
      centers, std: the mixture's modes (a tuple of tuples) and std, for the mode
        metrics of ``evaluate``; None for data without known modes.
    """

    generator: nn.Module
    discriminator: nn.Module
    g_optimizer: OptimizerFamily
    d_optimizer: OptimizerFamily
    data_shape: tuple[int, ...]
    latent_dim: int
    batch_size: int
    loss: str = "non_saturating"
    n_critic: int = 1
    centers: tuple | None = None
    std: float = 0.0
    eval_samples: int = 2500
    track_updates: bool = False  # per-layer update norms of each player in the step metrics (g_update_norm, ...)
    schedule: Any = None  # (step, hparams) -> factor on both players' learning rates; None: constant
    classifier: Any = None  # (module, params) scoring samples by class (digits), when no centres are known

    def __post_init__(self):
        if self.loss not in GAN_LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {GAN_LOSSES}")

    def _family(self, player: str) -> OptimizerFamily:
        return self.g_optimizer if player == "generator" else self.d_optimizer

    def _numbers(self, player: str, hp: dict) -> dict:
        """The player's optimizer hyperparameters, named as its family names them."""
        return {k: hp[f"{player[0]}_{k}"] for k in self._family(player).defaults}

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        root = jax.random.PRNGKey(seeds.init_seed)
        variables = {
            "generator": self.generator.init(streams.key(root, Stream.INIT, 0), jnp.zeros((1, self.latent_dim)),
                                             train=False, hparams=hparams),
            "discriminator": self.discriminator.init(streams.key(root, Stream.INIT, 1), jnp.zeros((1, *self.data_shape)),
                                                     train=False, hparams=hparams),
        }
        params = {p: v["params"] for p, v in variables.items()}
        model_state = {p: {k: c for k, c in v.items() if k != "params" and k not in SOWN}
                       for p, v in variables.items()}
        opt_state = tuple(self._family(p).transform(self._numbers(p, hparams)).init(params[p]) for p in PLAYERS)
        # dropout_seed keys the latents
        return fresh_state(params, opt_state, hparams, seeds, model_state)

    def _run(self, module, params, model_state, x, hp, train: bool):
        """``(output, model_state)``. Train mode normalises BatchNorm layers with the batch's
        own statistics and returns the running ones updated; evaluation mode uses the
        running ones. A model without such state runs the same either way."""
        variables = {"params": params, **model_state}
        if train and model_state:
            out, new = module.apply(variables, x, train=True, hparams=hp, mutable=list(model_state))
            return out, {**model_state, **new}
        return module.apply(variables, x, train=train, hparams=hp), model_state

    def generate(self, params, model_state, z, hp):
        """Samples ``[B, *data_shape]`` from latents ``z`` (evaluation mode)."""
        return self._run(self.generator, params, model_state, z, hp, False)[0].reshape(z.shape[0], *self.data_shape)

    def critic(self, params, model_state, x, hp):
        """D's logits ``[B]`` (evaluation mode: running statistics, no dropout)."""
        return self._run(self.discriminator, params, model_state, x, hp, False)[0][:, 0]

    def d_objective(self, d_params, d_state, g_params, g_state, real, z, key, hp, train: bool = False):
        """``(D's loss, D's model state)``: the loss (with WGAN-GP's penalty) on ``real``
        against G's samples of ``z``, G fixed. In train mode D sees the real and the fake
        batch apart, as DCGAN does, each normalised by its own statistics; G's running
        statistics move only in G's own step."""
        fake = self._run(self.generator, g_params, g_state, z, hp, train)[0].reshape(z.shape[0], *self.data_shape)
        fake = jax.lax.stop_gradient(fake)
        on_real, d_state = self._run(self.discriminator, d_params, d_state, real, hp, train)
        on_fake, d_state = self._run(self.discriminator, d_params, d_state, fake, hp, train)
        loss = discriminator_loss(self.loss, on_real[:, 0], on_fake[:, 0])
        if self.loss == "wgan_gp":  # a BatchNorm critic is refused with WGAN-GP, so the mode does not matter
            loss = loss + hp["gp_weight"] * gradient_penalty(
                lambda x: self.critic(d_params, d_state, x, hp), real, fake, key)
        return loss, d_state

    def g_objective(self, g_params, g_state, d_params, d_state, z, hp, train: bool = False):
        """``(G's loss, G's model state)``: the loss on its samples of ``z``, D fixed."""
        fake, g_state = self._run(self.generator, g_params, g_state, z, hp, train)
        on_fake = self._run(self.discriminator, d_params, d_state, fake.reshape(z.shape[0], *self.data_shape), hp,
                            train)[0]
        return generator_loss(self.loss, on_fake[:, 0]), g_state

    def d_loss(self, d_params, state, real, z, key, train: bool = False):
        """D's loss in ``state`` with D's parameters ``d_params`` (and its new model state)."""
        p, s = state.params, state.model_state
        return self.d_objective(d_params, s["discriminator"], p["generator"], s["generator"], real, z, key,
                                state.hparams, train)

    def g_loss(self, g_params, state, z, train: bool = False):
        """G's loss in ``state`` with G's parameters ``g_params`` (and its new model state)."""
        p, s = state.params, state.model_state
        return self.g_objective(g_params, s["generator"], p["discriminator"], s["discriminator"], z, state.hparams,
                                train)

    def _update(self, state: MemberState, player: str, grads) -> tuple[MemberState, dict]:
        i = PLAYERS.index(player)
        family = self._family(player)
        opt = state.opt_state[i]
        numbers = self._numbers(player, state.hparams)
        if self.schedule is not None:  # this step's factor on the player's own rate
            numbers["learning_rate"] = (numbers["learning_rate"] * self.schedule(state.step, state.hparams)
                                        ).astype(jnp.float32)
        opt = opt._replace(hyperparams={**opt.hyperparams, **numbers})
        updates, opt = family.transform(family.defaults).update(grads, opt, state.params[player])
        params = {**state.params, player: optax.apply_updates(state.params[player], updates)}
        opt_state = tuple(opt if j == i else s for j, s in enumerate(state.opt_state))
        metrics = {}
        if self.track_updates:  # the norms probe's step metrics, per player
            norm = layer_norms(updates)
            metrics[f"{player[0]}_update_norm"] = norm
            metrics[f"{player[0]}_update_ratio"] = jax.tree.map(lambda u, w: u / w, norm,
                                                                layer_norms(state.params[player]))
        return state._replace(params=params, opt_state=opt_state), metrics

    def step(self, state: MemberState, data: Dataset) -> tuple[MemberState, dict]:
        """``n_critic`` discriminator updates, then one generator update."""
        batch_key = streams.key(state.data_key, Stream.BATCH, state.step)
        latent_key = streams.key(state.dropout_key, Stream.LATENT, state.step)
        penalty_key = streams.key(state.dropout_key, Stream.PENALTY, state.step)
        n = data.x_train.shape[0]

        def critic_step(state, i):
            idx = jax.random.randint(jax.random.fold_in(batch_key, i), (self.batch_size,), 0, n)
            z = jax.random.normal(jax.random.fold_in(latent_key, i), (self.batch_size, self.latent_dim))
            (loss, d_state), grads = jax.value_and_grad(self.d_loss, has_aux=True)(
                state.params["discriminator"], state, data.x_train[idx], z,
                jax.random.fold_in(penalty_key, i), True)
            state = state._replace(model_state={**state.model_state, "discriminator": d_state})
            state, updates = self._update(state, "discriminator", grads)
            return state, (loss, updates)

        state, (d_losses, d_updates) = jax.lax.scan(critic_step, state, jnp.arange(self.n_critic))
        z = jax.random.normal(jax.random.fold_in(latent_key, self.n_critic), (self.batch_size, self.latent_dim))
        (g_loss, g_state), grads = jax.value_and_grad(self.g_loss, has_aux=True)(state.params["generator"], state, z,
                                                                                 True)
        state = state._replace(model_state={**state.model_state, "generator": g_state})
        state, g_updates = self._update(state, "generator", grads)
        d_loss = d_losses[-1]
        metrics = {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss, **g_updates,
                   **jax.tree.map(lambda v: v.mean(0), d_updates)}  # D's: the mean over its n_critic updates
        return state._replace(step=state.step + 1), metrics

    def samples(self, state: MemberState, n: int | None = None) -> jax.Array:
        """``n`` samples of this member from the fixed evaluation latents."""
        z = jax.random.normal(jax.random.PRNGKey(EVAL_SEED), (n or self.eval_samples, self.latent_dim))
        return self.generate(state.params["generator"], state.model_state["generator"], z, state.hparams)

    def snapshot(self, state: MemberState) -> jax.Array:
        """A few samples to look at, ``[n, features]``, from latents that are the same for
        every member and evaluation: 256 points of 2D data, 16 images, 8 other examples."""
        n = 256 if self.data_shape == (2,) else 16 if len(self.data_shape) >= 2 else 8
        return self.samples(state, min(n, self.eval_samples)).reshape(-1, int(np.prod(self.data_shape)))

    def evaluate(self, state: MemberState, x: jax.Array, y: jax.Array) -> dict:
        """Both players' losses on held-out real data against the evaluation samples, and
        the mode metrics of those samples: against the modes where they are known
        (``ring``, ``grid``), by the cached classifier's classes on ``digits``."""
        fake = self.samples(state)
        real = x[: self.eval_samples]
        hp = state.hparams
        d = state.params["discriminator"], state.model_state["discriminator"]
        f_logits = self.critic(*d, fake, hp)
        d_loss = discriminator_loss(self.loss, self.critic(*d, real, hp), f_logits)
        g_loss = generator_loss(self.loss, f_logits)
        out = {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}
        if self.centers is not None:
            out.update(mode_metrics(fake, jnp.asarray(self.centers), self.std))
        elif self.classifier is not None:
            module, params = self.classifier
            out.update(class_metrics(jax.nn.softmax(module.apply({"params": params}, fake))))
        return out


class PlayerState(NamedTuple):
    """One player of a GAN member as the probes see it: its own variables, optimizer
    state and (unprefixed) hyperparameters, and the other player, held fixed."""

    params: Any
    model_state: Any
    opt_state: Any
    hparams: dict
    opponent: tuple  # (params, model_state) of the other player
    data_key: jax.Array  # the member's data key folded with the player's index (random probe directions)


@dataclass(frozen=True)
class PlayerTask:
    """A player's side of the game as a model with a loss, for the probes (``ProbeView``).

    The probe batch is ``(real examples, latents)`` for the discriminator and
    ``(latents, latents)`` for the generator: the ``i``-th example's loss pairs real
    example ``i`` with G's sample of latent ``i``, so per-example gradients exist.
    """

    gan: GANTask
    player: str
    has_targets = False  # no labels: the NTK's target alignment does not apply

    @property
    def model(self) -> nn.Module:
        return getattr(self.gan, self.player)

    def probe_loss(self, params, state: PlayerState, x, y, batch_stats: bool = True) -> jax.Array:
        """The player's loss, BatchNorm on the batch's own statistics as in training (running
        statistics untouched), or on the running ones (``batch_stats = False``)."""
        other, other_state = state.opponent
        if self.player == "generator":
            return self.gan.g_objective(params, state.model_state, other, other_state, x, state.hparams, batch_stats)[0]
        return self.gan.d_objective(params, state.model_state, other, other_state, x, y,
                                    jax.random.PRNGKey(PROBE_SEED), state.hparams, batch_stats)[0]

    def view(self, state: MemberState) -> PlayerState:
        i = PLAYERS.index(self.player)
        other = PLAYERS[1 - i]
        own = {k: v for k, v in state.hparams.items() if not k.startswith(("g_", "d_"))}
        own.update({k[2:]: v for k, v in state.hparams.items() if k.startswith(self.player[0] + "_")})
        return PlayerState(state.params[self.player], state.model_state[self.player], state.opt_state[i], own,
                           (state.params[other], state.model_state[other]), streams.key(state.data_key, Stream.PROBE, i))

    def batch(self, x, y):
        z = jax.random.normal(jax.random.PRNGKey(PROBE_SEED), (x.shape[0], self.gan.latent_dim))
        return (z, z) if self.player == "generator" else (x, z)


def probe_views(task: GANTask, cfg) -> tuple[ProbeView, ...]:
    """The generator's and the discriminator's views; their metric names start ``g_`` and ``d_``."""
    views = []
    for player in PLAYERS:
        model = getattr(cfg, player)
        side = PlayerTask(task, player)
        views.append(ProbeView(side, model, MODELS[model.kind].hidden_activation(model), prefix=player[0] + "_",
                               state=side.view, params=lambda p, player=player: p[player], batch=side.batch))
    return tuple(views)


def gan_task(cfg, info, track_updates: bool = False) -> GANTask:
    """The GAN of a study config (``[task] kind = "gan"``) on a dataset with ``info``."""
    g = cfg.task.options
    factor = SCHEDULES[g.schedule].factor
    schedule = None if g.schedule == "constant" else (
        lambda count, hp: factor(count, hp, g.schedule_config(), cfg.train.steps))
    centers, std = info.modes if info.modes is not None else (None, 0.0)
    # A dataset with a classifier of its examples (the bundled digits): samples scored by their classes.
    scorer = dataset_spec(cfg.data.name).classifier
    classifier = extension.resolve(scorer, "data.name")()[:2] if scorer else None
    return GANTask(
        generator=build_model(g.generator, (g.latent_dim,), int(np.prod(info.input_shape)),
                              output_shape=info.input_shape),
        discriminator=build_model(g.discriminator, info.input_shape, 1),
        g_optimizer=FAMILIES[g.g_optim], d_optimizer=FAMILIES[g.d_optim],
        data_shape=tuple(info.input_shape), latent_dim=g.latent_dim, batch_size=cfg.train.batch_size,
        loss=g.loss, n_critic=g.n_critic, eval_samples=g.eval_samples, std=std, track_updates=track_updates,
        schedule=schedule, classifier=classifier,
        centers=centers)
