"""Population-based training on its paper's toy problem (Jaderberg et al. 2017, Fig. 2).

Run it from the repository root:

    python examples/pbt_toy.py

Two members start at θ = (0.9, 0.9) and climb the surrogate Q̂(θ | h) = 1.2 − (h0 θ0² +
h1 θ1²) by gradient ascent, while what counts is Q(θ) = 1.2 − (θ0² + θ1²). Here h =
(mix, 1 − mix) with one member at mix = 1 (h = (1, 0)) and the other at mix = 0 (h =
(0, 1)), as in the paper. Alone, each shrinks one coordinate only and Q stops at
1.2 − 0.81 = 0.39. With PBT (a round after every chunk of 4 steps), the worse member
copies the better one's θ and mix and draws a new mix half the time, so both
coordinates shrink and Q climbs towards 1.2.

The task is ``examples/custom_task.py``'s, with the mix as its one surrogate number.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))  # custom_task, and "pbt_toy:MIXED" for the config

import jaxdyn  # noqa: E402
from custom_task import Quadratic, surrogate, true_objective  # noqa: E402
from jaxdyn.tasks import MemberState, Seeds, TaskKind, fresh_state  # noqa: E402

START = (0.9, 0.9)


@dataclass(frozen=True)
class Mixed(Quadratic):
    """ONE member of the toy: θ in ``params``, h = (mix, 1 − mix) from its ``mix``."""

    def init(self, seeds: Seeds, hparams: dict) -> MemberState:
        return fresh_state(jnp.asarray(START, jnp.float32), (), hparams, seeds)

    def step(self, state: MemberState, data) -> tuple[MemberState, dict]:
        hp = state.hparams
        h = jnp.stack([hp["mix"], 1 - hp["mix"]])
        theta = state.params + hp["learning_rate"] * jax.grad(surrogate)(state.params, h)
        q = true_objective(theta)
        return state._replace(params=theta, step=state.step + 1), {"loss": 1.2 - q, "Q": q}


MIXED = TaskKind(
    build=lambda config, members: Mixed(),
    doc="PBT's toy (Jaderberg et al. 2017, Fig. 2): climb 1.2 - (mix θ0² + (1 - mix) θ1²)",
    hparams={"task.mix": jaxdyn.HParam(1.0, 0.0, 1.0, high_open=False, doc="h = (mix, 1 - mix)"),
             "task.learning_rate": jaxdyn.HParam(0.02, low_open=True, doc="step size of the gradient ascent")},
    finals=("Q",), curves=("train_Q", "test_Q"))

STUDY = {
    "study": {"name": "pbt_toy", "seeds": 1},
    "task": {"kind": "pbt_toy:MIXED"},
    "data": {"name": "ring"},  # not read by the task; every study has a dataset
    "train": {"steps": 400, "batch_size": 1, "chunk_steps": 4, "log_every": 4, "eval_every": 1,
              "checkpoint_every": 25},
    "probes": {"norms": {"every": 0}, "activations": {"every": 0}},  # no network to probe
    "grid": {"task.mix": [1.0, 0.0]},
}
PBT = {"every": 1, "metric": "test_Q", "mode": "max", "exploit": "truncation", "fraction": 0.5,
       "explore": "resample", "resample_probability": 0.5, "hparams": ["task.mix"]}


def main(out=None) -> dict:
    """Run the toy without and with PBT; return each one's best final Q."""
    best = {}
    for name, study in (("alone", STUDY), ("pbt", {**STUDY, "pbt": PBT})):
        res = jaxdyn.run(study, out=None if out is None else Path(out) / name, progress=False, summary=False)
        best[name] = float(res.members.final_Q.max())
        print(f"{name}: best final Q = {best[name]:.3f}")
    return best


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
