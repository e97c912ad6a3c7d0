"""What a probe is, and the pieces probes share.

A probe is a pure function of ONE member's state and the probe batch, returning
``{metric: value}`` where a value is a scalar (a whole-model number, written with
an empty ``layer``) or ``{layer: scalar}`` (per-layer numbers). Histograms come back
under ``HISTOGRAMS`` as ``{metric: {layer: counts [bins]}}`` and go to a table of
their own. ``ProbeSet`` (``run.py``) vmaps and shards it like the train step.
"""

from dataclasses import dataclass, field
from typing import Any, Callable

HISTOGRAMS = "__histograms__"  # key of a probe's result holding its histograms
COSTS = ("cheap", "moderate", "expensive")


@dataclass(frozen=True)
class ProbeContext:
    """What a probe's function may read besides the member: the task, its options,
    the model config, and the probe batch's size."""

    task: Any
    options: Any
    model_config: Any
    hidden_activation: str  # the nonlinearity of the model's hidden layer outputs


@dataclass(frozen=True)
class ProbeView:
    """One thing the probes measure in each member, and how to see it as a supervised model.

    A supervised member is one view of itself. A GAN member has two, the generator
    and the discriminator, each with the other player held fixed: ``state`` maps the
    member state to the view's (``params``, ``model_state``, ``opt_state``, ``hparams``
    of that player), ``params`` does the same to the initial parameters, and
    ``batch`` maps the probe batch ``(x, y)`` to the view's inputs and targets. The
    view's rows carry ``prefix`` before every metric name (``g_grad_norm``, ...).

    Attributes:
      task: has ``model`` (a Flax module) and ``probe_loss(params, state, x, y, batch_stats)``.
      model_config: the view's model config; ``hidden_activation`` its hidden nonlinearity.
    """

    task: Any
    model_config: Any
    hidden_activation: str
    prefix: str = ""
    state: Callable = lambda state: state
    params: Callable = lambda params: params
    batch: Callable = lambda x, y: (x, y)


@dataclass(frozen=True)
class Probe:
    """One registered probe.

    Attributes:
      options: frozen dataclass of its ``[probes.<name>]`` options; ``every`` (chunks
        between evaluations, 0 = off) is always one of them, and ``check()`` raises
        ``ConfigError`` on a bad value.
      fn: ``(ctx, state, init_params, x, y) -> result`` for ONE member.
      doc: one line for ``jaxdyn list``.
      default_on: part of every study unless its ``every`` is set to 0.
      needs_init: reads the member's initial parameters.
      step_metrics: the train step adds these per-layer metrics while the probe is on.
    """

    name: str
    options: type
    fn: Callable
    doc: str
    cost: str = "cheap"
    kind: str = "member"  # member | pairs
    default_on: bool = False
    needs_init: bool = False
    step_metrics: tuple[str, ...] = ()
    # (name, numerator, denominator): a ratio of exponential moving averages of two of
    # the probe's metrics over its evaluations, kept on the host (decay: the ``ema`` option).
    ema: tuple[tuple[str, str, str], ...] = ()
    sequential: bool = False  # one member at a time within a device (lax.map), for LAPACK calls
    # Cross-member probes (kind "pairs"): ``fn`` (or None) computes per-member pieces on
    # the devices; ``pair_fn(ctx, pieces, state, x, y, pairs, options)`` combines them on
    # the host into ``(a, b, metric, layer, value)`` rows, a and b positions in the cohort.
    pair_fn: Callable | None = None


@dataclass(frozen=True)
class Every:
    """The option every probe has."""

    every: int = 1


def options_doc(cls) -> str:
    return ", ".join(f"{f}={getattr(cls, f)!r}" for f in cls.__dataclass_fields__)


__all__ = ["COSTS", "HISTOGRAMS", "Every", "Probe", "ProbeContext", "ProbeView", "field", "options_doc"]
