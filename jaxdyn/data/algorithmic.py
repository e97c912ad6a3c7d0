"""Algorithmic datasets for grokking and hidden-progress studies: modular arithmetic and sparse parity.

Both are pure functions of their ``[data]`` fields, generated with numpy's PCG64
generator seeded from ``data.seed`` (nothing is cached: they take milliseconds).
Their ``DatasetInfo`` comes from the config alone, and every field is checked there,
so a bad value is a ``ConfigError`` before any data is made or anything compiles.

Token inputs (``DatasetInfo.vocab > 0``) are integer ids stored as float32, exact for
ids below 2^24; ``data.standardize``, ``data.shift`` and ``data.noise_std`` would
turn them into something that is no id, and are refused (``check_token_inputs``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo
from jaxdyn.errors import ConfigError, closest

# --------------------------------------------------------------------------- modular

MODULAR_OPS = ("add", "sub", "mul", "div")
MODULAR_ENCODINGS = ("tokens", "onehot")  # the first is the default (data.encoding = "")
MAX_PAIRS = 2**31 - 1  # examples are gathered by int32 index


def is_prime(n: int) -> bool:
    """Trial division: enough for any modulus whose p² pairs fit in memory."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def modular_encoding(cfg) -> str:
    """``data.encoding`` on ``modular``: ``"tokens"`` unless set."""
    return cfg.encoding or MODULAR_ENCODINGS[0]


def _choice(field: str, value: str, options, dataset: str, meaning: str) -> None:
    if value not in options:
        raise ConfigError(f"data.{field} = {value!r} is not known for data.name = {dataset!r}"
                          f"{closest(value, options)} ({meaning})")


def check_modular(cfg) -> None:
    """Range checks of the fields ``modular`` reads; raises ``ConfigError`` naming the field and the fix."""
    _choice("op", cfg.op, MODULAR_OPS, "modular", "the label is (a op b) mod p")
    _choice("encoding", modular_encoding(cfg), MODULAR_ENCODINGS, "modular",
            '"tokens": x = [a, b, p] as ids, the default; "onehot": x = [onehot(a), onehot(b)]')
    if cfg.p < 2:
        raise ConfigError(f"data.p = {cfg.p}: the modulus must be >= 2; the literature uses a prime such as 97")
    if cfg.p * cfg.p > MAX_PAIRS:
        raise ConfigError(f"data.p = {cfg.p}: p² = {cfg.p * cfg.p:,} pairs is more than one dataset holds "
                          f"(at most {MAX_PAIRS:,}); use p <= {math.isqrt(MAX_PAIRS)}")
    if cfg.op == "div" and not is_prime(cfg.p):
        raise ConfigError(f"data.p = {cfg.p} is not prime, so not every b in 1..p-1 has an inverse mod p and "
                          f"data.op = \"div\" is undefined; use a prime p such as 97 (or another data.op)")
    if not 0 < cfg.train_fraction < 1:
        raise ConfigError(f"data.train_fraction = {cfg.train_fraction}: give a fraction in (0, 1), e.g. 0.5; the "
                          "rest of the pairs is the test set")


def modular_sizes(cfg) -> tuple[int, int]:
    """``(n_train, n_test)``: ``round(train_fraction · pairs)`` pairs train (at least one, and one fewer than
    all), the rest test; pairs is p² (p(p-1) for div)."""
    n = cfg.p * (cfg.p - 1 if cfg.op == "div" else cfg.p)
    n_train = min(max(int(math.floor(cfg.train_fraction * n + 0.5)), 1), n - 1)
    return n_train, n - n_train


def modular_info(cfg) -> DatasetInfo:
    check_modular(cfg)
    tokens = modular_encoding(cfg) == "tokens"
    return DatasetInfo(*modular_sizes(cfg), input_shape=(3,) if tokens else (2 * cfg.p,), n_classes=cfg.p,
                       vocab=cfg.p + 1 if tokens else 0)


def load_modular(cfg) -> Dataset:
    """Modular arithmetic (Power et al. 2022, "Grokking"): every pair (a, b) with its label (a ∘ b) mod p.

    ``a`` and ``b`` range over 0..p-1 (for ``div``, b over 1..p-1 and the label is
    ``a · b⁻¹ mod p``, b⁻¹ the inverse mod the prime p). The pairs are dealt by one
    permutation drawn from ``data.seed``: its first ``modular_sizes(cfg)[0]`` are the
    training set, in that order (so ``data.n_train`` keeps a random subset, and a
    larger ``train_fraction`` with the same seed keeps a smaller one's training
    pairs), the rest the test set. Inputs: ``"tokens"``, ``[a, b, p]`` as float32
    ids (id p is "=", vocab p + 1); ``"onehot"``, ``[onehot(a), onehot(b)]`` of
    length 2p. Labels: int32 classes 0..p-1; guessing scores 1/p.
    """
    check_modular(cfg)
    p = cfg.p
    a, b = np.meshgrid(np.arange(p, dtype=np.int64), np.arange(1 if cfg.op == "div" else 0, p, dtype=np.int64),
                       indexing="ij")
    a, b = a.ravel(), b.ravel()
    if cfg.op == "add":
        y = (a + b) % p
    elif cfg.op == "sub":
        y = (a - b) % p
    elif cfg.op == "mul":
        y = (a * b) % p
    else:
        inverse = np.array([0] + [pow(i, -1, p) for i in range(1, p)], dtype=np.int64)
        y = (a * inverse[b]) % p
    n_train, _ = modular_sizes(cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(a))
    if modular_encoding(cfg) == "tokens":
        x = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.float32)
    else:
        eye = np.eye(p, dtype=np.float32)
        x = np.concatenate([eye[a], eye[b]], axis=1)
    y = y.astype(np.int32)
    train, test = order[:n_train], order[n_train:]
    return Dataset(x[train], y[train], x[test], y[test])


# ---------------------------------------------------------------------------- parity

PARITY_TEST = 1_000
PARITY_TRAIN = 10_000  # data.n_examples = 0
PARITY_ENCODINGS = ("signs", "tokens")  # the first is the default (data.encoding = "")
PARITY_LABELS = ("classes", "signs")


def parity_encoding(cfg) -> str:
    """``data.encoding`` on ``parity``: ``"signs"`` unless set."""
    return cfg.encoding or PARITY_ENCODINGS[0]


def check_parity(cfg) -> None:
    """Range checks of the fields ``parity`` reads; raises ``ConfigError`` naming the field and the fix."""
    _choice("encoding", parity_encoding(cfg), PARITY_ENCODINGS, "parity",
            '"signs": bits as -1/+1 floats, the default; "tokens": bits as ids 0/1')
    _choice("labels", cfg.labels, PARITY_LABELS, "parity",
            '"classes": 0/1, two classes; "signs": +1/-1 regression targets')
    if cfg.n < 1:
        raise ConfigError(f"data.n = {cfg.n}: must be >= 1, e.g. 30")
    if not 1 <= cfg.k <= cfg.n:
        raise ConfigError(f"data.k = {cfg.k}: the label is the parity of the first k of data.n = "
                          f"{cfg.n} bits; use 1 <= k <= {cfg.n} (or raise data.n)")
    if cfg.n_examples < 0:
        raise ConfigError(f"data.n_examples = {cfg.n_examples}: the training set needs >= 1 example, e.g. 10000 "
                          f"(0: the default, {PARITY_TRAIN})")


def parity_info(cfg) -> DatasetInfo:
    check_parity(cfg)
    return DatasetInfo(cfg.n_examples or PARITY_TRAIN, PARITY_TEST, input_shape=(cfg.n,),
                       n_classes=2 if cfg.labels == "classes" else 0,
                       vocab=2 if parity_encoding(cfg) == "tokens" else 0)


def load_parity(cfg) -> Dataset:
    """Sparse parity (Barak et al. 2022, "Hidden progress in deep learning"): n uniform random bits,
    labelled by the parity of k of them.

    The k bits are the first k (without loss of generality: a network's inputs have no
    order). Each example is ``data.n`` independent fair bits; the training set
    (``data.n_examples``) and the test set (1000) are drawn independently, each from
    its own stream of ``data.seed``, so the test set is the same for every
    ``n_examples`` and ``k`` (for a small ``n`` the two sets share inputs). A
    bit ``v`` is the input ``(-1)^v`` under ``"signs"`` and the id ``v`` under
    ``"tokens"``; the label is ``parity = (sum of the first k bits) mod 2``, as an
    int32 class under ``labels = "classes"``, or the float32 ``(-1)^parity`` under
    ``"signs"`` (the product of the first k signs: regression). Guessing scores
    accuracy 1/2; with ``"signs"`` labels, predicting 0 scores MSE 1.
    """
    check_parity(cfg)
    train_seq, test_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    arrays = []
    for seq, n in ((train_seq, cfg.n_examples or PARITY_TRAIN), (test_seq, PARITY_TEST)):
        bits = np.random.default_rng(seq).integers(0, 2, (n, cfg.n), dtype=np.int8)
        arrays += _parity_examples(np, bits, cfg)
    return Dataset(*arrays)


def _parity_examples(xp, bits, cfg) -> list:
    """``[x, y]`` of int ``bits [B, n]`` (values 0/1), in numpy or jax.numpy (``xp``)."""
    parity = bits[:, :cfg.k].sum(axis=1, dtype=xp.int32) % 2
    x = bits.astype(xp.float32) if parity_encoding(cfg) == "tokens" else (1 - 2 * bits).astype(xp.float32)
    y = parity.astype(xp.int32) if cfg.labels == "classes" else (1 - 2 * parity).astype(xp.float32)
    return [x, y]


def parity_sampler(cfg):
    """``data.fresh``: ``(key, batch_size) -> (x, y)``, a batch of new examples drawn on the device
    (``batch_size`` uniform fair bit strings of length ``data.n``, jax's bernoulli under ``key``),
    encoded and labelled as ``load_parity`` encodes its training set. Online SGD, as Barak et al.
    2022 train: no example is seen twice (the chance of a repeat is ``2^-n`` per pair)."""
    check_parity(cfg)

    def sample(key: jax.Array, batch_size: int):
        bits = jax.random.bernoulli(key, 0.5, (batch_size, cfg.n)).astype(jnp.int32)
        return tuple(_parity_examples(jnp, bits, cfg))

    return sample


# --------------------------------------------------------------------------- shared

REAL_ENCODING = {"modular": "onehot", "parity": "signs"}  # each one's real-valued data.encoding

def check_token_inputs(cfg, info: DatasetInfo, noise_std: float | None = None) -> None:
    """Refuse what rescales or perturbs token ids (inputs of a dataset with ``info.vocab > 0``):
    ``data.standardize``, ``data.shift`` and ``data.noise_std > 0`` (``noise_std``: a member's
    value, by default the config's)."""
    if not info.vocab:
        return
    noise_std = cfg.noise_std if noise_std is None else noise_std
    what = (f"data.name = {cfg.name!r} gives token ids in [0, {info.vocab}) as inputs"
            + (f' (data.encoding = "{cfg.encoding}")' if cfg.encoding else ""))
    real = REAL_ENCODING.get(cfg.name)
    fix = "remove it" + (f', or set data.encoding = "{real}" for real-valued inputs' if real else "")
    ids = "which turns ids into non-integers"
    for field, value, does in (("standardize", cfg.standardize, f"z-scores each input feature, {ids}"),
                               ("shift", cfg.shift, "rolls each example along its positions, which moves each "
                                                    "token away from the position that gives it its meaning"),
                               ("noise_std", noise_std, f"adds Gaussian noise to each input, {ids}")):
        if value:
            shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
            raise ConfigError(f"data.{field} = {shown}: {what}, and data.{field} {does}; {fix}")
