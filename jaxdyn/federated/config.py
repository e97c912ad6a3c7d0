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

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Mapping

from jaxdyn.data.arrays import is_user_data
from jaxdyn.errors import ConfigError, choice, chunk_steps_fix, closest
from jaxdyn.hparams import HParam
from jaxdyn.parsing import check_type

PARTITIONS = ("iid", "shards", "dirichlet", "natural")
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
    # > 0: E in epochs instead (McMahan et al.'s u = E n_k / B): local_steps becomes
    # max(1, round(local_epochs x examples per client / train.batch_size)), clients holding equal shares
    local_epochs: float = 0.0
    client_fraction: float = 1.0  # C: the share of a federation's clients sampled each round (at least one)
    # iid | shards | dirichlet | natural (a client id per example, handed over with your arrays):
    # how the training set is dealt to the clients
    partition: str = "iid"
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
    if "local_steps" in raw and raw.get("local_epochs", 0):
        raise ConfigError("federated.local_steps and federated.local_epochs are both set; give the round's local "
                          "work in steps or in epochs, not both")
    for key, value in raw.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key federated.{key}{closest(key, list(FIELDS))}")
        values[key] = check_type(f"federated.{key}", value, FIELDS[key])
    return FederatedConfig(**values)


def federated_to_dict(cfg: FederatedConfig) -> dict:
    """The table as ``federated_from_dict`` reads it: the round's work in steps or in epochs, not both."""
    skip = "local_steps" if cfg.local_epochs else "local_epochs"
    return {name: getattr(cfg, name) for name in FIELDS if name != skip}


def selected_per_round(cfg: FederatedConfig) -> int:
    """m = max(1, round(C · clients)): clients in each round's average (McMahan et al.'s max(C·K, 1))."""
    return max(1, min(cfg.clients, int(math.floor(cfg.client_fraction * cfg.clients + 0.5))))


def n_per_client(cfg: FederatedConfig, data, info) -> float:
    """Training examples per client on average (every partition deals near-equal shares)."""
    return (data.n_train or info.n_train) / cfg.clients


def with_epochs(cfg: FederatedConfig, data, info, batch_size: int) -> FederatedConfig:
    """``cfg`` with ``local_steps`` from ``local_epochs`` when that is set: E epochs of n_k examples in
    batches of B are ``round(E n_k / B)`` steps (at least one)."""
    if not cfg.local_epochs > 0:
        return cfg
    steps = max(1, int(math.floor(cfg.local_epochs * n_per_client(cfg, data, info) / batch_size + 0.5)))
    return dataclasses.replace(cfg, local_steps=steps)


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
    if not (cfg.local_epochs >= 0 and math.isfinite(cfg.local_epochs)):
        raise ConfigError(f"federated.local_epochs = {cfg.local_epochs}: epochs of local work per round, > 0 "
                          "(or 0: federated.local_steps gives it in steps)")
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
        source = (f" (from local_epochs = {cfg.local_epochs:g}: {cfg.local_epochs:g} x {n_per_client(cfg, data, info):g} "
                  f"examples per client / batch_size {train.batch_size})" if cfg.local_epochs else "")
        raise ConfigError(f"train.chunk_steps = {train.chunk_steps} is not a multiple of federated.local_steps = "
                          f"{cfg.local_steps}{source}: rounds run inside the compiled chunks; "
                          f"{chunk_steps_fix(train.steps, train.chunk_steps, train.log_every, cfg.local_steps)}")
    if train.full_batch:
        raise ConfigError("train.full_batch = true with [federated]: each client draws minibatches from its own "
                          "examples; remove train.full_batch (a batch_size of at least a client's examples is close)")
    if data.fresh:
        raise ConfigError("data.fresh = true with [federated]: clients hold parts of a fixed training set; remove "
                          "data.fresh")
    if cfg.partition == "natural" and not is_user_data(data.name):
        raise ConfigError(f"federated.partition = \"natural\" reads a client id per training example, and data.name "
                          f"= {data.name!r} has none; hand your arrays over with them, jaxdyn.run(data={{\"x\": ..., "
                          "\"y\": ..., \"x_test\": ..., \"y_test\": ..., \"client\": ids}), or use another partition")
    n = data.n_train or info.n_train
    if cfg.partition in ("shards", "dirichlet") and (info.regression or info.target_shape != ()):
        raise ConfigError(f"federated.partition = {cfg.partition!r} deals examples by their class, and data.name = "
                          f"{data.name!r} has {'real-valued targets' if info.regression else 'several labels'} "
                          "per example; use partition = \"iid\"")
    if n < cfg.clients:
        raise ConfigError(f"federated.clients = {cfg.clients}: the training set has {n} examples, fewer than one "
                          "per client; use fewer clients or more data (data.n_train)")
    if cfg.partition == "shards" and cfg.shards_per_client * cfg.clients > n:
        raise ConfigError(f"federated.shards_per_client = {cfg.shards_per_client} × federated.clients = "
                          f"{cfg.clients} makes {cfg.shards_per_client * cfg.clients} shards of {n} training "
                          f"examples: fewer than one example per shard; lower either")


def federated_plan(cfg, n_members: int, info) -> str:
    """One line for ``--dry-run``: federations × clients, rounds and what a round does (``info``:
    the dataset's ``DatasetInfo``, for ``local_epochs``)."""
    t = cfg.train
    f = with_epochs(cfg.federated, cfg.data, info, t.batch_size)
    part = {"iid": "iid", "shards": f"shards ({f.shards_per_client} per client, label-sorted)",
            "dirichlet": f"dirichlet (alpha {f.alpha:g})"}[f.partition]
    server = {"sgd": "FedAvg" if f.server_learning_rate == 1 else "server SGD", "momentum": "FedAvgM",
              "adam": "FedAdam"}[f.server_optim]
    epochs = f" ({f.local_epochs:g} epochs)" if f.local_epochs else ""
    return (f"federated: {n_members // f.clients} federation(s) x {f.clients} clients, {t.steps // f.local_steps} "
            f"rounds of {f.local_steps} local steps{epochs}, {selected_per_round(f)} client(s) per round, partition "
            f"{part}, {server} weighted by {f.weighting}"
            + (f", FedProx mu {f.prox_mu:g}" if f.prox_mu else ""))
