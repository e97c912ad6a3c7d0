"""What the report calls things: metrics in words, and layers in the model's own order.

Panel titles read ``Test loss (cross-entropy)`` with the metric's own name beside it
(``test_loss``), so a reader learns the column to look up while reading the words. Layers
of a per-layer heatmap or histogram go from the input (top row) to the output (bottom row):
by the order the model created its parameters where the model can say, else by the stage
a built-in layer name belongs to (embedding, convolutions, the hidden layers or blocks by
index, the final norm, the head).
"""

import re

import jax
import numpy as np

# metric -> words; a GAN player's ``g_`` / ``d_`` prefix is put into words by ``describe``
WORDS = {
    "train_loss": "Training loss (window mean)", "test_loss": "Test loss", "train_accuracy": "Training accuracy",
    "test_accuracy": "Test accuracy", "test_loss_ema": "Test loss of the moving average",
    "test_accuracy_ema": "Test accuracy of the moving average", "local_loss": "Clients' loss on their own training examples",
    "local_accuracy": "Clients' accuracy on their own training examples",
    "client_drift": "Client drift from the clients' average",
    "update_cosine": "Cosine between clients' updates",
    "weight_norm": "Weight norm", "grad_norm": "Gradient norm", "update_norm": "Update norm",
    "update_ratio": "Update / weight norm", "dist_from_init": "Distance from initialisation",
    "rel_dist_from_init": "Distance from initialisation / initial norm", "act_mean": "Mean activation",
    "act_std": "Activation standard deviation", "dead_frac": "Dead units (fraction)",
    "saturated_frac": "Saturated units (fraction)", "act_hist": "Activation histogram",
    "sharpness": "Sharpness (top Hessian eigenvalue)", "preconditioned_sharpness": "Preconditioned sharpness",
    "hessian_trace": "Hessian trace", "grad_noise_scale": "Gradient noise scale",
    "grad_noise_scale_ema": "Gradient noise scale (moving average)", "grad_noise_trace": "Gradient noise trace",
    "grad_sq_norm": "Squared gradient norm (unbiased)", "gsnr": "Gradient signal-to-noise ratio",
    "hessian_trace_stderr": "Hessian trace standard error", "ntk_trace": "NTK trace",
    "ntk_distance": "NTK distance from initialisation", "ntk_alignment": "NTK alignment",
    "spectral_norm": "Spectral norm", "stable_rank": "Stable rank", "esd_alpha": "Spectral tail exponent",
    "cka": "Similarity between members (CKA)", "lmc_path_loss": "Loss along the linear path",
    "attn_entropy": "Attention entropy", "attn_first": "Attention to the first position",
    "attn_self": "Attention to itself", "stream_rms": "Residual stream RMS", "margin": "Margin",
    "logit_gap": "Logit gap", "test_modes": "Modes covered", "modes": "Modes covered",
    "test_high_quality": "High-quality samples (fraction)", "high_quality": "High-quality samples (fraction)",
    "reverse_kl": "Reverse KL to the data", "train_g_loss": "Generator loss (window mean)",
    "train_d_loss": "Discriminator loss (window mean)", "loss": "Loss", "accuracy": "Accuracy",
}
PLAYERS = {"g_": "Generator", "d_": "Discriminator"}


def describe(metric: str, objective: str = "") -> str:
    """``metric`` in words, then its own name on a second line: ``Test loss (cross-entropy)\ntest_loss``.

    ``objective`` names what a loss measures (``losses.logged_loss``); a GAN metric says its
    player (``g_loss`` -> ``Generator loss``). A metric without words keeps its own name only.
    """
    player, name = next(((words, metric[len(p):]) for p, words in PLAYERS.items() if metric.startswith(p)),
                        ("", metric))
    words = WORDS.get(name)
    if words is None:
        return f"{player} {name.replace('_', ' ')}\n{metric}" if player else metric
    if player:
        words = f"{player} {words[0].lower()}{words[1:]}"
    if objective and name.endswith("loss"):
        words += f" ({objective})"
    return f"{words}\n{metric}"


# a built-in layer's stage, input side first; within an index, the order a block runs its parts
STAGES = {"embed": 0, "pos": 0, "input": 0, "conv": 1, "hidden": 2, "layer": 2, "block": 2, "ln_attn": 2,
          "attn": 2, "ln_mlp": 2, "mlp_in": 2, "mlp": 2, "mlp_out": 2, "dense": 2, "ln_final": 8, "norm": 8,
          "head": 9, "out": 9, "output": 9}
IN_BLOCK = ("ln_attn", "attn", "ln_mlp", "mlp_in", "mlp", "mlp_out", "block")


def _stage_key(name: str) -> tuple:
    match = re.fullmatch(r"(.*?)_?(\d+)", name)
    stem, index = (match[1], int(match[2])) if match else (name, -1)
    part = IN_BLOCK.index(stem) if stem in IN_BLOCK else -1
    return (STAGES.get(stem, 5), index, part, name)


def layer_order(names, model_order=()) -> list:
    """``names`` from the input to the output.

    Args:
      names: layer names as the probes wrote them (``hidden_0``, ``conv_1``, ``attn_0``, ``head``).
      model_order: the model's top-level parameter names in the order it created them, if known;
        used when every name is among them (a model of the user's own), else the built-in stages.
    """
    names = list(dict.fromkeys(names))
    if model_order and all(n in model_order for n in names):
        return sorted(names, key=list(model_order).index)
    return sorted(names, key=_stage_key)


def creation_order(task, seeds, hparams) -> list:
    """The top-level parameter names of a supervised task's model in the order its ``init``
    creates them (flax keeps that order; pytree functions sort keys, so this reads them
    inside the trace, and nothing is computed). ``[]`` for a task without ``model`` and
    ``input_shape`` (a GAN: the stages order its players' layers)."""
    model, shape = getattr(task, "model", None), getattr(task, "input_shape", None)
    if model is None or shape is None:
        return []
    names = []

    def trace():
        variables = model.init(jax.random.PRNGKey(0), np.zeros((1, *shape), np.float32), train=False,
                               hparams=hparams)
        names.extend(variables["params"].keys())
        return 0

    jax.eval_shape(trace)
    return names
