"""One PBT round (jaxdyn.pbt.round) against a plain NumPy reading of its rules.

The reference below is written from the documented rules, member by member with Python
loops over groups; it shares with the implementation only the random numbers, which it
redraws with the documented ``jax.random`` calls on the same keys.
"""

import math
from fractions import Fraction

import jax
import numpy as np
import pytest

from jaxdyn.pbt import PBTRoundOptions, choose_parents, explore, pbt_round
from jaxdyn.tasks.base import MemberState

K = 8
SELECT = jax.jit(choose_parents, static_argnames=("exploit", "fraction", "mode"))


def reference_parents(scores, eligible, groups, u, exploit, fraction, mode):
    """The selection rules of ``choose_parents`` in NumPy, given its draws ``u`` [K]."""
    scores = np.asarray(scores, np.float32)
    s = scores if mode == "max" else -scores
    ok = np.asarray(eligible, bool) & np.isfinite(s)
    groups = np.asarray(groups)
    parents = np.arange(len(s))
    for g in np.unique(groups):
        members = [int(i) for i in np.flatnonzero(groups == g)]
        ranked = sorted((i for i in members if ok[i]), key=lambda i: (-float(s[i]), i))  # ties: lower index
        n = len(ranked)

        def pick(i, pool):
            d = int(np.floor(np.float32(u[i]) * np.float32(len(pool))))
            return pool[min(d, len(pool) - 1)]

        for i in members:
            if exploit == "truncation":
                cut = min(math.ceil(Fraction(repr(fraction)) * n), n // 2)
                top = ranked[:max(cut, 1)]
                if n and (not ok[i] or i in ranked[n - cut:]):
                    parents[i] = pick(i, top)
            else:
                others = [j for j in ranked if j != i]
                if others:
                    rival = pick(i, others)
                    if not ok[i] or s[rival] > s[i]:
                        parents[i] = rival
    return parents


def random_case(rng, k):
    """Scores with ties, signed zeros and NaNs; some members diverged; a few groups."""
    scores = rng.choice(np.array([-1.0, -0.0, 0.0, 1.0, 2.0, 3.0, np.nan], np.float32), k)
    scores = np.where(rng.random(k) < 0.5, rng.normal(size=k).astype(np.float32), scores)
    eligible = rng.random(k) < 0.8
    groups = rng.integers(0, rng.integers(1, 4), k).astype(np.int32) * 7 - 3  # arbitrary ids
    return scores, eligible, groups


@pytest.mark.parametrize("exploit,fraction", [("truncation", 0.25), ("truncation", 0.3), ("truncation", 0.5),
                                              ("tournament", 0.25)])
def test_selection_matches_numpy_reference(exploit, fraction):
    rng = np.random.default_rng(0)
    for case in range(120):
        k, mode = (13, "max") if case % 2 else (10, "min")
        scores, eligible, groups = random_case(rng, k)
        key = jax.random.PRNGKey(case)
        u = np.asarray(jax.random.uniform(key, (k,)))  # the draws choose_parents documents
        got = np.asarray(SELECT(scores, eligible, groups, key, exploit=exploit, fraction=fraction, mode=mode))
        want = reference_parents(scores, eligible, groups, u, exploit, fraction, mode)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}: {scores} {eligible} {groups}")


@pytest.mark.parametrize("k,fraction,copying", [(10, 0.1, 1), (10, 0.3, 3), (10, 0.5, 5), (8, 0.25, 2),
                                                (3, 0.25, 1), (2, 0.5, 1), (1, 0.5, 0)])
def test_truncation_copies_ceil_of_fraction(k, fraction, copying):
    """ceil(fraction * n) of the worst copy (capped at n // 2), the decimal fraction read exactly."""
    scores = np.random.default_rng(k).permutation(k).astype(np.float32)
    parents = np.asarray(SELECT(scores, np.ones(k, bool), np.zeros(k, np.int32), jax.random.PRNGKey(1),
                                exploit="truncation", fraction=fraction))
    copied = np.flatnonzero(parents != np.arange(k))
    assert sorted(scores[copied]) == list(range(copying))
    assert all(scores[parents[copied]] >= k - max(copying, 1))


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_ineligible_always_copy_and_groups_never_mix(exploit):
    rng = np.random.default_rng(1)
    for case in range(150):
        scores, eligible, groups = random_case(rng, 16)
        parents = np.asarray(SELECT(scores, eligible, groups, jax.random.PRNGKey(case), exploit=exploit))
        ok = eligible & np.isfinite(scores)
        np.testing.assert_array_equal(groups[parents], groups)
        copied = parents != np.arange(16)
        assert ok[parents[copied]].all(), "an ineligible member was a donor"
        has_donor = np.array([ok[groups == g].any() for g in groups])
        np.testing.assert_array_equal(copied[~ok], has_donor[~ok])  # exploited unless its group has nobody
        assert not copied[~has_donor].any()


def fake_population(k=K, seed=0):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.normal(size=(k, *shape)).astype(np.float32)
    return MemberState(
        params={"dense": {"kernel": f32(3, 2), "bias": f32(2)}},
        model_state={"batch_stats": {"mean": f32(2)}},
        opt_state={"mu": f32(3, 2), "count": rng.integers(0, 100, k).astype(np.int32),
                   "hyperparams": {"learning_rate": f32()}},
        hparams={"learning_rate": rng.uniform(1e-3, 1e-1, k).astype(np.float32),
                 "momentum": rng.uniform(0.5, 0.95, k).astype(np.float32),
                 "weight_decay": rng.uniform(0, 1e-3, k).astype(np.float32)},
        step=np.arange(100, 100 + k, dtype=np.int32),
        data_key=rng.integers(0, 2**32, (k, 2), dtype=np.uint32),
        dropout_key=rng.integers(0, 2**32, (k, 2), dtype=np.uint32),
        alive=np.arange(k) != 3,
        diverged_at=np.where(np.arange(k) != 3, -1, 57).astype(np.int32))


OPTIONS = PBTRoundOptions(hparams=("learning_rate", "momentum"),
                          bounds=(("learning_rate", (1e-4, 1.0)), ("momentum", (0.0, 0.99))),
                          log_scale=(("learning_rate", True),))


def test_exploit_copies_the_donor_bits_and_keeps_own_streams():
    state = fake_population()
    scores = np.array([5, 1, 7, np.nan, 6, 0, 3, 4], np.float32)  # 3 diverged; 5 and 1 are the worst
    eligible = np.asarray(state.alive)
    new, parents, before, after = pbt_round(state, scores, eligible, np.zeros(K, np.int32),
                                            jax.random.PRNGKey(0), OPTIONS)
    parents = np.asarray(parents)
    copied = parents != np.arange(K)
    assert set(np.flatnonzero(copied)) == {1, 3, 5}  # ceil(0.25 * 7) = 2 of 7 eligible, and the diverged one
    assert set(parents[copied]) <= {2, 4}  # the top two
    leaf = lambda tree: jax.tree.leaves(tree)
    for i in range(K):
        p = parents[i]
        for field in ("params", "model_state", "opt_state"):
            for got, old in zip(leaf(getattr(new, field)), leaf(getattr(state, field))):
                np.testing.assert_array_equal(np.asarray(got)[i], np.asarray(old)[p], err_msg=f"{field} of {i}")
        for field in ("step", "data_key", "dropout_key"):
            np.testing.assert_array_equal(np.asarray(getattr(new, field))[i], np.asarray(getattr(state, field))[i])
        np.testing.assert_array_equal(np.asarray(new.hparams["weight_decay"])[i], state.hparams["weight_decay"][p])
        for name in OPTIONS.hparams:
            np.testing.assert_array_equal(np.asarray(before[name])[i], state.hparams[name][i])
            if not copied[i]:
                np.testing.assert_array_equal(np.asarray(after[name])[i], state.hparams[name][i])
    assert np.asarray(new.alive).all() and (np.asarray(new.diverged_at) == -1).all()
    jax.tree.map(np.testing.assert_array_equal, after, new.hparams)


def test_perturb_multiplies_by_one_factor_within_bounds():
    state = fake_population(k=64, seed=2)
    hp = {name: np.asarray(v) for name, v in state.hparams.items()}
    copied = np.arange(64) % 3 == 0
    factors = (0.5, 3.0)
    out = explore(hp, copied, jax.random.PRNGKey(3), ("learning_rate", "momentum"), "perturb", factors, 0.0,
                  dict(OPTIONS.bounds))
    for name, (low, high) in OPTIONS.bounds:
        options = np.stack([np.clip(hp[name] * np.float32(f), np.float32(low), np.float32(high)) for f in factors])
        got = np.asarray(out[name])
        assert ((got == options).any(axis=0) | ~copied).all(), got
        np.testing.assert_array_equal(got[~copied], hp[name][~copied])
        used = (got[copied][:, None] == options[:, copied].T).argmax(1)
        assert 0 < used.mean() < 1, "one factor was never drawn"
    np.testing.assert_array_equal(out["weight_decay"], hp["weight_decay"])
    lr_choice = np.asarray(out["learning_rate"])[copied] > hp["learning_rate"][copied]
    mom_choice = np.asarray(out["momentum"])[copied] > hp["momentum"][copied]
    assert (lr_choice != mom_choice).any(), "two hyperparameters drew the same factors"


def test_resample_draws_log_uniform_and_uniform():
    n = 4000
    hp = {"learning_rate": np.full(n, 0.01, np.float32), "momentum": np.full(n, 0.5, np.float32)}
    out = explore(hp, np.ones(n, bool), jax.random.PRNGKey(4), ("learning_rate", "momentum"), "resample",
                  (0.8, 1.25), 1.0, dict(OPTIONS.bounds), dict(OPTIONS.log_scale))
    lr, mom = np.asarray(out["learning_rate"]), np.asarray(out["momentum"])
    assert abs((lr < 1e-2).mean() - 0.5) < 0.05  # half the decades of [1e-4, 1] lie below 1e-2
    assert abs(mom.mean() - 0.495) < 0.02 and abs((mom < 0.2).mean() - 0.2 / 0.99) < 0.03


def test_values_stay_in_bounds_over_many_rounds():
    options = PBTRoundOptions(explore="resample", factors=(0.01, 100.0), resample_probability=0.3,
                              hparams=OPTIONS.hparams, bounds=OPTIONS.bounds, log_scale=OPTIONS.log_scale,
                              exploit="tournament")
    one_round = jax.jit(pbt_round, static_argnames="options")
    state = fake_population()
    rng = np.random.default_rng(5)
    saw_edges = set()
    for r in range(200):
        scores = rng.normal(size=K).astype(np.float32)
        old = {k: np.asarray(v) for k, v in state.hparams.items()}
        state, parents, before, after = one_round(state, scores, np.ones(K, bool), np.arange(K) % 2,
                                                  jax.random.PRNGKey(r), options)
        parents = np.asarray(parents)
        copied = parents != np.arange(K)
        for name, (low, high) in options.bounds:
            got = np.asarray(after[name])
            assert (got >= np.float32(low)).all() and (got <= np.float32(high)).all(), (r, name, got)
            np.testing.assert_array_equal(got[~copied], old[name][~copied])
            saw_edges |= {(name, "low")} if (got == np.float32(low)).any() else set()
            saw_edges |= {(name, "high")} if (got == np.float32(high)).any() else set()
        np.testing.assert_array_equal(np.asarray(after["weight_decay"]), old["weight_decay"][parents])
    # The extreme factors did push against the bounds (multiplying never reaches momentum's 0).
    assert saw_edges >= {("learning_rate", "low"), ("learning_rate", "high"), ("momentum", "high")}, saw_edges


def test_jit_matches_eager_and_compiles_once():
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)
        return pbt_round(*args, **kwargs)

    options = PBTRoundOptions(explore="resample", resample_probability=0.5, hparams=OPTIONS.hparams,
                              bounds=OPTIONS.bounds, log_scale=OPTIONS.log_scale)
    jitted = jax.jit(counted, static_argnames="options")
    state = fake_population()
    for seed in range(3):
        scores = np.random.default_rng(seed).normal(size=K).astype(np.float32)
        args = (state, scores, np.asarray(state.alive), np.zeros(K, np.int32), jax.random.PRNGKey(seed))
        got, want = jitted(*args, options=options), pbt_round(*args, options)
        # Exploit is a gather: bitwise. A log-uniform draw (exp of a log) may round 1 ulp apart once fused.
        same_bits = lambda out: (out[0]._replace(hparams=None), out[1], out[2])
        jax.tree.map(np.testing.assert_array_equal, same_bits(got), same_bits(want))
        for a, b in (got[3], want[3]), (got[0].hparams, want[0].hparams):
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)
    assert len(traces) == 1
