"""The digits classifier that scores GAN samples of ``digits``: trained once, then cached.

An MLP 64-256-10 (ReLU) trained with Adam (learning rate 1e-3, batch 128, 3,000
steps, seed 0) on the 1,438 training digits, as ``[8, 8, 1]`` images in [0, 1].
It reaches 97.8% on the 359 test digits (the exact figure is stored with the
weights and checked when they are read back). The weights go to
``<cache>/gan/digits_classifier-v1.npz`` (``$JAXDYN_CACHE`` or ``~/.cache/jaxdyn``),
written atomically, so every later study reads them instead of training again.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdyn.atomic import save_npz
from jaxdyn.data import cache_dir
from jaxdyn.data.digits import load_digits
from jaxdyn.models import MLP

VERSION = "v1"
HIDDEN = (256,)
STEPS, BATCH, LEARNING_RATE, SEED = 3000, 128, 1e-3, 0
MIN_ACCURACY = 0.9  # a cached classifier below this is trained again


def _train(model, x, y):
    params = model.init(jax.random.PRNGKey(SEED), x[:1])["params"]
    opt = optax.adam(LEARNING_RATE)

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

    @jax.jit
    def run(params):
        def step(carry, key):
            p, s = carry
            idx = jax.random.randint(key, (BATCH,), 0, x.shape[0])
            updates, s = opt.update(jax.grad(loss)(p, x[idx], y[idx]), s, p)
            return (optax.apply_updates(p, updates), s), None

        keys = jax.random.split(jax.random.PRNGKey(SEED + 1), STEPS)
        return jax.lax.scan(step, (params, opt.init(params)), keys)[0][0]

    return run(params)


def digits_classifier() -> tuple[MLP, dict, float]:
    """``(module, params, test accuracy)``: read from the cache, or trained and cached."""
    model = MLP(HIDDEN, 10)
    data = load_digits()
    path = cache_dir() / "gan" / f"digits_classifier-{VERSION}.npz"
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"])
    leaves, treedef = jax.tree.flatten(template)
    if path.is_file():
        try:
            with np.load(path) as f:
                params = jax.tree.unflatten(treedef, [jnp.asarray(f[f"p{i}"]) for i in range(len(leaves))])
                accuracy = float(f["accuracy"])
            if accuracy >= MIN_ACCURACY and all(a.shape == t.shape for a, t in zip(jax.tree.leaves(params), leaves)):
                return model, params, accuracy
        except (OSError, KeyError, ValueError):
            pass  # unreadable or from another layout: train again
    params = _train(model, jnp.asarray(data.x_train), jnp.asarray(data.y_train))
    predicted = jnp.argmax(model.apply({"params": params}, jnp.asarray(data.x_test)), axis=1)
    accuracy = float(jnp.mean(predicted == jnp.asarray(data.y_test)))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, accuracy=accuracy, **{f"p{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(params))})
    return model, params, accuracy
