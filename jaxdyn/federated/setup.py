"""A study's federations: their members (clients) in the member table, their partitions, and
what a cohort's chunk needs (``Federation``), read from ``[federated]`` and the dataset."""

import functools

import jax
import numpy as np
import pandas as pd

from jaxdyn.data import arrays, dataset_info, load_dataset
from jaxdyn.errors import ConfigError
from jaxdyn.federated.chunk import Federation, FederatedTask
from jaxdyn.federated.config import selected_per_round
from jaxdyn.federated.partition import ClientExamples, partition, partition_table
from jaxdyn.federated.round import ClientIds, server_optimizer
from jaxdyn.hparams import may_be_positive


def client_rows(rows: list[dict], clients: int, first_federation: int, local_steps: int) -> list[dict]:
    """Each row of a cohort (one setting × seed set) made a federation of ``clients`` rows.

    Every client of a federation shares its init seed (they start from one global model) and
    its hyperparameters; client c of a federation with data seed s and dropout seed r draws its
    batches with data seed ``s · clients + c`` and its dropout masks with ``r · clients + c``, so
    that each has streams of its own (and a one-client federation draws as its member would).
    Columns ``federation`` (numbered across the study), ``client`` and ``local_steps`` (the
    cohort's steps per round, resolved from ``local_epochs`` where that is set) are added.
    """
    out = []
    if max(max(r["data_seed"], r["dropout_seed"]) for r in rows) * clients + clients > 2**31:
        raise ConfigError(f"study.seeds: a client's seed is seed x clients + client, which passes 2^31 with "
                          f"federated.clients = {clients}; use smaller seeds")
    for f, row in enumerate(rows):
        for c in range(clients):
            out.append({**row, "federation": first_federation + f, "client": c, "local_steps": local_steps,
                        "data_seed": row["data_seed"] * clients + c,
                        "dropout_seed": row["dropout_seed"] * clients + c})
    return out


@functools.lru_cache(maxsize=8)
def client_examples(data, fed) -> ClientExamples:
    """The partition of the training set of ``data`` (a ``DataConfig``, ``n_train`` applied) that
    ``fed`` (a ``FederatedConfig``) asks for; fixed by ``data.seed``."""
    ids = arrays.client_ids(data) if fed.partition == "natural" and arrays.is_user_data(data.name) else None
    return partition(fed, load_dataset(data).y_train, data.seed, ids)


def federation(cohort, n_padded: int) -> Federation:
    """What the chunk of a federated ``cohort`` (a ``study.Cohort``) needs, for a population of
    ``n_padded`` members (padding members get federation F, weight 0)."""
    fed = cohort.config.federated
    examples = client_examples(cohort.config.data, fed)
    members = cohort.members
    local = (members["federation"] - members["federation"].min()).to_numpy(np.int32)
    n_fed = int(local.max()) + 1
    client = members["client"].to_numpy(np.int32)
    weight = examples.count[client].astype(np.float32) if fed.weighting == "examples" else np.ones(len(client),
                                                                                                   np.float32)
    pad = n_padded - len(members)
    ids = ClientIds(np.concatenate([local, np.full(pad, n_fed, np.int32)]),
                    np.concatenate([client, np.zeros(pad, np.int32)]),
                    np.concatenate([weight, np.zeros(pad, np.float32)]))
    root = np.asarray(jax.random.fold_in(jax.random.PRNGKey(fed.seed), cohort.index))
    return Federation(ids, examples, n_fed, fed.clients, selected_per_round(fed), fed.local_steps, root)


def partition_frame(cohorts) -> pd.DataFrame:
    """``partition.parquet``: every federated cohort's clients with their example counts and label
    histograms (``partition.partition_table``); empty when no cohort is federated."""
    frames = []
    for cohort in cohorts:
        fed = cohort.config.federated
        if fed is None:
            continue
        labels = load_dataset(cohort.config.data).y_train
        frames.append(partition_table(client_examples(cohort.config.data, fed), labels,
                                      dataset_info(cohort.config.data).n_classes, cohort.index))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def federated_task(task, config, members: pd.DataFrame) -> FederatedTask:
    """The cohort's supervised ``task`` with its members as clients: the server's optimizer from
    ``[federated]``, and FedProx's term compiled in only when some member's ``prox_mu`` is above 0
    or may be later (``hparams.may_be_positive``)."""
    proximal = may_be_positive(config, members, "prox_mu")
    if may_be_positive(config, members, "ema_decay"):
        raise ConfigError("train.ema_decay > 0 with [federated]: a client's moving average would follow its own "
                          "local weights, not the global model's; jaxdyn does not average those yet, so remove "
                          "train.ema_decay")
    return FederatedTask(task, server_optimizer(config.federated), proximal)
