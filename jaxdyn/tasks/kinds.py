"""The task kinds (``[task] kind``): how a cohort's config becomes a task, and what its probes see.

A kind is one entry of ``TASK_KINDS``; the study, runner, population and
checkpoints never branch on its name.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable

import pandas as pd

from jaxdyn.data import Augment, dataset_info
from jaxdyn import extension
from jaxdyn.losses import objective_name, user_loss
from jaxdyn.models import build_model, model_spec
from jaxdyn.optim import FAMILIES
from jaxdyn.probes.base import ProbeView
from jaxdyn.schedules import learning_rate
from jaxdyn.tasks.supervised import SupervisedTask


@dataclass(frozen=True)
class TaskKind:
    """One kind of task.

    Attributes:
      build: ``(config, members) -> task``: the task of one cohort (``config`` has no
        grid left; ``members`` is its member table, to see which optional parts any
        member uses).
      probe_views: ``(config, task) -> (ProbeView, ...)``: what the probes measure.
      doc: one line for ``jaxdyn list``.
    """

    build: Callable
    probe_views: Callable
    doc: str


def _uses(members: pd.DataFrame, name: str) -> bool:
    return bool((members.get(name, pd.Series([0.0])) > 0).any())


def track_updates(config) -> bool:
    """Whether the train step should log per-layer update norms (a probe asks for them)."""
    return any(p.step_metrics for p, _ in config.probes.enabled())


def supervised_task(config, members: pd.DataFrame) -> SupervisedTask:
    data = config.data
    info = dataset_info(data)
    # Dropout, label noise and input noise are compiled in only when some member
    # uses them, so the default path draws no masks.
    return SupervisedTask(
        model=build_model(config.model, info.input_shape, info.n_out, _uses(members, "dropout")),
        optimizer=FAMILIES[config.optim.name],
        batch_size=config.train.batch_size,
        input_shape=info.input_shape,
        loss=objective_name(config.loss.name, info.regression),
        custom_loss=user_loss(config.loss.name) if extension.is_path(config.loss.name) else None,
        full_batch=config.train.full_batch,
        label_noise=_uses(members, "label_noise"),
        n_classes=info.n_classes,
        target_shape=info.target_shape,
        augment=Augment(data.shift, _uses(members, "noise_std"), data.crop, data.flip),
        track_updates=track_updates(config),
        # A constant schedule is no schedule: the default path stays as it was.
        schedule=None if config.optim.schedule == "constant" else partial(
            learning_rate, cfg=config.optim, steps=config.train.steps),
    )


def supervised_views(config, task) -> tuple[ProbeView, ...]:
    model = config.model
    return (ProbeView(task, model, model_spec(model).hidden_activation(model)),)


def gan_task(config, members: pd.DataFrame):
    from jaxdyn.gan.task import gan_task

    return gan_task(config, dataset_info(config.data), track_updates(config))


def gan_views(config, task) -> tuple[ProbeView, ...]:
    from jaxdyn.gan.task import probe_views

    return probe_views(task, config.gan)


TASK_KINDS: dict[str, TaskKind] = {
    "supervised": TaskKind(supervised_task, supervised_views,
                           "classification or regression of [data] by [model] with [optim] (the default)"),
    "gan": TaskKind(gan_task, gan_views,
                    "a generator against a discriminator on [data]'s examples; see [gan]"),
}
