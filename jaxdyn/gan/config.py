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
[gan.generator]           # a model config from the zoo: latents -> one example
kind = "mlp"
hidden = [128, 128]
[gan.discriminator]       # a model config from the zoo: one example -> one logit
kind = "mlp"
hidden = [128, 128]
```

The structural fields are cohort axes (``gan.loss``, ``gan.n_critic``, ...); the
numbers are member axes (``gan.g_learning_rate``, ``gan.d_b1``, ``gan.gp_weight``).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from jaxdyn.errors import ConfigError
from jaxdyn.gan.losses import GAN_LOSSES
from jaxdyn.models import MODELS
from jaxdyn.models.mlp import MLPConfig
from jaxdyn.optim import FAMILIES

GP_WEIGHT = 10.0  # Gulrajani et al. (2017)'s λ
STRUCTURAL = ("loss", "n_critic", "latent_dim", "g_optim", "d_optim", "eval_samples")
PLAYERS = {"g": "generator", "d": "discriminator"}


@dataclass(frozen=True)
class GANConfig:
    loss: str = "non_saturating"
    n_critic: int = 1
    latent_dim: int = 2
    g_optim: str = "adam"
    d_optim: str = "adam"
    eval_samples: int = 2500  # generated samples scored at each evaluation (PacGAN: 2,500)
    generator: Any = field(default_factory=lambda: MLPConfig(hidden=(128, 128)))
    discriminator: Any = field(default_factory=lambda: MLPConfig(hidden=(128, 128)))
    hparams: tuple[tuple[str, float], ...] = ()  # the numbers the user set

    def family(self, prefix: str):
        return FAMILIES[self.g_optim if prefix == "g" else self.d_optim]

    def member_hparams(self) -> dict[str, float]:
        """Every member number: both families' (prefixed), ``gp_weight``, and the model numbers."""
        out = {f"{p}_{k}": v for p in PLAYERS for k, v in self.family(p).defaults.items()}
        out["gp_weight"] = GP_WEIGHT
        out.update(self.hparams)
        return {**out, "leaky_slope": 0.01, "dropout": 0.0}


def gan_from_dict(raw, check_type, model_from_dict, frozen) -> GANConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[gan] must be a table such as loss = \"hinge\", got {raw!r}")
    types = {f.name: f.type for f in dataclasses.fields(GANConfig)}
    values, numbers = {}, {}
    for key, value in raw.items():
        if key in ("generator", "discriminator"):
            values[key] = model_from_dict(value, f"gan.{key}")
        elif key in STRUCTURAL:
            values[key] = frozen(check_type(f"gan.{key}", value, types[key]))
        else:
            numbers[key] = check_type(f"gan.{key}", value, float)
    return GANConfig(**values, hparams=tuple(sorted(numbers.items())))


def member_keys(cfg: GANConfig) -> list[str]:
    """The numbers this GAN takes: each player's family numbers, prefixed, and gp_weight."""
    return [f"{p}_{k}" for p in PLAYERS for k in cfg.family(p).defaults] + ["gp_weight"]


def check_gan(cfg: GANConfig, input_shape, closest_hint) -> None:
    """Range and name checks of ``[gan]`` before anything compiles."""
    if cfg.loss not in GAN_LOSSES:
        raise ConfigError(f"gan.loss = {cfg.loss!r} is not known{closest_hint(cfg.loss, GAN_LOSSES)}")
    for prefix in PLAYERS:
        name = getattr(cfg, f"{prefix}_optim")
        if name not in FAMILIES:
            raise ConfigError(f"gan.{prefix}_optim = {name!r} is not known{closest_hint(name, FAMILIES)}")
    for key, low in (("n_critic", 1), ("latent_dim", 1), ("eval_samples", 1)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"gan.{key} = {getattr(cfg, key)}: must be >= {low}")
    takes = member_keys(cfg)
    for key, value in cfg.hparams:
        if key not in takes:
            raise ConfigError(f"gan.{key} is not a number of this GAN{closest_hint(key, takes)} (the generator's "
                              f"{cfg.g_optim} numbers are g_<name>, the discriminator's {cfg.d_optim} d_<name>)")
        check_gan_value(cfg, key, value)
    if cfg.loss == "wgan_gp" and getattr(cfg.discriminator, "norm", "none") == "batch":
        raise ConfigError("gan.discriminator.norm = 'batch' mixes examples, which WGAN-GP's per-sample gradient "
                          "penalty forbids; use norm = \"layer\" or \"none\"")
    MODELS[cfg.generator.kind].check(cfg.generator, (cfg.latent_dim,))
    MODELS[cfg.discriminator.kind].check(cfg.discriminator, tuple(input_shape))


def check_gan_value(cfg: GANConfig, key: str, value: float) -> None:
    """One member number of the GAN: the family's own range for ``g_*``/``d_*``."""
    from jaxdyn.config import OptimConfig
    from jaxdyn.validation import check_hparam

    if key == "gp_weight":
        if not value >= 0:
            raise ConfigError(f"gan.gp_weight = {value!r}: must be >= 0")
        return
    prefix, name = key.split("_", 1)
    try:
        check_hparam(OptimConfig(name=getattr(cfg, f"{prefix}_optim")), name, value)
    except ConfigError as e:
        raise ConfigError(str(e).replace(f"optim.{name}", f"gan.{key}")) from None
