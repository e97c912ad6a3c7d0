"""Learning-dynamics probes: the registry and the ``[probes]`` configuration.

``[probes] batch_size`` sets the probe batch: the first ``batch_size`` training
examples, the same fixed batch for every member and every evaluation. Its default
(0) is the first 256 examples, or the whole training set under ``train.full_batch``,
where the loss gradient descent follows is the whole set's (``probe_batch_size``).
Each ``[probes.<name>]`` table turns a probe on (``norms`` and ``activations`` are
on unless their ``every`` is 0) and sets its options; ``every`` is the number of
chunks between evaluations (and every probe runs after the last chunk).

Adding a probe is one module (its options dataclass and its function) plus one
entry in ``PROBES``; the runner never learns probe names. A user's probe is a
function ``ProbeContext -> {metric: scalar or {layer: scalar}}`` named by import path:
``[probes."package.module:margin"]``, or ``[probes.margin] fn = "package.module:margin"``;
its ``every`` works as for the built-in probes.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import jax.numpy as jnp

from jaxdyn import extension
from jaxdyn.errors import ConfigError, closest
from jaxdyn.parsing import check_type
from jaxdyn.probes import (activations, attention, gradient_noise, hessian, loss_slices, norms, ntk, similarity,
                           weights)
from jaxdyn.probes.base import HISTOGRAMS, Probe, ProbeContext, options_doc

PROBES: dict[str, Probe] = {p.name: p for p in (norms.PROBE, activations.PROBE, hessian.PROBE, gradient_noise.PROBE, ntk.PROBE,
                                                       weights.PROBE, loss_slices.PROBE, similarity.CKA,
                                                       similarity.LMC, attention.PROBE)}


@dataclass(frozen=True)
class ProbesConfig:
    """``[probes]``: the probe batch size and each probe's options (``every = 0``: off)."""

    batch_size: int = 0  # 0: the first DEFAULT_BATCH examples, or the whole set under train.full_batch
    tables: tuple[tuple[str, Any], ...] = tuple(
        (name, dataclasses.replace(p.options(), every=1 if p.default_on else 0)) for name, p in PROBES.items())

    def enabled(self) -> list[tuple[Probe, Any]]:
        return [(probe(name, opts), opts) for name, opts in self.tables if opts.every > 0]

    def options(self, name: str):
        return dict(self.tables)[name]


@dataclass(frozen=True)
class UserProbeOptions:
    """``[probes.<name>]`` of a user's probe: ``fn`` its import path (the table's name when
    that is one), ``every`` chunks between evaluations."""

    every: int = 1
    fn: str = ""

    def check(self) -> None:
        pass


DEFAULT_BATCH = 256


def probe_batch_size(cfg: ProbesConfig, n_train: int, full_batch: bool) -> int:
    """The probe batch's size: ``probes.batch_size``, or by default the first ``DEFAULT_BATCH``
    examples of ``n_train``, or all of them when every step is on the whole set (``full_batch``)."""
    if cfg.batch_size:
        return cfg.batch_size
    return n_train if full_batch else min(DEFAULT_BATCH, n_train)


def probe(name: str, options) -> Probe:
    """The probe a ``[probes.<name>]`` table turns on: a registered one, or a user's function."""
    if name in PROBES:
        return PROBES[name]
    fn = extension.resolve(options.fn or name, f"probes.{name}" + (".fn" if options.fn else ""))
    if not callable(fn):
        raise ConfigError(f"probes.{name}: {options.fn or name!r} is {fn!r}, not a function of a ProbeContext")
    return Probe(name, UserProbeOptions, _user_probe(name, fn), f"your probe {options.fn or name}")


def _user_probe(name: str, fn):
    """``fn``'s result checked and shaped as a probe's: each metric a scalar (a whole-model row)
    or ``{layer: scalar}`` (per-layer rows)."""
    def run(ctx) -> dict:
        result = fn(ctx)
        if not isinstance(result, Mapping):
            raise ConfigError(f"probe {name!r} returned {type(result).__name__}; return a dict "
                              "{metric: scalar or {layer: scalar}}")
        out = {}
        for metric, value in result.items():
            values = value if isinstance(value, Mapping) else {"": value}
            for layer, v in values.items():
                if jnp.shape(v) != ():
                    what = f"{metric!r} (layer {layer!r})" if layer else f"{metric!r}"
                    raise ConfigError(f"probe {name!r}: metric {what} has shape {list(jnp.shape(v))}; each value is "
                                      "a scalar (give per-layer values as {layer: scalar})")
            out[str(metric)] = ({str(k): jnp.asarray(v, jnp.float32) for k, v in values.items()}
                                if isinstance(value, Mapping) else jnp.asarray(value, jnp.float32))
        return out
    return run


def probes_from_dict(raw) -> ProbesConfig:
    """Parse the ``[probes]`` table: keys and types, not ranges (``check_probes``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[probes] must be a table such as [probes.hessian] every = 4, got {raw!r}")
    batch_size = ProbesConfig.batch_size
    tables = dict(ProbesConfig().tables)
    for key, value in raw.items():
        if key == "batch_size":
            batch_size = check_type("probes.batch_size", value, int)
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"probes.{key} must be a table of options, e.g. [probes.{key}] every = 1")
        user = key not in PROBES and (extension.is_path(key) or "fn" in value)
        if key not in PROBES and not user:
            raise ConfigError(f"unknown probe [probes.{key}]{closest(key, [*PROBES, 'batch_size'])}; "
                              "a probe of your own is [probes.\"package.module:function\"]")
        cls = UserProbeOptions if user else PROBES[key].options
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        given = {}
        for option, v in value.items():
            if option not in fields:
                raise ConfigError(f"probes.{key}.{option} is not an option of probe {key!r}; it takes: "
                                  f"{options_doc(cls)}")
            annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(fields[option], fields[option])
            given[option] = check_type(f"probes.{key}.{option}", v, annotation)
        tables[key] = cls(**given)  # a table given turns its probe on (every defaults to 1)
    return ProbesConfig(batch_size, tuple(tables.items()))


def probes_to_dict(cfg: ProbesConfig) -> dict:
    return {"batch_size": cfg.batch_size, **{name: dataclasses.asdict(opts) for name, opts in cfg.tables}}


def check_probes(cfg: ProbesConfig, n_train: int, full_batch: bool) -> None:
    """Range checks of ``[probes]`` against a training set of ``n_train`` examples. Raises ConfigError."""
    if cfg.batch_size < 0:
        raise ConfigError(f"probes.batch_size = {cfg.batch_size}: must be >= 1 (the first N training examples), "
                          f"or 0 for the default ({DEFAULT_BATCH}, or the whole set under train.full_batch)")
    if cfg.batch_size > n_train:
        raise ConfigError(f"probes.batch_size = {cfg.batch_size} is larger than the training set ({n_train} "
                          f"examples); use at most {n_train}, or 0 for the default")
    size = probe_batch_size(cfg, n_train, full_batch)
    for name, opts in cfg.tables:
        if opts.every < 0:
            raise ConfigError(f"probes.{name}.every = {opts.every}: chunks between evaluations, >= 1 (0 = off)")
        opts.check()
        least, why = opts.min_batch() if hasattr(opts, "min_batch") else (1, "")
        if opts.every and size < least:
            raise ConfigError(f"probes.{name} needs probes.batch_size >= {least} ({why}); it is {size}"
                              + ("" if cfg.batch_size else f" (the whole training set of {n_train})")
                              + ": raise it" + ("" if cfg.batch_size else ", or use more training examples"))
        if opts.every:
            probe(name, opts)  # a user's probe imports, before anything compiles


__all__ = ["DEFAULT_BATCH", "HISTOGRAMS", "PROBES", "Probe", "ProbeContext", "ProbesConfig", "UserProbeOptions", "check_probes", "probe", "probe_batch_size",
           "probes_from_dict", "probes_to_dict"]
