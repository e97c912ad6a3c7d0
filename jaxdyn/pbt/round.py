"""One round of population-based training (Jaderberg et al. 2017, "Population Based
Training of Neural Networks", arXiv:1711.09846) as a pure function of the stacked population.

A round is exploit then explore. ``choose_parents`` picks, for every member, the member
whose state it continues from (itself, or a better donor of its own group);
``gather_members`` copies the donors' params, model state, optimizer state and
hyperparameters along the member axis; ``explore`` changes the copied hyperparameters.
Every shape is fixed and every choice is a ``where``, so ``jax.jit(pbt_round,
static_argnames="options")`` compiles one program per options value, whatever the scores.

Randomness (documented so that a test can redraw it): ``pbt_round`` splits its key into
``k_exploit, k_explore = jax.random.split(key)``. Exploit draws ONE
``u = jax.random.uniform(k_exploit, (K,))``. Explore folds ``k_explore`` with the position
of each hyperparameter in ``names`` and splits that into three keys (factor, coin, value).
"""

import math
from dataclasses import dataclass
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdyn.tasks.base import MemberState

EXPLOITS = ("truncation", "tournament")
EXPLORES = ("perturb", "resample")


@dataclass(frozen=True)
class PBTRoundOptions:
    """What a round does: hashable, so it is a static argument of ``jax.jit``.

    Attributes:
      exploit: ``"truncation"`` or ``"tournament"`` (``choose_parents``).
      fraction: truncation's share of each group that copies, and that is copied from, in (0, 0.5].
      explore: ``"perturb"`` or ``"resample"`` (``explore``).
      factors: perturb multiplies by one of these, uniformly.
      resample_probability: resample's chance of a fresh draw instead of a perturbation.
      mode: ``"max"``: a higher score is better; ``"min"``: lower (scores are negated).
      hparams: the names in ``MemberState.hparams`` that explore changes.
      bounds: ``((name, (low, high)), ...)``: the closed range each explored value is clipped to
        (a name without bounds is not clipped, and cannot be resampled).
      log_scale: ``((name, bool), ...)``: resample draws log-uniformly (rates, positive scales);
        a name left out is drawn uniformly.
    """

    exploit: str = "truncation"
    fraction: float = 0.25
    explore: str = "perturb"
    factors: tuple[float, ...] = (0.8, 1.25)
    resample_probability: float = 0.25
    mode: str = "max"
    hparams: tuple[str, ...] = ()
    bounds: tuple[tuple[str, tuple[float, float]], ...] = ()
    log_scale: tuple[tuple[str, bool], ...] = ()

    def __post_init__(self):
        # config.check_pbt gives users the same checks with config field names; these guard direct callers.
        if self.exploit not in EXPLOITS:
            raise ValueError(f"exploit = {self.exploit!r}: use one of {', '.join(EXPLOITS)}")
        if self.explore not in EXPLORES:
            raise ValueError(f"explore = {self.explore!r}: use one of {', '.join(EXPLORES)}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode = {self.mode!r}: use \"max\" or \"min\"")
        if not 0 < self.fraction <= 0.5:
            raise ValueError(f"fraction = {self.fraction}: must lie in (0, 0.5]")
        if not self.factors or any(not (f > 0 and math.isfinite(f)) for f in self.factors):
            raise ValueError(f"factors = {self.factors}: give one or more finite numbers > 0")
        if not 0 <= self.resample_probability <= 1:
            raise ValueError(f"resample_probability = {self.resample_probability}: a probability in [0, 1]")


def _cut_sizes(n_max: int, fraction: float) -> np.ndarray:
    """``[n_max + 1]`` int32: how many of n ranked members truncation moves, for every n.

    ceil(fraction * n), capped at floor(n / 2) so that the copying bottom and the copied
    top never overlap. The fraction is read as the decimal it was written as
    (``Fraction(repr(0.1)) == 1/10``), so 0.1 of 10 members is exactly 1, not ceil(1.0000001).
    """
    exact = Fraction(repr(float(fraction)))
    return np.array([min(math.ceil(exact * n), n // 2) for n in range(n_max + 1)], np.int32)


def _group_ranks(scores, eligible, groups):
    """Rank the eligible members within each group.

    Returns ``(order [K], start [K], n [K], rank [K])``: ``order`` lists the members by
    group, eligible first, best score first, then lower member index (ties are stable);
    for member i, ``order[start[i] + r]`` is the r-th best eligible member of its group
    (r < ``n[i]``, the group's eligible count) and ``rank[i]`` is i's own rank (0 = best;
    meaningless for an ineligible member).
    """
    k = scores.shape[0]
    index = jnp.arange(k, dtype=jnp.int32)
    # Ineligible scores may be NaN: sort them on 0 (they come after the eligible anyway).
    # lax.sort compares -0.0 and +0.0 as equal, so signed zeros tie and fall to the index.
    score = jnp.where(eligible, scores, 0.0)
    order = jnp.lexsort((index, -score, ~eligible, groups)).astype(jnp.int32)  # last key is primary
    sorted_groups = groups[order]
    first = jnp.concatenate([jnp.ones(1, bool), sorted_groups[1:] != sorted_groups[:-1]])
    segment = jnp.cumsum(first) - 1  # 0, 1, ... per group in sorted order
    position = jnp.arange(k, dtype=jnp.int32)
    start_sorted = lax.cummax(jnp.where(first, position, 0))
    n_sorted = jax.ops.segment_sum(eligible[order].astype(jnp.int32), segment, num_segments=k)[segment]
    at = jnp.zeros(k, jnp.int32).at[order].set(position)  # member i sits at sorted position at[i]
    start, n = start_sorted[at], n_sorted[at]
    return order, start, n, at - start


def _truncation(score, eligible, order, start, n, rank, u, fraction):
    """Bottom ``_cut_sizes`` of each group (and every ineligible member) copy a donor drawn
    uniformly from the group's top ``max(cut, 1)``: the ``floor(u * top)``-th best."""
    cut = jnp.asarray(_cut_sizes(score.shape[0], fraction))[n]
    top = jnp.maximum(cut, jnp.minimum(n, 1))  # one eligible member: the ineligible still copy it
    draw = jnp.minimum(jnp.floor(u * top).astype(jnp.int32), jnp.maximum(top, 1) - 1)
    donor = order[jnp.minimum(start + draw, score.shape[0] - 1)]
    copies = (n > 0) & (~eligible | (rank >= n - cut))
    return copies, donor


def _tournament(score, eligible, order, start, n, rank, u, fraction):
    """Each member meets one other ELIGIBLE member of its group, the ``floor(u * m)``-th best
    of those m others, and copies it if that one scores strictly higher (or itself is ineligible)."""
    others = n - eligible.astype(jnp.int32)
    draw = jnp.minimum(jnp.floor(u * others).astype(jnp.int32), jnp.maximum(others, 1) - 1)
    draw = draw + (eligible & (draw >= rank)).astype(jnp.int32)  # step over itself in the ranking
    rival = order[jnp.minimum(start + draw, score.shape[0] - 1)]
    copies = (others > 0) & (~eligible | (score[rival] > score))
    return copies, rival


SELECTIONS = {"truncation": _truncation, "tournament": _tournament}


def choose_parents(scores, eligible, groups, key, exploit: str = "truncation", fraction: float = 0.25,
                   mode: str = "max"):
    """Whose state each member continues from: the exploit step.

    Args:
      scores: float32 [K]; higher is better with ``mode="max"``, lower with ``"min"``.
      eligible: bool [K]; False for a diverged member. A non-finite score (NaN, +-inf) also
        makes a member ineligible. An ineligible member ALWAYS copies an eligible donor of its
        group and is never a donor.
      groups: int32 [K]; members interact only within equal values (independent PBT
        populations side by side). A group with no eligible member copies nothing.
      key: PRNG key; draws ``u = jax.random.uniform(key, (K,))``, one number per member.
      exploit: ``"truncation"``: rank each group's eligible members (best score first, ties to
        the lower member index); with n of them, the bottom ``c = min(ceil(fraction * n), n // 2)``
        and every ineligible member copy the ``floor(u[i] * t)``-th best, ``t = max(c, 1)``.
        ``"tournament"``: member i meets the ``floor(u[i] * m)``-th best of the m eligible
        members of its group other than itself, and copies it if its score is strictly higher
        (always, if i is ineligible); m = 0 copies nothing.
      fraction: truncation's share, in (0, 0.5]; unused by tournament.
      mode: ``"max"`` or ``"min"``.

    Returns:
      parents: int32 [K]; ``parents[i] == i`` keeps its own state, else the donor's index.
    """
    score = scores.astype(jnp.float32) * (1.0 if mode == "max" else -1.0)
    eligible = eligible.astype(bool) & jnp.isfinite(score)
    groups = groups.astype(jnp.int32)
    order, start, n, rank = _group_ranks(score, eligible, groups)
    u = jax.random.uniform(key, score.shape)
    copies, donor = SELECTIONS[exploit](score, eligible, order, start, n, rank, u, fraction)
    return jnp.where(copies, donor, jnp.arange(score.shape[0], dtype=jnp.int32))


def gather_members(tree, parents):
    """``tree`` (leaves [K, ...]) with member i replaced by member ``parents[i]`` (a gather:
    a member that is its own parent keeps its bits exactly)."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, parents, axis=0), tree)


def _explore_one(value, key, method, factors, resample_probability, bounds, log):
    """New values [K] of one hyperparameter for every member (the caller keeps the uncopied)."""
    k_factor, k_coin, k_value = jax.random.split(key, 3)
    choice = jax.random.randint(k_factor, value.shape, 0, len(factors))
    new = value * jnp.asarray(factors, jnp.float32)[choice]
    low, high = bounds
    if method == "resample":
        u = jax.random.uniform(k_value, value.shape)
        if log:
            fresh = jnp.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            fresh = low + u * (high - low)
        new = jnp.where(jax.random.uniform(k_coin, value.shape) < resample_probability, fresh, new)
    return jnp.clip(new, jnp.float32(low), jnp.float32(high))


def explore(hparams, copied, key, names=(), method: str = "perturb", factors=(0.8, 1.25),
            resample_probability: float = 0.25, bounds=None, log_scale=None):
    """Change the hyperparameters ``names`` of the members that copied: the explore step.

    Args:
      hparams: name -> float32 [K].
      copied: bool [K]; only these members change. Every other member, and every name not
        in ``names``, comes back bit for bit.
      key: PRNG key; hyperparameter ``names[j]`` uses ``fold_in(key, j)``, split into
        (factor, coin, value) keys, so every member and name has its own draws.
      method: ``"perturb"``: multiply by one of ``factors``, uniformly per member.
        ``"resample"``: with ``resample_probability`` a fresh draw from ``bounds`` (log-uniform
        where ``log_scale[name]``, uniform otherwise), else perturb.
      bounds: name -> (low, high): every new value is clipped into it (float32). A name
        without bounds is not clipped; resample needs finite bounds (and low > 0 on a log scale).
      log_scale: name -> bool.

    Returns:
      name -> float32 [K]: ``hparams`` with the copied members' ``names`` explored.
    """
    bounds, log_scale = dict(bounds or {}), dict(log_scale or {})
    out = dict(hparams)
    for j, name in enumerate(names):
        if name not in hparams:
            raise KeyError(f"explore: {name!r} is not a member hyperparameter; have {sorted(hparams)}")
        low, high = (float(b) for b in bounds.get(name, (-math.inf, math.inf)))
        log = bool(log_scale.get(name, False))
        if method == "resample" and not (math.isfinite(low) and math.isfinite(high) and (low > 0 or not log)):
            raise ValueError(f"resample draws {name} from its bounds ({low}, {high}): give finite bounds"
                             + (" with low > 0 for a log scale" if log else ""))
        value = hparams[name]
        new = _explore_one(value, jax.random.fold_in(key, j), method, factors, resample_probability,
                           (low, high), log)
        out[name] = jnp.where(copied, new.astype(value.dtype), value)
    return out


def pbt_round(state: MemberState, scores, eligible, groups, key, options: PBTRoundOptions = PBTRoundOptions()):
    """One exploit-and-explore round over a population; jit it with ``static_argnames="options"``.

    A member that copies takes its donor's ``params``, ``model_state``, ``opt_state``,
    ``hparams``, ``alive`` and ``diverged_at`` (a donor is eligible, so alive and -1); it
    keeps its own ``step``, ``data_key`` and ``dropout_key``, so its batches, dropout masks
    and augmentations stay its own streams. The copied ``opt_state`` carries the donor's
    ``optax.inject_hyperparams`` numbers, but the task's step writes ``state.hparams`` into
    them before every update, so the explored values are the ones that train.

    Args:
      state: ``MemberState``, leaves [K, ...].
      scores, eligible, groups: float32 / bool / int32 [K] (``choose_parents``).
      key: PRNG key of this round (split into exploit and explore keys).
      options: ``PBTRoundOptions``.

    Returns:
      ``(new_state, parents [K] int32, hparams_before, hparams_after)``: the hparams as
      name -> [K] before the round (each member's own; its donor's are
      ``hparams_before[name][parents]``) and after it.
    """
    k_exploit, k_explore = jax.random.split(key)
    parents = choose_parents(scores, eligible, groups, k_exploit, options.exploit, options.fraction, options.mode)
    copied = parents != jnp.arange(parents.shape[0], dtype=parents.dtype)
    inherited = gather_members((state.params, state.model_state, state.opt_state, state.hparams,
                                state.alive, state.diverged_at), parents)
    params, model_state, opt_state, hparams, alive, diverged_at = inherited
    hparams = explore(hparams, copied, k_explore, options.hparams, options.explore, options.factors,
                      options.resample_probability, dict(options.bounds), dict(options.log_scale))
    new_state = state._replace(params=params, model_state=model_state, opt_state=opt_state, hparams=hparams,
                               alive=alive, diverged_at=diverged_at)
    return new_state, parents, dict(state.hparams), hparams
