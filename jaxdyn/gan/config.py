"""The ``[gan]`` section (with ``[task] kind = "gan"``): the two players, their optimizers, the game.

```toml
[task]
kind = "gan"
[gan]
loss = "non_saturating"   # minimax non_saturating wgan_gp hinge least_squares
n_critic = 1              # discriminator updates per generator update
latent_dim = 2
g_optim = "adam"          # the generator's optimizer family
d_optim = "adam"          # the discriminator's (may differ)
g_learning_rate = 1e-4    # member numbers: g_<family number>, d_<family number>, gp_weight
d_b1 = 0.5
schedule = "cosine"       # both players' learning rates (optional; as optim.schedule, with its fields)
alpha = 0.0               # the schedule's member numbers are unprefixed: alpha, decay_rate
[gan.generator]           # a model config from the zoo: latents -> one example
kind = "mlp"
hidden = [128, 128]
[gan.discriminator]       # a model config from the zoo: one example -> one logit
kind = "mlp"
hidden = [128, 128]
```

The structural fields are cohort axes (``gan.loss``, ``gan.n_critic``, ...); the
numbers are member axes (``gan.g_learning_rate``, ``gan.d_b1``, ``gan.gp_weight``,
``gan.alpha``). A schedule multiplies each player's own learning rate by the same
factor of the step (``schedules.SCHEDULES``; ``decay_steps = 0`` means ``train.steps``).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from jaxdyn.errors import ConfigError, choice, closest
from jaxdyn.gan.losses import GAN_LOSSES
from jaxdyn.models import MODELS, check_model
from jaxdyn.models.mlp import MLPConfig
from jaxdyn.optim import FAMILIES
from jaxdyn.optim_config import OptimConfig, check_hparam, check_schedule
from jaxdyn.parsing import check_type, field_types, frozen, model_from_dict
from jaxdyn.schedules import SCHEDULES

GP_WEIGHT = 10.0  # Gulrajani et al. (2017)'s λ
SCHEDULE_FIELDS = ("schedule", "decay_steps", "warmup_steps", "transition_steps", "boundaries")
STRUCTURAL = ("loss", "n_critic", "latent_dim", "g_optim", "d_optim", "eval_samples", *SCHEDULE_FIELDS)
PLAYERS = {"g": "generator", "d": "discriminator"}


@dataclass(frozen=True)
class GANConfig:
    loss: str = "non_saturating"  # minimax | non_saturating | wgan_gp | hinge | least_squares
    n_critic: int = 1  # discriminator updates per generator update
    latent_dim: int = 2  # dimension of the Gaussian latent vector
    g_optim: str = "adam"  # the generator's optimizer family
    d_optim: str = "adam"  # the discriminator's (may differ)
    eval_samples: int = 2500  # generated samples scored at each evaluation (PacGAN: 2,500)
    schedule: str = "constant"  # of both learning rates: as optim.schedule
    decay_steps: int = 0  # as optim.decay_steps
    warmup_steps: int = 0  # as optim.warmup_steps
    transition_steps: int = 1000  # as optim.transition_steps
    boundaries: tuple[int, ...] = ()  # as optim.boundaries
    generator: Any = field(default_factory=lambda: MLPConfig(hidden=(128, 128)))  # [gan.generator]: latents -> one example
    discriminator: Any = field(default_factory=lambda: MLPConfig(hidden=(128, 128)))  # [gan.discriminator]: example -> logit
    hparams: tuple[tuple[str, float], ...] = ()  # the numbers the user set

    def family(self, prefix: str):
        return FAMILIES[self.g_optim if prefix == "g" else self.d_optim]

    def schedule_config(self):
        """The schedule's fields as an ``OptimConfig`` (what ``schedules`` reads)."""
        return OptimConfig(**{k: getattr(self, k) for k in SCHEDULE_FIELDS})

    def schedule_numbers(self) -> dict[str, float]:
        """The schedule's member numbers and defaults: ``{"alpha": 0.0}`` for cosine."""
        return {k.split(".")[1]: h.default for k, h in SCHEDULES[self.schedule].hparams.items()} \
            if self.schedule in SCHEDULES else {}

    def member_hparams(self) -> dict[str, float]:
        """Every member number: both families' (prefixed), ``gp_weight``, the schedule's, and the model numbers."""
        out = {f"{p}_{k}": v for p in PLAYERS for k, v in self.family(p).defaults.items()}
        out["gp_weight"] = GP_WEIGHT
        out.update(self.schedule_numbers())
        out.update(self.hparams)
        return {**out, "leaky_slope": 0.01, "dropout": 0.0}


def gan_from_dict(raw) -> GANConfig:
    """The ``[gan]`` table as a ``GANConfig``: keys and types checked, not ranges."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[gan] must be a table such as loss = \"hinge\", got {raw!r}")
    types = field_types(GANConfig)
    values, numbers = {}, {}
    for key, value in raw.items():
        if key in ("generator", "discriminator"):
            values[key] = model_from_dict(value, f"gan.{key}")
        elif key in STRUCTURAL:
            values[key] = frozen(check_type(f"gan.{key}", value, types[key]))
        else:
            numbers[key] = check_type(f"gan.{key}", value, float)
    return GANConfig(**values, hparams=tuple(sorted(numbers.items())))


def gan_to_dict(cfg: GANConfig, gridded=()) -> dict:
    """The ``[gan]`` table of ``cfg`` (the inverse of ``gan_from_dict``); fields in ``gridded`` are left out."""
    plain = lambda v: list(v) if isinstance(v, tuple) else v
    out = {k: plain(getattr(cfg, k)) for k in STRUCTURAL if k not in gridded}
    for player in PLAYERS.values():
        out[player] = {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, player)).items()}
    return {**out, **dict(cfg.hparams)}


def member_keys(cfg: GANConfig) -> list[str]:
    """The numbers this GAN takes: each player's family numbers, prefixed, gp_weight, and the schedule's."""
    return [f"{p}_{k}" for p in PLAYERS for k in cfg.family(p).defaults] + ["gp_weight", *cfg.schedule_numbers()]


def check_gan(cfg: GANConfig, input_shape, steps: int, fresh: bool = False) -> None:
    """Range and name checks of ``[gan]`` before anything compiles (``steps``: ``train.steps``,
    ``fresh``: ``data.fresh``, which a GAN does not read)."""
    if fresh:
        raise ConfigError("data.fresh = true: a GAN's discriminator draws its real examples from the fixed "
                          "training set; remove data.fresh (raise data.n_examples for more examples)")
    choice("gan.loss", cfg.loss, GAN_LOSSES)
    for prefix in PLAYERS:
        choice(f"gan.{prefix}_optim", getattr(cfg, f"{prefix}_optim"), FAMILIES)
    choice("gan.schedule", cfg.schedule, SCHEDULES)
    check_schedule(cfg.schedule_config(), steps, section="gan")
    for key, low in (("n_critic", 1), ("latent_dim", 1), ("eval_samples", 1)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"gan.{key} = {getattr(cfg, key)}: must be >= {low}")
    takes = member_keys(cfg)
    for key, value in cfg.hparams:
        if key not in takes:
            raise ConfigError(f"gan.{key} is not a number of this GAN{closest(key, takes)} (the generator's "
                              f"{cfg.g_optim} numbers are g_<name>, the discriminator's {cfg.d_optim} d_<name>)")
        check_gan_value(cfg, key, value)
    if cfg.loss == "wgan_gp" and getattr(cfg.discriminator, "norm", "none") == "batch":
        raise ConfigError("gan.discriminator.norm = 'batch' mixes examples, which WGAN-GP's per-sample gradient "
                          "penalty forbids; use norm = \"layer\" or \"none\"")
    if MODELS[cfg.discriminator.kind].generates:
        raise ConfigError(f"gan.discriminator.kind = {cfg.discriminator.kind!r} generates examples; the "
                          "discriminator must map an example to a score: use \"mlp\" or \"cnn\"")
    for player, args in (("generator", ((cfg.latent_dim,), tuple(input_shape))), ("discriminator", (tuple(input_shape),))):
        try:
            check_model(getattr(cfg, player), *args)
        except ConfigError as e:  # the shared model checks name their fields model.<field>
            raise ConfigError(str(e).replace("model.", f"gan.{player}.")) from None


def check_gan_value(cfg: GANConfig, key: str, value: float) -> None:
    """One member number of the GAN: the family's own range for ``g_*``/``d_*``."""
    if key == "gp_weight":
        if not value >= 0:
            raise ConfigError(f"gan.gp_weight = {value!r}: must be >= 0")
        return
    prefix, name = key.split("_", 1) if key[:2] in ("g_", "d_") else ("g", key)
    check_hparam(OptimConfig(name=getattr(cfg, f"{prefix}_optim"), schedule=cfg.schedule), name, value,
                 field=f"gan.{key}")
