"""Mode-collapse metrics for samples of a Gaussian mixture, with the conventions of PacGAN.

PacGAN (Lin, Khetan, Fanti & Oh 2018, §5.1), following VEEGAN (Srivastava et al.
2017), scores 2,500 generated samples of the 2D ring and grid:

- each sample goes to its nearest mode; it is **high quality** if it lies within
  three standard deviations of that mode (distance / std < 3);
- **modes**: the number of modes that received at least one high-quality sample;
- **high_quality**: the fraction of samples that are high quality;
- **reverse_kl**: ``KL(p̂ ‖ u) = Σ_m p̂_m log(p̂_m · M)``, p̂ the histogram of the
  high-quality samples over the M modes and u the uniform (true) distribution of
  modes; 0 when every mode gets the same share, log M when one mode gets them all,
  NaN when no sample is high quality.

On ``digits`` there are no known centres: ``class_metrics`` scores samples by a
classifier instead (``gan/classifier.py``), as PacGAN and VEEGAN count the modes of
stacked MNIST with a pretrained classifier. A sample is high quality when the
classifier gives its top class a probability of at least ``CONFIDENT``; ``modes``
counts the classes with at least one such sample, ``reverse_kl`` compares their
histogram with the uniform one, and ``confidence`` is the mean top-class probability.

Written with ``jax.numpy`` so that it runs inside a compiled, vmapped program as
well as on host arrays.
"""

import jax.numpy as jnp

QUALITY_STDS = 3.0
CONFIDENT = 0.9


def _histogram_metrics(label, good, n_modes: int) -> dict:
    """``modes``, ``high_quality`` and ``reverse_kl`` from each sample's mode ``label`` and quality ``good``."""
    counts = jnp.zeros(n_modes, jnp.float32).at[label].add(good.astype(jnp.float32))
    total = counts.sum()
    share = counts / jnp.where(total > 0, total, 1.0)
    kl = jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.where(share > 0, share, 1.0) * n_modes), 0.0))
    return {"modes": jnp.sum(counts > 0).astype(jnp.float32),
            "high_quality": good.astype(jnp.float32).mean(),
            "reverse_kl": jnp.where(total > 0, kl, jnp.nan)}


def mode_metrics(samples, centers, std: float) -> dict:
    """Modes covered, high-quality fraction and reverse KL of ``samples`` ``[N, D]``
    against the mixture's ``centers`` ``[M, D]`` of isotropic std ``std``.

    Returns:
      ``{"modes", "high_quality", "reverse_kl"}`` as scalars (jax arrays).
    """
    samples = jnp.asarray(samples, jnp.float32)
    centers = jnp.asarray(centers, jnp.float32)
    dist = jnp.sqrt(jnp.sum(jnp.square(samples[:, None, :] - centers[None, :, :]), axis=-1)) / std
    return _histogram_metrics(jnp.argmin(dist, axis=1), jnp.min(dist, axis=1) < QUALITY_STDS, centers.shape[0])


def class_metrics(probs) -> dict:
    """The same metrics from a classifier's class probabilities ``[N, classes]`` of the
    samples, and ``confidence``: the mean top-class probability.

    Returns:
      ``{"modes", "high_quality", "reverse_kl", "confidence"}`` as scalars (jax arrays).
    """
    probs = jnp.asarray(probs, jnp.float32)
    top = probs.max(axis=1)
    return {**_histogram_metrics(jnp.argmax(probs, axis=1), top >= CONFIDENT, probs.shape[1]),
            "confidence": top.mean()}
