"""The task kinds (``[task] kind``): how a cohort's config becomes a task, and what its probes see.

A kind is a ``TaskKind`` (``tasks/base.py``): one entry of ``TASK_KINDS``, or any
``TaskKind`` object named by import path (``[task] kind = "package.module:NAME"``).
The study, runner, population and checkpoints never branch on its name.
"""

import dataclasses
from functools import partial

import pandas as pd

from jaxdyn import extension
from jaxdyn.data import Augment, dataset_info, dataset_spec
from jaxdyn.errors import ConfigError, closest
from jaxdyn.hparams import may_be_positive, present
from jaxdyn.gan.kind import GAN
from jaxdyn.losses import objective_name, user_loss
from jaxdyn.models import build_model, model_spec
from jaxdyn.optim import FAMILIES
from jaxdyn.probes.base import ProbeView
from jaxdyn.schedules import learning_rate
from jaxdyn.tasks.base import TaskKind, one_model, track_updates
from jaxdyn.tasks.supervised import SupervisedTask


def supervised_task(config, members: pd.DataFrame) -> SupervisedTask:
    data = config.data
    info = dataset_info(data)
    # Dropout, label noise, input noise, weight averaging, the weight penalties, gradient
    # clipping and label smoothing are compiled in only when some member uses them (or may:
    # PBT, replay), so the default path draws no masks and makes no extra passes over the weights.
    uses = partial(may_be_positive, config, members)
    return SupervisedTask(
        model=build_model(_with_member_choices(config, members), info.input_shape, info.n_out,
                          uses("dropout"), vocab=info.vocab),
        optimizer=FAMILIES[config.optim.name],
        batch_size=config.train.batch_size,
        input_shape=info.input_shape,
        loss=objective_name(config.loss.name, info.regression),
        custom_loss=user_loss(config.loss.name) if extension.is_path(config.loss.name) else None,
        sample=dataset_spec(data.name).sample(data) if data.fresh else None,
        ema=uses("ema_decay"),
        full_batch=config.train.full_batch,
        label_noise=uses("label_noise"),
        penalty=uses("l1") or uses("l2"),
        clip=uses("grad_clip"),
        smoothing=uses("label_smoothing"),
        n_classes=info.n_classes,
        target_shape=info.target_shape,
        augment=Augment(data.shift, uses("noise_std"), data.crop, data.flip),
        track_updates=track_updates(config),
        # A constant schedule is no schedule: the default path stays as it was.
        schedule=None if config.optim.schedule == "constant" else partial(
            learning_rate, cfg=config.optim, steps=config.train.steps),
    )


def _with_member_choices(config, members: pd.DataFrame):
    """``config.model`` with each member choice (``model.init``) the tuple of names its members use:
    the module compiles those, and ``layers.kernel_initializer`` picks each member's."""
    picked = {key.split(".")[1]: present(members[key.split(".")[1]]) for key in config.member_choices()}
    return dataclasses.replace(config.model, **picked) if picked else config.model


def supervised_views(config, task) -> tuple[ProbeView, ...]:
    model = config.model
    return (ProbeView(task, model, model_spec(model).hidden_activation(model)),)


TASK_KINDS: dict[str, TaskKind] = {
    "supervised": TaskKind(supervised_task, supervised_views,
                           "classification or regression of [data] by [model] with [optim] (the default)",
                           uses_optim=True, has_model=True, member_model=one_model, choices=("model.init",),
                           finals=("accuracy_ema", "loss_ema")),  # with train.ema_decay
    "gan": GAN,
}


def task_kind(name: str) -> TaskKind:
    """The kind ``[task] kind = name`` names: a ``TASK_KINDS`` entry or a ``TaskKind`` at an import path.

    Raises:
      ConfigError: no such kind, with the closest registered name; or the object at the path
        is not a ``TaskKind``.
    """
    if not extension.is_path(name):
        if name not in TASK_KINDS:
            raise ConfigError(f"task.kind = {name!r} is not known{closest(name, TASK_KINDS)}; or name your own "
                              "TaskKind as \"package.module:NAME\"")
        return TASK_KINDS[name]
    kind = extension.resolve(name, "task.kind")
    if not isinstance(kind, TaskKind):
        raise ConfigError(f"task.kind = {name!r} is a {type(kind).__name__}, not a jaxdyn.tasks.TaskKind; "
                          "wrap your task: TaskKind(build=lambda config, members: MyTask(...), ...)")
    return kind
