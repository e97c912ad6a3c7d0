"""Learning-dynamics probes: the registry and the ``[probes]`` configuration.

``[probes] batch_size = 256`` sets the probe batch: the first ``batch_size``
training examples, the same fixed batch for every member and every evaluation.
Each ``[probes.<name>]`` table turns a probe on (``norms`` and ``activations`` are
on unless their ``every`` is 0) and sets its options; ``every`` is the number of
chunks between evaluations (and every probe runs after the last chunk).

Adding a probe is one module (its options dataclass and its function) plus one
entry in ``PROBES``; the runner never learns probe names.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from jaxdyn.errors import ConfigError
from jaxdyn.probes import activations, gradient_noise, hessian, loss_slices, norms, ntk, similarity, weights
from jaxdyn.probes.base import HISTOGRAMS, Probe, ProbeContext, options_doc

PROBES: dict[str, Probe] = {p.name: p for p in (norms.PROBE, activations.PROBE, hessian.PROBE, gradient_noise.PROBE, ntk.PROBE,
                                                       weights.PROBE, loss_slices.PROBE, similarity.CKA,
                                                       similarity.LMC)}


@dataclass(frozen=True)
class ProbesConfig:
    """``[probes]``: the probe batch size and each probe's options (``every = 0``: off)."""

    batch_size: int = 256
    tables: tuple[tuple[str, Any], ...] = tuple(
        (name, dataclasses.replace(p.options(), every=1 if p.default_on else 0)) for name, p in PROBES.items())

    def enabled(self) -> list[tuple[Probe, Any]]:
        return [(PROBES[name], opts) for name, opts in self.tables if opts.every > 0]

    def options(self, name: str):
        return dict(self.tables)[name]


def probes_from_dict(raw, check_type, closest_hint) -> ProbesConfig:
    """Parse the ``[probes]`` table; ``check_type(where, value, annotation)`` coerces a value."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[probes] must be a table such as [probes.hessian] every = 4, got {raw!r}")
    batch_size = ProbesConfig.batch_size
    tables = dict(ProbesConfig().tables)
    for key, value in raw.items():
        if key == "batch_size":
            batch_size = check_type("probes.batch_size", value, int)
            continue
        if key not in PROBES:
            raise ConfigError(f"unknown probe [probes.{key}]{closest_hint(key, [*PROBES, 'batch_size'])}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"probes.{key} must be a table of options, e.g. [probes.{key}] every = 1")
        cls = PROBES[key].options
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


def check_probes(cfg: ProbesConfig) -> None:
    if cfg.batch_size < 1:
        raise ConfigError(f"probes.batch_size = {cfg.batch_size}: must be >= 1 (the first N training examples)")
    for name, opts in cfg.tables:
        if opts.every < 0:
            raise ConfigError(f"probes.{name}.every = {opts.every}: chunks between evaluations, >= 1 (0 = off)")
        opts.check()


__all__ = ["HISTOGRAMS", "PROBES", "Probe", "ProbeContext", "ProbesConfig", "check_probes", "probes_from_dict",
           "probes_to_dict"]
