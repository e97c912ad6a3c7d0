"""The five GAN objectives, as (discriminator loss, generator loss) of D's logits.

``real`` and ``fake`` are D's outputs ``[B]`` on a real batch and a generated one;
each term is a mean over its own batch (the real and the generated batch may differ in
size), and each player minimises its own loss.

- ``minimax`` (Goodfellow et al. 2014): D: −log σ(r) − log(1 − σ(f)); G: log(1 − σ(f)).
- ``non_saturating`` (the same paper's fix): D as minimax; G: −log σ(f).
- ``wgan_gp`` (Gulrajani et al. 2017): D: f − r + λ (‖∇ₓ D(x̂)‖ − 1)², x̂ a uniform
  random point between a real and a generated example, per sample; G: −f.
- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018): D: max(0, 1 − r) + max(0, 1 + f); G: −f.
- ``least_squares`` (Mao et al. 2017, a = 0, b = c = 1): D: ½(r − 1)² + ½f²; G: ½(f − 1)².
"""

import jax
import jax.numpy as jnp

GAN_LOSSES = ("minimax", "non_saturating", "wgan_gp", "hinge", "least_squares")


def discriminator_loss(name: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    if name in ("minimax", "non_saturating"):
        return jax.nn.softplus(-real).mean() + jax.nn.softplus(fake).mean()
    if name == "wgan_gp":
        return fake.mean() - real.mean()  # the gradient penalty is added by the caller
    if name == "hinge":
        return jax.nn.relu(1 - real).mean() + jax.nn.relu(1 + fake).mean()
    if name == "least_squares":
        return 0.5 * jnp.square(real - 1).mean() + 0.5 * jnp.square(fake).mean()
    raise KeyError(name)


def generator_loss(name: str, fake: jax.Array) -> jax.Array:
    if name == "minimax":
        return (-jax.nn.softplus(fake)).mean()  # log(1 - σ(f)) = -softplus(f)
    if name == "non_saturating":
        return jax.nn.softplus(-fake).mean()
    if name in ("wgan_gp", "hinge"):
        return (-fake).mean()
    if name == "least_squares":
        return (0.5 * jnp.square(fake - 1)).mean()
    raise KeyError(name)


def gradient_penalty(critic, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
    """``mean_i (‖∇ₓ critic(x̂_i)‖ − 1)²`` with ``x̂_i = ε_i x_i + (1 − ε_i) x̃_i``, ε_i ~ U(0, 1).

    ``critic`` maps ``[B, ...]`` to ``[B]``; each example's gradient is its own
    (the critic must not mix examples, so no BatchNorm in a WGAN-GP critic)."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    mixed = eps * real + (1 - eps) * fake
    grads = jax.grad(lambda x: critic(x).sum())(mixed)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
    return jnp.square(norms - 1).mean()
