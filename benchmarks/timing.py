"""What every benchmark script shares: interleaved best-of timing and the JSON record."""

import json
import platform
import sys
import time
from pathlib import Path


def best_times(runners: dict, rounds: int) -> dict:
    """Best wall time of each ``runners[name]()`` (which must block) over ``rounds``
    round-robin passes. Interleaving makes the ratios robust to the machine's drift
    (±30% between days, ±20% within minutes here), which a one-after-another
    measurement folds into them."""
    best = {name: float("inf") for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            tic = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - tic)
    return best


def write_result(out_dir, name: str, platform: str, result: dict) -> Path:
    """Write ``result`` as ``<out_dir>/<name>-<platform>-<time>.json`` and say where."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{platform}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def environment() -> dict:
    """Where a result was measured: device, versions, time (for every benchmark's JSON)."""
    import jax

    dev = jax.devices()[0]
    return {"device": {"platform": dev.platform, "kind": dev.device_kind, "count": len(jax.devices()),
                       "cpu": platform.processor() or platform.machine()},
            "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def sgd_population(loss, steps: int, batch: int, pool: int, lr: float = 0.01):
    """``run(params, x, y) -> params``, jitted: ``steps`` plain SGD steps of ``loss(params, xb, yb)`` for
    every member (params leaves ``[K, ...]``, vmapped), batch t the rows ``t·batch mod pool`` onwards of
    the shared ``x, y`` (a new batch each step, sliced on the device: no host round trip)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def member(params, x, y):
        def step(params, t):
            start = (t * batch) % pool
            xb, yb = lax.dynamic_slice_in_dim(x, start, batch), lax.dynamic_slice_in_dim(y, start, batch)
            grads = jax.grad(loss)(params, xb, yb)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), None
        return lax.scan(step, params, jnp.arange(steps))[0]

    return jax.jit(jax.vmap(member, in_axes=(0, None, None)))
