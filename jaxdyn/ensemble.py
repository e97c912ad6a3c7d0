"""The ensemble of each setting's seeds, beside the mean of its members.

Averaging the seeds' predictions (class probabilities; values for regression) and
scoring the average is a different number from averaging the seeds' own scores,
and usually a better one (flax #1806 asks for the two apart). Both come from the
newest checkpoint of each cohort, on the whole test set; diverged members are
left out of both.
"""


import jax
import numpy as np
import pandas as pd

from jaxdyn.checkpoint import cohort_checkpoint_dir, committed_steps, load_state
from jaxdyn.data import load_dataset
from jaxdyn.errors import as_path
from jaxdyn.extract import member_parts
from jaxdyn.results import load, varying_settings
from jaxdyn.rundir import load_run_config
from jaxdyn.study import expand


def checkpointed_cohorts(run_dir, why: str):
    """``(cohort, task, test data, state)`` of each cohort of a run that has a checkpoint (its newest),
    for reading its members' models (``ensemble``, ``soup``); ``why`` ends the message for a task
    without one model.

    Raises:
      ValueError: a task without one model (a GAN).
      FileNotFoundError: no cohort has a checkpoint yet.
    """
    found = False
    for cohort in expand(load_run_config(run_dir)):
        if not committed_steps(cohort_checkpoint_dir(run_dir, cohort.index)):
            continue  # a run cut short before this cohort saved anything
        if not cohort.config.task.spec().has_model:
            raise ValueError(f"cohort {cohort.index} is a {cohort.config.task.kind} study: {why}")
        found = True
        yield cohort, cohort.task(), load_dataset(cohort.config.data), load_state(run_dir, cohort.index)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no cohort has a checkpoint yet")


def ensemble(run_dir, by=None) -> pd.DataFrame:
    """One row per setting (``by``; default: every varying hyperparameter and cohort setting,
    not the seeds): ``members`` used, the checkpoint's ``step``, ``ensemble_test_loss`` and
    ``mean_test_loss``, and for classification ``ensemble_test_accuracy`` and
    ``mean_test_accuracy``. A run cut short contributes the cohorts it checkpointed; there
    the members' mean is of their last evaluation, which may be later than the checkpoint.

    Raises:
      ValueError: a task without one model's predictions to average (a GAN).
      FileNotFoundError: no cohort has a checkpoint yet.
    """
    run_dir = as_path(run_dir, "run_dir")
    res = load(run_dir)
    keys = list(by) if by is not None else varying_settings(res.members)
    outputs, classes, steps = {}, {}, {}
    for cohort, task, data, state in checkpointed_cohorts(run_dir, "its members make no predictions to average"):
        predict = jax.jit(lambda p, s, hp, x: task._outputs(task.model.apply({"params": p, **s}, x, train=False,
                                                                             hparams=hp)))
        for position, member in enumerate(cohort.members["member"]):
            params, model_state, hp = member_parts(cohort, state, position)
            out = np.asarray(predict(params, model_state, hp, data.x_test))
            outputs[int(member)] = jax.nn.softmax(out, axis=-1) if task.n_classes else out
            classes[int(member)] = (task.n_classes, data.y_test)
            steps[int(member)] = int(np.asarray(state["step"])[position])
    rows = []
    members = res.members[(res.members.diverged_at < 0) & res.members.member.isin(list(outputs))]
    for key, group in members.groupby(keys, dropna=False, sort=True) if keys else [((), members)]:
        key = key if isinstance(key, tuple) else (key,)
        ids = group.member.tolist()
        n_classes, y = classes[ids[0]]
        mean = np.mean([outputs[m] for m in ids], axis=0)
        row = {**dict(zip(keys, key)), "members": len(ids), "step": max(steps[m] for m in ids)}
        if n_classes:
            picked = np.take_along_axis(mean, np.asarray(y)[..., None], axis=-1)[..., 0]
            row["ensemble_test_loss"] = float(-np.log(np.maximum(picked, 1e-30)).mean())
            row["mean_test_loss"] = float(group.final_test_loss.mean())
            row["ensemble_test_accuracy"] = float((mean.argmax(-1) == np.asarray(y)).mean())
            row["mean_test_accuracy"] = float(group.final_test_accuracy.mean())
        else:
            row["ensemble_test_loss"] = float(np.square(mean - np.asarray(y)).mean())
            row["mean_test_loss"] = float(group.final_test_loss.mean())
        rows.append(row)
    return pd.DataFrame(rows)
