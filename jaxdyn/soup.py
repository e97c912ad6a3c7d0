"""Model soups: each setting's seeds averaged in weight space, scored beside the members' mean and
their ensemble (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time").

The uniform soup averages every living member's final weights; BatchNorm's running statistics
are not averaged but recomputed for the soup's own weights, from one pass over (up to
``BN_EXAMPLES`` of) the training set. The greedy soup (given a held-out split) adds members in
order of their held-out accuracy, keeping each only if the soup's held-out accuracy does not
fall. Averaging members that do not share an initialisation is allowed: they usually sit in
different basins, and the soup then scores worse than either (the ``lmc`` probe's barrier
measures that).
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from jaxdyn.ensemble import checkpointed_cohorts, ensemble
from jaxdyn.errors import as_path
from jaxdyn.extract import member_parts
from jaxdyn.results import load, varying_settings

BN_EXAMPLES = 4096  # training examples of the pass that recomputes a soup's BatchNorm statistics


def average(trees: list):
    """The leafwise mean of pytrees of the same structure (in float64, cast back to each leaf's dtype)."""
    return jax.tree.map(lambda *xs: np.mean(np.stack([np.asarray(x, np.float64) for x in xs]), axis=0)
                        .astype(np.asarray(xs[0]).dtype), *trees)


def recompute_batch_stats(task, params, model_state: dict, hparams: dict, x) -> dict:
    """``model_state`` with every BatchNorm's running mean and variance set to the batch statistics
    of ``params`` on ``x`` (train mode, dropout off). Whatever a layer's momentum m, one train-mode
    pass gives ``new = m · old + (1 - m) · batch``; two passes from old = 0 and old = 1 give m,
    and so the batch statistic exactly."""
    if "batch_stats" not in model_state:
        return model_state
    hp = {**hparams, "dropout": jnp.zeros((), jnp.float32)}

    def updated(fill):
        start = {**model_state, "batch_stats": jax.tree.map(lambda a: jnp.full_like(a, fill), model_state["batch_stats"])}
        _, new = task.model.apply({"params": params, **start}, x, train=True, hparams=hp, mutable=["batch_stats"])
        return new["batch_stats"]

    from_zero, from_one = updated(0.0), updated(1.0)
    stats = jax.tree.map(lambda a, b: a / (1 - (b - a)), from_zero, from_one)  # m = b - a
    return {**model_state, "batch_stats": stats}


def _scores(task, params, model_state, hparams, x, y) -> dict:
    out = task._outputs(task.model.apply({"params": params, **model_state}, x, train=False, hparams=hparams))
    if not task.n_classes:
        return {"loss": float(jnp.square(out - y).mean())}
    return {"loss": float(optax.softmax_cross_entropy_with_integer_labels(out, y).mean()),
            "accuracy": float((out.argmax(-1) == y).mean())}


def soup(run_dir, by=None, held_out=None) -> pd.DataFrame:
    """One row per setting (``by``; default: every varying setting, not the seeds): ``members``,
    ``soup_test_loss`` (and ``soup_test_accuracy``) of the uniform soup, beside ``mean_test_*`` and
    ``ensemble_test_*`` (``ensemble``); with ``held_out = (x, y)``, also the greedy soup's
    ``greedy_members`` and ``greedy_test_*``. From each cohort's newest checkpoint; diverged members
    are left out.

    Raises:
      ValueError: a task without one model (a GAN), or members of one setting in different cohorts.
      FileNotFoundError: no cohort has a checkpoint yet.
    """
    run_dir = as_path(run_dir, "run_dir")
    res = load(run_dir)
    keys = list(by) if by is not None else varying_settings(res.members)
    parts, tasks = {}, {}
    for cohort, task, data, state in checkpointed_cohorts(run_dir, "no one model to average"):
        for position, member in enumerate(cohort.members["member"]):
            parts[int(member)] = member_parts(cohort, state, position)
            tasks[int(member)] = (cohort.index, task, data)
    rows = []
    members = res.members[(res.members.diverged_at < 0) & res.members.member.isin(list(parts))]
    for key, group in members.groupby(keys, dropna=False, sort=True) if keys else [((), members)]:
        key = key if isinstance(key, tuple) else (key,)
        ids = group.member.tolist()
        if len({tasks[m][0] for m in ids}) > 1:
            raise ValueError(f"setting {dict(zip(keys, key))} spans cohorts {sorted({tasks[m][0] for m in ids})}: "
                             "their members have different shapes; give by= the cohort settings too")
        _, task, data = tasks[ids[0]]
        row = {**dict(zip(keys, key)), "members": len(ids)}
        for name, value in _soup_scores(task, [parts[m] for m in ids], data, data.x_test, data.y_test).items():
            row[f"soup_test_{name}"] = value
        if held_out is not None:
            row.update(_greedy(task, [parts[m] for m in ids], data, held_out))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.merge(ensemble(run_dir, by=keys).drop(columns=["members", "step"]), on=keys or None, how="left") \
        if keys else pd.concat([table, ensemble(run_dir, by=keys).drop(columns=["members", "step"])], axis=1)


def _soup_scores(task, members: list, data, x, y) -> dict:
    params = average([p for p, _, _ in members])
    model_state, hparams = members[0][1], members[0][2]
    model_state = recompute_batch_stats(task, params, model_state, hparams, data.x_train[:BN_EXAMPLES])
    return _scores(task, params, model_state, hparams, x, y)


def _greedy(task, members: list, data, held_out) -> dict:
    """Wortsman et al.'s greedy soup on ``held_out = (x, y)``, scored on the test set."""
    x, y = held_out
    score = lambda chosen: _soup_scores(task, chosen, data, x, y)
    metric = "accuracy" if task.n_classes else "loss"
    sign = 1 if task.n_classes else -1  # higher accuracy, or lower loss, is better
    order = sorted(range(len(members)), key=lambda i: -sign * score([members[i]])[metric])
    chosen = [members[order[0]]]
    best = score(chosen)[metric]
    for i in order[1:]:
        trial = score(chosen + [members[i]])[metric]
        if sign * trial >= sign * best:
            chosen, best = chosen + [members[i]], trial
    test = _soup_scores(task, chosen, data, data.x_test, data.y_test)
    return {"greedy_members": len(chosen), **{f"greedy_test_{k}": v for k, v in test.items()}}
