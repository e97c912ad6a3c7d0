"""Cross-member probes: representational similarity (``cka``) and linear mode connectivity
(``lmc_barrier``). Their rows go to ``pairs.parquet``
(``cohort, member_a, member_b, step, metric, layer, value``).

Pairs (option ``pairs``): ``setting`` takes every pair of members that share all
hyperparameters (the seeds of one setting); ``reference`` takes each member
against the first member of its setting.

- ``cka``: linear CKA (Kornblith et al. 2019) per layer between two members'
  sown outputs on the probe batch (evaluation mode), from each member's centred
  Gram matrix ``K = H Hᵀ`` (``[n, n]``, whatever the layer's width):
  ``CKA = ⟨K̃_a, K̃_b⟩ / (‖K̃_a‖ ‖K̃_b‖)``. ``debiased = true`` uses the unbiased
  HSIC estimator of Song et al. (2012), as Nguyen et al. (2021) recommend for
  narrow batches. Each member's Grams are computed on its own device; the pairs
  are combined on the host. CKA is NaN where a layer's outputs are the same for
  every example of the batch in either member (its centred Gram is 0, so CKA is
  0/0: Kornblith et al. 2019, eq. 4 needs both self-HSICs positive), and in the
  debiased form also where a self-HSIC estimate comes out negative (its square
  root has no value).
- ``lmc_barrier``: along ``θ(α) = (1 − α) θ_a + α θ_b`` on ``alphas`` points of
  [0, 1], the loss barrier ``max_α L(θ(α)) − [(1 − α) L(θ_a) + α L(θ_b)]`` of the
  training objective on the probe batch (BatchNorm statistics recomputed at every
  point of the path from the probe batch itself; dropout off). The members are
  NOT permutation-aligned first (no weight matching, Ainsworth et al. 2023), so a
  barrier between differently seeded members is expected. The losses along the
  path are written too, as ``lmc_path_loss`` rows whose ``layer`` holds α.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxdyn.errors import ConfigError
from jaxdyn.probes.base import Probe

PAIR_MODES = ("setting", "reference")


@dataclass(frozen=True)
class CKAOptions:
    every: int = 1
    pairs: str = "setting"  # setting (all pairs of seeds) | reference (each against its setting's first)
    debiased: bool = False  # the unbiased HSIC estimator

    def check(self) -> None:
        if self.pairs not in PAIR_MODES:
            raise ConfigError(f"probes.cka.pairs = {self.pairs!r}: use one of {', '.join(PAIR_MODES)}")

    def min_batch(self) -> tuple[int, str]:
        """The smallest probe batch these options are defined on, and why."""
        if self.debiased:
            return 4, "debiased = true: the unbiased HSIC divides by (n - 1)(n - 2) and n(n - 3), or set it false"
        return 2, "CKA compares examples: a centred Gram matrix of one example is 0"


@dataclass(frozen=True)
class LMCOptions:
    every: int = 1
    pairs: str = "setting"  # setting | reference
    alphas: int = 11  # points on the path, ends included

    def check(self) -> None:
        if self.pairs not in PAIR_MODES:
            raise ConfigError(f"probes.lmc_barrier.pairs = {self.pairs!r}: use one of {', '.join(PAIR_MODES)}")
        if self.alphas < 3:
            raise ConfigError(f"probes.lmc_barrier.alphas = {self.alphas}: give at least 3 points on [0, 1]")


def choose_pairs(members: pd.DataFrame, mode: str) -> list[tuple[int, int]]:
    """Pairs of member ids: within each setting (all hyperparameters equal, seeds aside)."""
    settings = [c for c in members.columns if c not in ("member", "cohort", "part", "init_seed", "data_seed", "dropout_seed")]
    out = []
    for _, group in members.groupby(settings, sort=False, dropna=False):
        ids = group.member.tolist()
        if mode == "reference":
            out += [(ids[0], b) for b in ids[1:]]
        else:
            out += [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    return out


def grams(ctx) -> dict:
    """Per layer, this member's Gram matrix of its centred sown outputs on the probe batch, for the
    plain estimator scaled to unit Frobenius norm (so that CKA is one dot product of two members'
    matrices; NaN for a zero Gram, making every CKA of that layer NaN)."""
    out = {}
    for name, h in ctx.layer_outputs().items():
        h = centred_features(h.reshape(h.shape[0], -1))
        k = h @ h.T
        if not ctx.options.debiased:  # a zero Gram (a layer constant over the batch) has no unit-norm form
            norm = jnp.linalg.norm(k)
            k = jnp.where(norm > 0, k / jnp.where(norm > 0, norm, 1.0), jnp.nan)
        out[name] = k
    return {"gram": out}


def centred_features(h):
    """``h [n, d]`` minus its column means, via the first row so that a column that is the same
    for every example becomes exactly 0 (a rounded mean would leave noise that CKA would compare).
    Centring the features centres the Gram, ``C (h hᵀ) C = (C h)(C h)ᵀ``; the unbiased HSIC does
    not change either, being invariant to shifting the features."""
    h = h - h[:1]
    return h - h.mean(axis=0)


def centred(k: np.ndarray) -> np.ndarray:
    n = k.shape[0]
    c = np.eye(n) - 1.0 / n
    return c @ k @ c


def unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC estimator from Grams with zeroed diagonals."""
    n = k.shape[0]
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    ones = np.ones(n)
    return float((np.sum(k * l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * (ones @ k @ l @ ones)) / (n * (n - 3)))


def cka_from_grams(ka: np.ndarray, kb: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of two Grams ``[n, n]``: NaN when either self-HSIC is 0 (0/0: a Gram that
    centres to 0), or, debiased, when either self-HSIC estimate is negative."""
    ka, kb = ka.astype(np.float64), kb.astype(np.float64)
    ca, cb = centred(ka), centred(kb)
    if _centres_to_zero(ka, ca) or _centres_to_zero(kb, cb):
        return float("nan")
    if debiased:
        cross, self_a, self_b = unbiased_hsic(ka, kb), unbiased_hsic(ka, ka), unbiased_hsic(kb, kb)
    else:
        cross, self_a, self_b = np.sum(ca * cb), np.sum(ca * ca), np.sum(cb * cb)
    if not (self_a > 0 and self_b > 0):  # NaN Grams fail this too
        return float("nan")
    return float(cross / np.sqrt(self_a * self_b))


def _centres_to_zero(k: np.ndarray, c: np.ndarray) -> bool:
    """Whether the centred Gram ``c`` of ``k`` is 0 up to the rounding of centring (n ε ‖k‖): the Gram
    of features that are the same for every example, given uncentred (``grams`` gives exact zeros)."""
    return bool(np.linalg.norm(c) <= k.shape[0] * np.finfo(np.float64).eps * np.linalg.norm(k))


def cka_pairs(ctx, result: dict, state, x, y, pairs, options) -> list[tuple[int, int, str, str, float]]:
    """``(a, b, metric, layer, value)`` from the members' Grams (indexed by member position)."""
    rows = []
    for layer, g in result["gram"].items():
        if options.debiased:
            rows += [(a, b, "cka", layer, cka_from_grams(g[a], g[b], True)) for a, b in pairs]
            continue
        flat = g.reshape(g.shape[0], -1).astype(np.float64)
        sim = flat @ flat.T  # every pair's <K̃_a, K̃_b> of unit-norm centred Grams at once
        rows += [(a, b, "cka", layer, float(sim[a, b])) for a, b in pairs]
    return rows


def path_losses(task, state_a, params_a, params_b, x, y, alphas: np.ndarray) -> jax.Array:
    """The training objective along the straight line from ``params_a`` to ``params_b``."""
    def at(alpha):
        params = jax.tree.map(lambda a, b: (1 - alpha) * a + alpha * b, params_a, params_b)
        return task.probe_loss(params, state_a, x, y)  # batch statistics: recomputed at each point
    return jax.vmap(at)(jnp.asarray(alphas, jnp.float32))


def barrier(losses: np.ndarray, alphas: np.ndarray) -> float:
    line = (1 - alphas) * losses[0] + alphas * losses[-1]
    return float(np.max(losses - line))


def lmc_pairs(ctx, result, state, x, y, pairs, options) -> list[tuple[int, int, str, str, float]]:
    """Barrier and path losses of each pair, computed on the host's default device."""
    if not pairs:
        return []
    alphas = np.linspace(0.0, 1.0, options.alphas)
    a_idx, b_idx = (np.array(i) for i in zip(*pairs))
    pick = lambda idx: jax.tree.map(lambda leaf: leaf[idx], state)
    state_a, state_b = pick(a_idx), pick(b_idx)
    curve = jax.jit(jax.vmap(lambda sa, pb: path_losses(ctx.task, sa, sa.params, pb, x, y, alphas)))
    losses = np.asarray(curve(state_a, state_b.params), np.float64)
    rows = []
    for (a, b), loss in zip(pairs, losses):
        rows.append((a, b, "lmc_barrier", "", barrier(loss, alphas)))
        rows += [(a, b, "lmc_path_loss", f"{alpha:.4g}", float(v)) for alpha, v in zip(alphas, loss)]
    return rows


CKA = Probe("cka", CKAOptions, grams, "linear CKA per layer between members (optionally debiased)", "moderate",
            kind="pairs", pair_fn=cka_pairs)
LMC = Probe("lmc_barrier", LMCOptions, None, "loss barrier along the linear path between two members (no "
            "permutation alignment)", "moderate", kind="pairs", pair_fn=lmc_pairs)
