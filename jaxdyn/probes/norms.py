"""``norms``: per-layer weight, gradient, update and distance-from-initialisation norms.

A layer is a top-level entry of the parameters (``hidden_0``, ``conv_1``, ``head``,
...): its kernel and bias together. The row with an empty layer is the whole model.

- ``weight_norm``: ‖θ_l‖.
- ``grad_norm``: ‖∇_l L‖ of the training objective on the probe batch (BatchNorm
  with batch statistics, dropout off: ``SupervisedTask.probe_loss``).
- ``update_norm``, ``update_ratio``: ‖Δθ_l‖ and ‖Δθ_l‖ / ‖θ_l‖ of the optimizer's
  actual update at each training step, averaged over the log window (logged from
  the step, as big_vision does; the train step computes them while this probe is on).
- ``dist_from_init``: ‖θ_l − θ_l(0)‖; ``rel_dist_from_init``: that over ‖θ_l(0)‖.

The ratios are plain IEEE divisions, with no guard: NaN for 0/0 (a zero layer not
moving; a zero-initialised layer still at its start), +inf for x/0 (a layer that
moves away from exactly 0: no finite relative change exists).
"""

from dataclasses import dataclass

import jax

from jaxdyn.probes.base import Probe
from jaxdyn.tasks.supervised import layer_norms


@dataclass(frozen=True)
class NormsOptions:
    every: int = 1

    def check(self) -> None:
        pass


def norms(ctx) -> dict:
    state, init_params, x, y = ctx.state, ctx.init_params, ctx.x, ctx.y
    grads = jax.grad(ctx.task.probe_loss)(state.params, state, x, y)
    weight = layer_norms(state.params)
    init = layer_norms(init_params)
    dist = layer_norms(jax.tree.map(lambda a, b: a - b, state.params, init_params))
    return {"weight_norm": weight, "grad_norm": layer_norms(grads), "dist_from_init": dist,
            "rel_dist_from_init": jax.tree.map(lambda d, w: d / w, dist, init)}


PROBE = Probe("norms", NormsOptions, norms, __doc__.splitlines()[0].split(": ", 1)[1], "cheap",
              default_on=True, needs_init=True, step_metrics=("update_norm", "update_ratio"))
