"""How a training set is dealt to the clients of a federation: ``iid``, ``shards``, ``dirichlet``.

A partition is a pure function of the labels, the ``[federated]`` settings and
``data.seed`` (numpy's PCG64, seeded from ``data.seed`` and a tag), so every federation of
a cohort, and every process, sees the same one. Every training example goes to exactly
one client, and every client gets at least one.

On the device a partition is three int32 arrays (``ClientExamples``): the example
indices grouped by client (``order``), where each client's group starts (``start``) and
how long it is (``count``); client c draws example ``order[start[c] + j]``, j uniform in
``[0, count[c])``.
"""

from typing import NamedTuple

import numpy as np
import pandas as pd

from jaxdyn.errors import ConfigError

_TAG = 0x6FED  # folded into data.seed so the partition's stream differs from the data's own


class ClientExamples(NamedTuple):
    """A partition as arrays: ``order [N]``, ``start [clients]``, ``count [clients]`` (int32)."""

    order: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, parts: list[np.ndarray]) -> "ClientExamples":
        count = np.array([len(p) for p in parts], np.int32)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int32)
        return cls(np.concatenate(parts).astype(np.int32), start, count)

    def parts(self) -> list[np.ndarray]:
        return [self.order[s:s + c] for s, c in zip(self.start, self.count)]


def iid(n: int, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into ``clients`` parts whose sizes differ by at most one."""
    return [np.sort(p) for p in np.array_split(rng.permutation(n), clients)]


def shards(labels: np.ndarray, clients: int, per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    """McMahan et al. (2017)'s pathological non-IID split: sort by label (stably, so ties keep
    their index order), cut into ``per_client × clients`` shards of consecutive examples (sizes
    differing by at most one), and give each client ``per_client`` shards drawn at random without
    replacement. A client then holds at most ``per_client`` classes, plus one for every shard that
    straddles a class boundary."""
    pieces = np.array_split(np.argsort(labels, kind="stable"), per_client * clients)
    dealt = rng.permutation(len(pieces)).reshape(clients, per_client)
    return [np.sort(np.concatenate([pieces[i] for i in row])) for row in dealt]


def dirichlet(labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Hsu et al. (2019, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification"): client k draws a class mix ``q_k ~ Dir(alpha · p)`` (p: the classes'
    frequencies in the training set) and fills its share (sizes as in ``iid``) from the classes in
    those proportions, without replacement. When a class runs out, the rest of that client's share
    is redrawn over the classes left, in proportion to its q_k restricted to them (uniformly if q_k
    is zero on all of them), so every example is dealt once. Small alpha: a client holds mostly
    one class; alpha → ∞: iid."""
    classes, inverse = np.unique(labels, return_inverse=True)
    pools = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    left = np.array([len(p) for p in pools])
    used = np.zeros(len(classes), np.int64)
    prior = left / left.sum()
    parts = []
    for size in (len(p) for p in np.array_split(np.arange(len(labels)), clients)):
        q = rng.dirichlet(alpha * prior)
        if not np.all(np.isfinite(q)):  # tiny concentrations can underflow: all mass on one class
            q = np.eye(len(classes))[rng.choice(len(classes), p=prior)]
        take = np.zeros(len(classes), np.int64)
        need = size
        while need:
            w = q * (left > 0)
            w = w / w.sum() if w.sum() > 0 else (left > 0) / (left > 0).sum()
            draw = np.minimum(rng.multinomial(need, w), left)
            take, left, need = take + draw, left - draw, need - int(draw.sum())
        parts.append(np.sort(np.concatenate([pools[c][used[c]:used[c] + take[c]] for c in range(len(classes))])))
        used += take
    return parts


def natural(ids, clients: int, n: int) -> list[np.ndarray]:
    """Each client's examples from a client id per training example (0 .. clients - 1).

    Raises:
      ConfigError: no ids, ids of the wrong length or kind, out of range, or a client without examples.
    """
    if ids is None:
        raise ConfigError("federated.partition = \"natural\" reads a client id per training example, and the data "
                          "has none; hand them over: jaxdyn.run(data={\"x\": ..., \"y\": ..., \"x_test\": ..., "
                          "\"y_test\": ..., \"client\": ids})")
    ids = np.asarray(ids)
    if ids.shape != (n,) or ids.dtype.kind not in "iu":
        raise ConfigError(f"client ids: {ids.dtype}{list(ids.shape)}; give one integer per training example, "
                          f"int[{n}]")
    if ids.min() < 0 or ids.max() >= clients:
        raise ConfigError(f"client ids run from {ids.min()} to {ids.max()}, and federated.clients = {clients}; "
                          f"use ids 0 .. {clients - 1}, or set clients = {ids.max() + 1}")
    counts = np.bincount(ids, minlength=clients)
    if (counts == 0).any():
        raise ConfigError(f"client {int(np.argmin(counts))} has no examples (client ids 0 .. {clients - 1}); every "
                          "client needs at least one")
    return [np.flatnonzero(ids == c) for c in range(clients)]


def partition(cfg, labels: np.ndarray, data_seed: int, ids=None) -> ClientExamples:
    """The partition ``[federated]`` (``cfg``) asks for, of a training set with these ``labels [N]``
    (any dtype; only ``iid`` and ``natural`` are allowed for real-valued targets, which validation
    checks); ``ids``: the client id per example for ``natural``."""
    rng = np.random.default_rng([data_seed, _TAG])
    if cfg.partition == "natural":
        parts = natural(ids, cfg.clients, len(labels))
    elif cfg.partition == "iid":
        parts = iid(len(labels), cfg.clients, rng)
    elif cfg.partition == "shards":
        parts = shards(labels, cfg.clients, cfg.shards_per_client, rng)
    else:
        parts = dirichlet(labels, cfg.clients, cfg.alpha, rng)
    return ClientExamples.of(parts)


def partition_table(examples: ClientExamples, labels: np.ndarray, n_classes: int, cohort: int) -> pd.DataFrame:
    """``partition.parquet``'s rows of one cohort: ``cohort, client, examples`` and, for a
    classification dataset, ``label_<c>``: the client's examples of class c."""
    frame = pd.DataFrame({"cohort": np.int32(cohort), "client": np.arange(len(examples.count), dtype=np.int32),
                          "examples": examples.count.astype(np.int64)})
    if n_classes:
        hist = np.stack([np.bincount(labels[p].astype(np.int64), minlength=n_classes) for p in examples.parts()])
        for c in range(n_classes):
            frame[f"label_{c}"] = hist[:, c]
    return frame
