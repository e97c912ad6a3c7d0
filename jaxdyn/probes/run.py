"""``ProbeSet``: a cohort's probes, compiled once each, run at chunk boundaries.

Each probe's one-member function is vmapped over the members of a device and
sharded over the devices like the train step; it reads the state right after a
chunk (at step 0, the state training starts from), the fixed probe batch (the
first ``probes.batch_size`` training examples, already on the devices), and, for
probes that need them, the members' initial parameters (recomputed from the
seeds, so a resumed run has them too).
"""

import jax
import numpy as np
import pandas as pd
from jax.sharding import PartitionSpec as P

from jaxdyn import distributed
from jaxdyn.logs import log
from jaxdyn.population import AXIS
from jaxdyn.probes import DEFAULT_BATCH
from jaxdyn.probes.base import HISTOGRAMS, ProbeContext
from jaxdyn.probes.similarity import choose_pairs
from jaxdyn.tables import tidy

class ProbeSet:
    """The enabled probes of one cohort, over each of its views (``ProbeView``).

    Args:
      probes_config: the study's ``ProbesConfig``.
      views: what is probed in each member: one view for a supervised member, the
        generator and the discriminator for a GAN; each view's metric names carry its prefix.
      mesh: the devices.
      members: the cohort's member table (cross-member probes choose their pairs from it).
      batch_size: examples in the probe batch (``probes.probe_batch_size``); by default
        ``probes.batch_size`` or ``DEFAULT_BATCH``.
    """

    def __init__(self, probes_config, views, mesh, members=None, batch_size: int | None = None):
        self.enabled = probes_config.enabled()
        self._probes = {p.name: p for p, _ in self.enabled}
        self.views = tuple(views)
        self.members = members
        self.batch_size = batch_size or probes_config.batch_size or DEFAULT_BATCH
        self.needs_init = any(p.needs_init for p, _ in self.enabled)
        self._contexts = {(v.prefix, p.name): ProbeContext(v.task, o, v.model_config, v.hidden_activation)
                          for v in self.views for p, o in self.enabled}
        self._mesh = mesh
        self._compiled = {}  # one program per set of probes due together
        self._ema = {}  # (metric, member) -> (numerator EMA, denominator EMA), on the host
        self._warned = set()  # (view prefix, probe) whose warning was said

    def _program(self, names: tuple[str, ...]):
        """The probes ``names`` as one compiled program: ``(state, params0, x, y) -> {prefix: {name: result}}``."""
        if names not in self._compiled:
            probes = self._probes

            def member(subset):
                def each_view(state, params0, x, y):
                    out = {}
                    for v in self.views:
                        s, p0, (vx, vy) = v.state(state), v.params(params0), v.batch(x, y)
                        out[v.prefix] = {n: probes[n].fn(self._contexts[(v.prefix, n)].bind(s, p0, vx, vy)) for n in subset}
                    return out
                return each_view

            batched = tuple(n for n in names if not probes[n].sequential)
            one_by_one = tuple(n for n in names if probes[n].sequential)

            def per_device(state, params0, x, y):
                out = jax.vmap(member(batched), in_axes=(0, 0, None, None))(state, params0, x, y) if batched else {}
                if one_by_one:  # LAPACK must not run batched on two CPU devices at once
                    more = jax.lax.map(lambda m: member(one_by_one)(m[0], m[1], x, y), (state, params0))
                    out = {v.prefix: {**out.get(v.prefix, {}), **more[v.prefix]} for v in self.views}
                return out

            self._compiled[names] = jax.jit(jax.shard_map(
                per_device, mesh=self._mesh, in_specs=(P(AXIS), P(AXIS), P(), P()), out_specs=P(AXIS),
                check_vma=False))
        return self._compiled[names]

    def check(self, state, x, y) -> None:
        """Trace every on-device probe on one member's shapes (``state``: from ``jax.eval_shape`` of
        ``init``; ``x, y``: the probe batch) without compiling, so that a probe of the user's that
        fails or returns the wrong thing does so before any run folder is made."""
        for view in self.views:
            for probe, _ in self.enabled:
                if probe.fn is not None:
                    ctx = self._contexts[(view.prefix, probe.name)]
                    jax.eval_shape(lambda s, vx, vy: probe.fn(ctx.bind(view.state(s), view.params(s.params),
                                                                       *view.batch(vx, vy))), state, x, y)

    def __bool__(self) -> bool:
        return bool(self.enabled)

    def programs(self) -> list:
        """The compiled programs so far: one per set of probes that came due together."""
        return list(self._compiled.values())

    def due_sets(self, n_chunks: int) -> set[tuple[str, ...]]:
        """The sets of on-device probes that come due together in a run of ``n_chunks`` chunks
        (each is one program): what ``--dry-run`` counts."""
        return {names for c in range(n_chunks + 1)
                if (names := tuple(p.name for p, _ in self.due(c, c == n_chunks) if p.fn is not None))}

    def due(self, chunk: int, last: bool) -> list:
        """The probes due after ``chunk`` (every one at chunk 0, step 0, and after the ``last``)."""
        return [(p, o) for p, o in self.enabled if last or chunk % o.every == 0]

    def measure(self, state, init_params, data, chunk: int, last: bool, step: int, cohort: int,
                members: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Rows of every probe due after ``chunk``: ``(metric rows, histogram rows, pair rows)``."""
        due = self.due(chunk, last)
        if not due:
            return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
        x, y = data.x_train[: self.batch_size], data.y_train[: self.batch_size]
        params0 = init_params if init_params is not None else state.params  # unused unless needed
        k = len(members)
        rows, hists, pairs = [], [], []
        steps = np.array([step])
        on_device = tuple(p.name for p, _ in due if p.fn is not None)
        results = distributed.host(self._program(on_device)(state, params0, x, y)) if on_device else {}
        host_state = None
        for view in self.views:
            named = lambda metric: view.prefix + metric
            for probe, options in due:
                piece = results[view.prefix].get(probe.name) if results else None
                piece = None if piece is None else jax.tree.map(lambda a: np.asarray(a)[:k], piece)
                if probe.kind == "pairs":
                    if host_state is None and probe.fn is None:
                        host_state = jax.tree.map(lambda a: np.asarray(a)[:k], distributed.host(state))
                    pairs.append(self._pair_rows(view, probe, options, piece, host_state, x, y, members, cohort,
                                                 step))
                    continue
                result = piece
                histograms = result.pop(HISTOGRAMS, {})
                message = probe.warn(result, options) if probe.warn is not None and result else None
                if message and (view.prefix, probe.name) not in self._warned:
                    self._warned.add((view.prefix, probe.name))
                    log(f"probes.{probe.name}{f' ({view.prefix.rstrip(chr(95))})' if view.prefix else ''}: {message}")
                for name, num, den in probe.ema:
                    result[name] = self._smooth(named(name), members, result[num], result[den], options.ema)
                if result:
                    rows.append(tidy({named(m): v for m, v in result.items()}, members, cohort, steps, ""))
                for metric, layers in histograms.items():
                    for layer, counts in layers.items():
                        hists.append(histogram_rows(counts, members, cohort, step, named(metric), layer,
                                                    options.hist_range))
        frame = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return frame(rows), frame(hists), frame(pairs)

    def _pair_rows(self, view, probe, options, piece, host_state, x, y, members, cohort: int,
                   step: int) -> pd.DataFrame:
        position = {int(m): i for i, m in enumerate(members)}
        chosen = [(position[a], position[b]) for a, b in choose_pairs(self.members, options.pairs)]
        vx, vy = view.batch(x, y)
        out = probe.pair_fn(self._contexts[(view.prefix, probe.name)], piece,
                            None if host_state is None else jax.device_get(jax.vmap(view.state)(host_state)), jax.device_get(vx),
                            jax.device_get(vy), chosen, options)
        return pd.DataFrame({
            "cohort": np.int32(cohort),
            "member_a": np.array([members[a] for a, *_ in out], np.int32),
            "member_b": np.array([members[b] for _, b, *_ in out], np.int32),
            "step": np.int64(step), "metric": [view.prefix + r[2] for r in out], "layer": [r[3] for r in out],
            "value": np.array([r[4] for r in out], np.float32)})

    def _smooth(self, name: str, members, num: np.ndarray, den: np.ndarray, decay: float) -> np.ndarray:
        """Each member's ratio of the running EMAs of ``num`` and ``den`` (their bias
        corrections cancel in the ratio): +inf where the denominator's is <= 0 and the
        numerator's positive, NaN where both are 0 or less."""
        out = np.empty(len(members), np.float32)
        for i, (member, a, b) in enumerate(zip(members, num, den)):
            ea, eb = self._ema.get((name, member), (None, None))
            ea = a if ea is None else decay * ea + (1 - decay) * a
            eb = b if eb is None else decay * eb + (1 - decay) * b
            self._ema[(name, member)] = (ea, eb)
            # The smoothed denominator of an unbiased estimate (|G|²) can be <= 0: no finite ratio then.
            out[i] = ea / eb if eb > 0 else (np.inf if ea > 0 else np.nan)
        return out

    def resume(self, history: pd.DataFrame) -> None:
        """Rebuild the host-side averages from the rows a resumed run already wrote."""
        for view, (probe, options) in ((v, e) for v in self.views for e in self.enabled):
            for name, num, den in probe.ema:
                name, num, den = (view.prefix + n for n in (name, num, den))
                rows = history[history.metric.isin([num, den]) & (history.layer == "")]
                wide = rows.pivot_table(index=["step", "member"], columns="metric", values="value").sort_index()
                for step, group in wide.groupby(level="step"):
                    self._smooth(name, group.index.get_level_values("member").to_numpy(),
                                 group[num].to_numpy(), group[den].to_numpy(), options.ema)


def histogram_rows(counts: np.ndarray, members: np.ndarray, cohort: int, step: int, metric: str, layer: str,
                   limit: float) -> pd.DataFrame:
    """Long rows from counts ``[K, bins]`` over ``[-limit, limit]``: one row per member and bin, with its edges."""
    k, bins = counts.shape
    edges = np.linspace(-limit, limit, bins + 1)
    return pd.DataFrame({
        "cohort": np.int32(cohort), "member": np.repeat(members.astype(np.int32), bins),
        "step": np.int64(step), "metric": metric, "layer": layer,
        "bin": np.tile(np.arange(bins, dtype=np.int32), k),
        "left": np.tile(edges[:-1], k).astype(np.float32), "right": np.tile(edges[1:], k).astype(np.float32),
        "value": counts.reshape(-1).astype(np.float32)})
