"""``[federated]``: every setting × seed of a cohort is a federation of ``clients`` members.

A federation trains like FedAvg (McMahan et al. 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data"): each round, a share ``client_fraction`` of
its clients, each holding its own part of the training set (``partition``), takes
``local_steps`` steps from the global model; the server averages their weights
(weighted by example counts, or uniformly) and moves the global model towards that
average with its own optimizer on the pseudo-gradient (Reddi et al. 2021, "Adaptive
Federated Optimization": ``sgd`` with learning rate 1 is plain FedAvg, ``momentum``
FedAvgM, ``adam`` FedAdam). ``prox_mu`` adds FedProx's proximal term (Li et al. 2020).
"""

import math
from dataclasses import dataclass, fields
from typing import Mapping

from jaxdyn.errors import ConfigError, choice, closest
from jaxdyn.hparams import HParam
from jaxdyn.parsing import check_type

PARTITIONS = ("iid", "shards", "dirichlet")
WEIGHTINGS = ("examples", "uniform")
SERVER_OPTIMS = ("sgd", "momentum", "adam")

# Member hyperparameters: a federation's own values (the same for its clients), a grid axis each.
HPARAMS = {
    "federated.server_learning_rate": HParam(
        1.0, low_open=True, doc="the server's step on the pseudo-gradient (the round's start minus the clients' "
                                "average); 1 with server_optim = \"sgd\" is plain FedAvg"),
    "federated.prox_mu": HParam(
        0.0, doc="FedProx's proximal weight mu: each client's local objective adds mu/2 ||w - w_global||^2 "
                 "(Li et al. 2020); 0 = off"),
}


@dataclass(frozen=True)
class FederatedConfig:
    clients: int = 10  # members per federation, each with its own part of the training set
    local_steps: int = 10  # E: local steps of every client per round; a divisor of train.chunk_steps
    client_fraction: float = 1.0  # C: the share of a federation's clients sampled each round (at least one)
    partition: str = "iid"  # iid | shards | dirichlet: how the training set is dealt to the clients
    shards_per_client: int = 2  # shards: label-sorted shards per client (McMahan et al. 2017 use 2)
    alpha: float = 1.0  # dirichlet: concentration; each client's class mix ~ Dir(alpha * class frequencies)
    weighting: str = "examples"  # examples (FedAvg: weight n_k / n) | uniform
    server_optim: str = "sgd"  # sgd | momentum (FedAvgM) | adam (FedAdam), on the pseudo-gradient
    server_momentum: float = 0.9  # momentum: the server's beta
    server_b1: float = 0.9  # adam: first-moment decay
    server_b2: float = 0.99  # adam: second-moment decay (Reddi et al. 2021)
    server_eps: float = 1e-3  # adam: tau, the adaptivity floor (Reddi et al. 2021)
    seed: int = 0  # the key of client sampling (folded with the federation and the round)
    server_learning_rate: float = 1.0  # member hyperparameter (HPARAMS)
    prox_mu: float = 0.0  # member hyperparameter (HPARAMS)


FIELDS = {f.name: f.type for f in fields(FederatedConfig)}
# Settings a grid may vary; each value makes a cohort (the numbers in HPARAMS make members instead).
COHORT_AXES = tuple(f"federated.{name}" for name in FIELDS if f"federated.{name}" not in HPARAMS)


def federated_from_dict(raw) -> FederatedConfig:
    """Parse ``[federated]``: keys and types (ranges: ``check_federated``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[federated] must be a table such as clients = 100, got {raw!r}")
    values = {}
    for key, value in raw.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key federated.{key}{closest(key, list(FIELDS))}")
        values[key] = check_type(f"federated.{key}", value, FIELDS[key])
    return FederatedConfig(**values)


def federated_to_dict(cfg: FederatedConfig) -> dict:
    return {name: getattr(cfg, name) for name in FIELDS}


def selected_per_round(cfg: FederatedConfig) -> int:
    """m = max(1, round(C · clients)): clients in each round's average (McMahan et al.'s max(C·K, 1))."""
    return max(1, min(cfg.clients, int(math.floor(cfg.client_fraction * cfg.clients + 0.5))))


def check_federated(cfg: FederatedConfig, train, data, info, kind: str) -> None:
    """Range checks of ``[federated]`` against the study (``train``, ``data``: its sections; ``info``:
    the dataset's ``DatasetInfo``; ``kind``: ``task.kind``).

    Raises:
      ConfigError: naming the field and the fix.
    """
    if kind != "supervised":
        raise ConfigError(f"[federated] trains supervised members, and task.kind = {kind!r}; remove [federated] "
                          "or use task.kind = \"supervised\"")
    for name in ("clients", "local_steps", "shards_per_client"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"federated.{name} = {getattr(cfg, name)}: must be >= 1")
    if not 0 < cfg.client_fraction <= 1:
        raise ConfigError(f"federated.client_fraction = {cfg.client_fraction}: the share of clients sampled each "
                          "round, in (0, 1]")
    choice("federated.partition", cfg.partition, PARTITIONS)
    choice("federated.weighting", cfg.weighting, WEIGHTINGS)
    choice("federated.server_optim", cfg.server_optim, SERVER_OPTIMS)
    if not (cfg.alpha > 0 and math.isfinite(cfg.alpha)):
        raise ConfigError(f"federated.alpha = {cfg.alpha}: the Dirichlet concentration must be a finite number > 0 "
                          "(0.1: each client holds mostly one or two classes; 100: close to iid)")
    for name in ("server_momentum", "server_b1", "server_b2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"federated.{name} = {getattr(cfg, name)}: a decay in [0, 1)")
    if not cfg.server_eps > 0:
        raise ConfigError(f"federated.server_eps = {cfg.server_eps}: must be > 0")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"federated.seed = {cfg.seed}: must be in [0, 2^32)")
    if train.chunk_steps % cfg.local_steps:
        raise ConfigError(f"train.chunk_steps = {train.chunk_steps} is not a multiple of federated.local_steps = "
                          f"{cfg.local_steps}: rounds run inside the compiled chunks; set chunk_steps to a multiple, "
                          f"e.g. {cfg.local_steps * max(1, train.chunk_steps // cfg.local_steps)}")
    if train.full_batch:
        raise ConfigError("train.full_batch = true with [federated]: each client draws minibatches from its own "
                          "examples; remove train.full_batch (a batch_size of at least a client's examples is close)")
    if data.fresh:
        raise ConfigError("data.fresh = true with [federated]: clients hold parts of a fixed training set; remove "
                          "data.fresh")
    n = data.n_train or info.n_train
    if cfg.partition != "iid" and (info.regression or info.target_shape != ()):
        raise ConfigError(f"federated.partition = {cfg.partition!r} deals examples by their class, and data.name = "
                          f"{data.name!r} has {'real-valued targets' if info.regression else 'several labels'} "
                          "per example; use partition = \"iid\"")
    if n < cfg.clients:
        raise ConfigError(f"federated.clients = {cfg.clients}: the training set has {n} examples, fewer than one "
                          "per client; use fewer clients or more data (data.n_train)")
    if cfg.partition == "shards" and cfg.shards_per_client * cfg.clients > n:
        raise ConfigError(f"federated.shards_per_client = {cfg.shards_per_client} × clients = {cfg.clients} "
                          f"shards of {n} examples: fewer than one example per shard; lower either")


def federated_plan(cfg, n_members: int) -> str:
    """One line for ``--dry-run``: federations × clients, rounds and what a round does."""
    f, t = cfg.federated, cfg.train
    part = {"iid": "iid", "shards": f"shards ({f.shards_per_client} per client, label-sorted)",
            "dirichlet": f"dirichlet (alpha {f.alpha:g})"}[f.partition]
    server = {"sgd": "FedAvg" if f.server_learning_rate == 1 else "server SGD", "momentum": "FedAvgM",
              "adam": "FedAdam"}[f.server_optim]
    return (f"federated: {n_members // f.clients} federation(s) x {f.clients} clients, {t.steps // f.local_steps} "
            f"rounds of {f.local_steps} local steps, {selected_per_round(f)} client(s) per round, partition "
            f"{part}, {server} weighted by {f.weighting}"
            + (f", FedProx mu {f.prox_mu:g}" if f.prox_mu else ""))
