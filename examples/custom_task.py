"""Your own task: the toy problem of Population Based Training (Jaderberg et al. 2017, Fig. 2).

Run it from the repository root:

    python examples/custom_task.py

Nothing neural: each member holds θ = (θ0, θ1), starting at (0.9, 0.5), and climbs
the surrogate Q̂(θ | h) = 1.2 − (h0 θ0² + h1 θ1²) by gradient ascent, while what we
care about is the true objective Q(θ) = 1.2 − (θ0² + θ1²). ``h0``, ``h1`` and the step
size are member hyperparameters this task declares, so the grid over them is one
compiled population. With h = (1, 0) only θ0 moves and Q stops below its maximum 1.2;
with h = (1, 1) both shrink, θ_i(t) = θ_i(0) (1 − 2 lr h_i)^t.

The task plugs in as jaxdyn's own ``supervised`` and ``gan`` kinds do: a ``TaskKind``
whose ``build`` returns an object with ``init / step / evaluate`` (``jaxdyn.tasks.Task``),
named in the config by import path. This file is importable as ``custom_task`` when
``examples/`` is on the path (as it is when run as a script), so ``config.toml`` names
the kind ``"custom_task:QUADRATIC"`` and a resume or ``jaxdyn.extract_member`` rebuilds it.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxdyn
from jaxdyn.tasks import MemberState, Seeds, TaskKind, fresh_state

THETA0 = (0.9, 0.5)


def true_objective(theta: jax.Array) -> jax.Array:
    """Q(θ) = 1.2 − (θ0² + θ1²): the performance PBT maximises (the paper's Fig. 2)."""
    return 1.2 - jnp.sum(jnp.square(theta))


def surrogate(theta: jax.Array, h: jax.Array) -> jax.Array:
    """Q̂(θ | h) = 1.2 − (h0 θ0² + h1 θ1²): what a member climbs, shaped by its hyperparameters."""
    return 1.2 - jnp.sum(h * jnp.square(theta))


@dataclass(frozen=True)
class Quadratic:
    """ONE member: θ ∈ R² in ``params``, no model, no optimizer state."""

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        return fresh_state(jnp.asarray(THETA0, jnp.float32), (), hparams, seeds)

    def step(self, state: MemberState, data) -> tuple[MemberState, dict]:
        """One step of gradient ascent on Q̂ (``data``, the cohort's dataset, is not read)."""
        hp = state.hparams
        h = jnp.stack([hp["h0"], hp["h1"]])
        theta = state.params + hp["learning_rate"] * jax.grad(surrogate)(state.params, h)
        q = true_objective(theta)
        # "loss" is what the divergence guard watches: the distance below Q's maximum.
        return state._replace(params=theta, step=state.step + 1), {"loss": 1.2 - q, "Q": q}

    def evaluate(self, state: MemberState, x, y) -> dict:
        q = true_objective(state.params)
        return {"loss": 1.2 - q, "Q": q}


QUADRATIC = TaskKind(
    build=lambda config, members: Quadratic(),
    doc="the toy quadratic of PBT (Jaderberg et al. 2017, Fig. 2): climb 1.2 - (h0 θ0² + h1 θ1²)",
    hparams={
        "task.h0": jaxdyn.HParam(1.0, doc="weight of θ0² in the surrogate"),
        "task.h1": jaxdyn.HParam(1.0, doc="weight of θ1² in the surrogate"),
        "task.learning_rate": jaxdyn.HParam(0.01, low_open=True, doc="step size of the gradient ascent"),
    },
    finals=("Q",),  # members.csv gets final_Q, and the summary reports it
    curves=("train_Q", "test_Q"),  # drawn in the report beside the loss
)

STUDY = {
    "study": {"name": "pbt_toy", "seeds": 1},
    "task": {"kind": "custom_task:QUADRATIC", "learning_rate": 0.01},
    "data": {"name": "ring"},  # not read by the task; every study has a dataset
    "train": {"steps": 40, "batch_size": 1, "chunk_steps": 20, "log_every": 4, "eval_every": 1},
    "probes": {"norms": {"every": 0}, "activations": {"every": 0}},  # there is no network to probe
    "grid": {"task.h0": [0.0, 1.0], "task.h1": [0.0, 1.0]},
}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))  # so "custom_task:QUADRATIC" imports this file
    out = sys.argv[1] if len(sys.argv) > 1 else None
    res = jaxdyn.run(STUDY, out=out, summary=False)
    final = res.frame("test_Q", by=["h0", "h1"]).groupby(["h0", "h1"]).value.last()
    print(final.rename(f"Q after {STUDY['train']['steps']} steps"))
