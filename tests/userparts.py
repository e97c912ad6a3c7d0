"""A researcher's own model, data, loss and probe, importable as ``userparts`` (tests/ is on the path):
nothing here comes from jaxdyn's catalogue."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxdyn


class GatedMLP(nn.Module):
    """A gated hidden layer with BatchNorm; its logits are divided by a member's own temperature."""

    width: int = 16
    n_out: int = 4
    hparams = {"model.temperature": jaxdyn.HParam(1.0, low=0.0, low_open=True, doc="divides the logits")}

    @nn.compact
    def __call__(self, x, *, train=False, hparams=None):
        x = x.reshape(x.shape[0], -1)
        h = nn.Dense(self.width, use_bias=False, name="value")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        h = nn.relu(h) * nn.sigmoid(nn.Dense(self.width, name="gate")(x))
        self.sow("intermediates", "gated", h)
        return nn.Dense(self.n_out, name="out")(h) / hparams["temperature"]


class Plain(nn.Module):
    """One dense layer; its __call__ takes no hparams."""

    n_out: int = 4

    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(self.n_out, name="out")(x.reshape(x.shape[0], -1))


def squared_hinge(outputs, targets):
    """Per example: ½ Σ_c (outputs_c − 3·onehot_c)²."""
    return 0.5 * jnp.square(outputs - 3.0 * jax.nn.one_hot(targets, outputs.shape[-1])).sum(-1)


def focal(outputs, targets, hparams):
    """Focal loss (Lin et al. 2017): −(1 − p_t)^γ log p_t, γ a member number of its own."""
    logp = jax.nn.log_softmax(outputs)[jnp.arange(len(targets)), targets]
    return -((1 - jnp.exp(logp)) ** hparams["gamma"]) * logp


focal.hparams = {"loss.gamma": jaxdyn.HParam(2.0, doc="focusing exponent")}


def margin(ctx):
    """Mean gap between the top two outputs on the probe batch, and each layer's largest |weight|."""
    top2 = jnp.sort(ctx.outputs(), axis=-1)[:, -2:]
    return {"margin": (top2[:, 1] - top2[:, 0]).mean(),
            "max_abs_weight": {name: jnp.abs(layer["kernel"]).max() for name, layer in ctx.params.items()
                               if "kernel" in layer}}


def blobs(n=800, features=10, classes=4, seed=0):
    """Gaussian inputs labelled by the largest of ``classes`` random projections."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ rng.normal(size=(features, classes))).argmax(1)
    cut = n * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def load():
    """``[data] name = "userparts:load"``."""
    return blobs()


class Forgetful(nn.Module):
    """Declares a member number but takes no hparams=: it could never read it."""

    hparams = {"model.beta": jaxdyn.HParam(1.0)}

    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(4)(x)


class Greedy(nn.Module):
    """Reads a member number it never declared."""

    @nn.compact
    def __call__(self, x, *, train=False, hparams=None):
        return nn.Dense(4)(x) * hparams["beta"]


class Unflat(nn.Module):
    """Keeps an axis too many: [B, 10] -> [B, 10, 4]."""

    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.Dense(4)(x[..., None])
