"""The GAN as a task kind (``[task] kind = "gan"``): registered exactly as a user's kind would be.

Everything the generic code needs to know about a GAN is declared here: the ``[gan]``
table it owns (parsed, written back and checked by ``gan.config``), the member numbers
it takes, its structural cohort axes, and its two players as probe views.
"""

from jaxdyn.data import dataset_info
from jaxdyn.gan.config import (GANConfig, PLAYERS, STRUCTURAL, check_gan, check_gan_value, gan_from_dict,
                               gan_to_dict)
from jaxdyn.gan.losses import GAN_LOSSES
from jaxdyn.gan.task import gan_task, probe_views
from jaxdyn.optim import FAMILIES
from jaxdyn.schedules import SCHEDULES
from jaxdyn.tasks.base import TaskKind, track_updates


def players(task, params, model_state) -> tuple:
    """Each player's Flax variables and module, ``{"generator": ..., "discriminator": ...}``."""
    variables = {p: {"params": params[p], **(model_state.get(p) or {})} for p in PLAYERS.values()}
    return variables, {p: getattr(task, p) for p in PLAYERS.values()}


GAN = TaskKind(
    build=lambda config, members: gan_task(config, dataset_info(config.data), track_updates(config)),
    probe_views=lambda config, task: probe_views(task, config.task.options),
    doc="a generator against a discriminator on [data]'s examples; see [gan]",
    section="gan",
    section_doc=("[gan] loss = " + " | ".join(GAN_LOSSES) + "; " + ", ".join(STRUCTURAL[1:]) +
                 "; [gan.generator] and [gan.discriminator] (model configs); member numbers g_<optimizer number>, "
                 "d_<optimizer number>, gp_weight, and the schedule's (alpha, decay_rate); metric names of each "
                 "player's probes start g_ / d_"),
    options=GANConfig,
    parse=gan_from_dict,
    to_dict=gan_to_dict,
    check=lambda config, info: check_gan(config.task.options, info.input_shape, config.train.steps, config.data.fresh),
    member_hparams=GANConfig.member_hparams,
    check_member=check_gan_value,
    cohort_axes=STRUCTURAL,
    # Every number some GAN may take: each family's, per player; gp_weight; each schedule's.
    member_axes=(*sorted({f"{p}_{h}" for p in PLAYERS for fam in FAMILIES.values() for h in fam.defaults}),
                 "gp_weight", *sorted({k.split(".")[1] for s in SCHEDULES.values() for k in s.hparams})),
    member_model=players,
    finals=("modes", "high_quality", "reverse_kl", "confidence"),  # confidence: digits' classifier
    curves=("train_d_loss", "train_g_loss", "test_modes", "test_high_quality"),
)
