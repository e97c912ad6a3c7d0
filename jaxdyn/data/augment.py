"""On-device augmentation of one member's training batch.

Randomness comes from the member's batch key (its data key folded with the step),
folded once more so that it is independent of which examples were drawn: the same
seed and step give the same augmentation, another member or step another. The
evaluation path never calls this, so test metrics see the data as it is.

- Sequences (examples ``[T]`` or ``[T, F]``): ``data.shift`` rolls each example by a
  uniform integer in ``-shift..shift`` along time (circularly: nothing is lost), then
  ``data.noise_std`` (a member hyperparameter) adds Gaussian noise.
- Images (``[H, W, C]``): ``data.crop`` zero-pads by that many pixels on each side and
  crops back to ``H × W`` at a uniform random offset; ``data.flip`` mirrors left-right
  with probability 1/2.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Augment:
    """What to do to a training batch; a field that is 0/False compiles to nothing."""

    shift: int = 0
    noise: bool = False  # some member has data.noise_std > 0
    crop: int = 0
    flip: bool = False

    def __bool__(self) -> bool:
        return bool(self.shift or self.noise or self.crop or self.flip)

    def __call__(self, x: jax.Array, key: jax.Array, noise_std: jax.Array) -> jax.Array:
        """Augment ONE member's batch ``x [B, *example]`` with draws from ``key`` (the step's
        ``Stream.AUGMENT`` key)."""
        k_shift, k_noise, k_crop, k_flip = jax.random.split(key, 4)
        b = x.shape[0]
        if self.shift:
            offsets = jax.random.randint(k_shift, (b,), -self.shift, self.shift + 1)
            x = jax.vmap(lambda e, s: jnp.roll(e, s, axis=0))(x, offsets)
        if self.crop:
            p = self.crop
            h, w = x.shape[1:3]
            padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            corner = jax.random.randint(k_crop, (b, 2), 0, 2 * p + 1)
            x = jax.vmap(lambda e, c: jax.lax.dynamic_slice(e, (c[0], c[1], 0), (h, w, e.shape[-1])))(padded, corner)
        if self.flip:
            mirror = jax.random.bernoulli(k_flip, 0.5, (b,))
            x = jnp.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)
        if self.noise:
            x = x + noise_std.astype(x.dtype) * jax.random.normal(k_noise, x.shape, x.dtype)
        return x
