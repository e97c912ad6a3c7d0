"""Random streams: no two purposes share a key at any index below 10⁷, even when a member's
init, data and dropout seeds are equal (the default); and no member key is folded with the
step alone anywhere in jaxdyn."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn import streams
from jaxdyn.streams import Stream

STEPS = 10**7


def _as_u64(keys) -> np.ndarray:
    """Each raw key (uint32 [2]) as one 64-bit number."""
    return np.ascontiguousarray(np.asarray(keys, np.uint32)).view(np.uint64).ravel()


def test_no_two_purposes_share_a_key_below_ten_million_steps():
    root = jax.random.PRNGKey(0)  # data, dropout and init keys are this same key for seeds (0, 0, 0)
    draw = jax.jit(jax.vmap(streams.key, in_axes=(None, None, 0)), static_argnums=1)
    idx = jnp.arange(STEPS, dtype=jnp.int32)
    keys = np.concatenate([_as_u64(draw(root, s, idx)) for s in Stream])
    assert keys.size == len(Stream) * STEPS
    keys.sort()
    assert not (keys[1:] == keys[:-1]).any()
    # The keys the old scheme folded straight in: the step-t batch key was fold_in(root, t), so
    # the label-noise key fold_in(root, 0x1ABE1) was the batch key of step 109,537.
    old_batch = _as_u64(jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))(root, jnp.arange(2**17)))
    old_label_noise = _as_u64(jax.random.fold_in(root, 0x1ABE1)[None])
    assert np.isin(old_label_noise, old_batch).all()


def test_a_purpose_is_a_tag_then_an_index():
    root = jax.random.PRNGKey(7)
    want = jax.random.fold_in(jax.random.fold_in(root, int(Stream.BATCH)), 12)
    np.testing.assert_array_equal(streams.key(root, Stream.BATCH, 12), want)
    assert len({int(s) for s in Stream}) == len(Stream)


def test_no_member_key_is_folded_with_the_step_alone():
    source = Path(streams.__file__).parent
    bare = re.compile(r"fold_in\(\s*state\.\w*_key\s*,")
    offenders = [f"{p.relative_to(source.parent)}:{i}" for p in sorted(source.rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert offenders == [], f"use jaxdyn.streams.key(state.<root>, Stream.<purpose>, index): {offenders}"
