"""Bring your own model, data, loss and probe: a population of residual MLPs on your arrays.

Run it from the repository root:

    python examples/bring_your_own.py

Nothing here comes from jaxdyn's catalogue. The model reads a member hyperparameter of
its own (``temperature``) and the loss another (``epsilon``), so the grid over both is
one compiled population of 2 x 2 x 3 seeds; dropout draws from each member's own
stream, and the default probes (norms, activations) and the probe below see its layers. Because the components live in an importable module (this file, imported as
``bring_your_own`` when ``examples/`` is on the path), ``config.toml`` names them by
import path and ``jaxdyn run --resume`` or ``jaxdyn.extract_member`` rebuild them in
any process; the same classes defined in a notebook run too, and a resume elsewhere
then asks for them again.
"""

import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxdyn


class ResidualMLP(nn.Module):
    """Pre-LayerNorm residual blocks with dropout; logits divided by the member's temperature."""

    width: int = 32
    depth: int = 2
    n_out: int = 3
    dropout: float = 0.1  # a field: structural (nn.Dropout takes a Python rate)
    # Member hyperparameters this module reads from ``hparams``: grid axes that never recompile.
    hparams = {"model.temperature": jaxdyn.HParam(1.0, low=0.0, low_open=True, doc="divides the logits")}

    @nn.compact
    def __call__(self, x, *, train=False, hparams=None):
        h = nn.Dense(self.width, name="embed")(x.reshape(x.shape[0], -1))
        for i in range(self.depth):
            branch = nn.gelu(nn.Dense(self.width, name=f"block_{i}")(nn.LayerNorm(name=f"norm_{i}")(h)))
            h = h + nn.Dropout(self.dropout, deterministic=not train)(branch)  # masks: the member's dropout stream
            self.sow("intermediates", f"stream_{i}", h)  # the residual stream: activation and CKA probes see it
        return nn.Dense(self.n_out, name="readout")(h) / hparams["temperature"]


def poly1(outputs, targets, hparams):
    """Poly-1 loss (Leng et al. 2022), per example: cross-entropy + epsilon (1 - p_t)."""
    logp = jax.nn.log_softmax(outputs)[jnp.arange(len(targets)), targets]
    return -logp + hparams["epsilon"] * (1 - jnp.exp(logp))


poly1.hparams = {"loss.epsilon": jaxdyn.HParam(1.0, low=-1.0, doc="weight of the (1 - p_t) term")}


def logit_gap(ctx: jaxdyn.ProbeContext) -> dict:
    """Mean gap between the two largest logits on the probe batch, and the RMS of the residual
    stream after each block."""
    top2 = jnp.sort(ctx.outputs(), axis=-1)[:, -2:]
    return {"logit_gap": (top2[:, 1] - top2[:, 0]).mean(),
            "stream_rms": {name: jnp.sqrt(jnp.mean(h ** 2)) for name, h in ctx.layer_outputs().items()}}


def spirals(n=1200, classes=3, noise=0.15, seed=0):
    """Your arrays: three interleaved 2D spirals (features x, y), 1000 train / 200 test."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, n)
    r = rng.uniform(0.1, 1.0, n)
    angle = 3.0 * r + 2 * np.pi * label / classes
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], 1) + noise * rng.normal(size=(n, 2)) * r[:, None]
    x = x.astype(np.float32)
    return x[:1000], label[:1000], x[1000:], label[1000:]


STUDY = {
    "study": {"name": "byo", "seeds": 3},
    "optim": {"name": "adam", "learning_rate": 3e-3},
    "train": {"steps": 2000, "batch_size": 32, "chunk_steps": 500, "log_every": 100},
    "probes": {"logit_gap": {"every": 1}},
    "grid": {"model.temperature": [1.0, 4.0], "loss.epsilon": [0.0, 2.0]},
}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from bring_your_own import ResidualMLP, logit_gap, poly1, spirals  # importable: recorded by path

    out = sys.argv[1] if len(sys.argv) > 1 else None
    res = jaxdyn.run(STUDY, model=ResidualMLP(), data=spirals(), loss=poly1, probes={"logit_gap": logit_gap},
                     out=out)
    last = res.metrics[(res.metrics.metric == "logit_gap") & (res.metrics.step == res.metrics.step.max())]
    print(last.merge(res.members[["member", "temperature", "epsilon"]])
          .groupby(["temperature", "epsilon"]).value.mean().rename("final logit gap (mean over seeds)"))
