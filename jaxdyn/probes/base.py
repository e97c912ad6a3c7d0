"""What a probe is, and the pieces probes share.

A probe is a pure function of a ``ProbeContext``: ONE member's state and the probe batch, returning
``{metric: value}`` where a value is a scalar (a whole-model number, written with
an empty ``layer``) or ``{layer: scalar}`` (per-layer numbers). Histograms come back
under ``HISTOGRAMS`` as ``{metric: {layer: counts [bins]}}`` and go to a table of
their own. ``ProbeSet`` (``run.py``) vmaps and shards it like the train step.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

HISTOGRAMS = "__histograms__"  # key of a probe's result holding its histograms
COSTS = ("cheap", "moderate", "expensive")


@dataclass(frozen=True)
class ProbeContext:
    """Everything a probe reads, for ONE member (jaxdyn's probes and a user's alike).

    Attributes:
      task: the task (or a GAN player's view of it): ``model`` (a Flax module) and
        ``probe_loss(params, state, x, y, batch_stats)``.
      options: the probe's ``[probes.<name>]`` options.
      model_config: the model's config (a kind's dataclass, or a user module's ``ModuleConfig``).
      hidden_activation: the nonlinearity of the model's hidden layer outputs.
      state: the member's state (``params``, ``model_state``, ``opt_state``, ``hparams``, ``step``).
      init_params: its initial parameters (probes that declare ``needs_init``; else its params).
      x, y: the probe batch, ``[N, *input_shape]`` and ``[N, *target_shape]``: the first
        ``probes.batch_size`` training examples, the same for every member and evaluation.
    """

    task: Any
    options: Any
    model_config: Any
    hidden_activation: str
    state: Any = None
    init_params: Any = None
    x: Any = None
    y: Any = None

    def bind(self, state, init_params, x, y) -> "ProbeContext":
        """This context for one member's ``state`` and the probe batch."""
        return dataclasses.replace(self, state=state, init_params=init_params, x=x, y=y)

    @property
    def params(self):
        return self.state.params

    @property
    def hparams(self) -> dict:
        """The member's hyperparameters, name -> float32 scalar."""
        return self.state.hparams

    def outputs(self, params=None, x=None):
        """The model's outputs ``[N, n_out]`` in evaluation mode (running BatchNorm statistics,
        no dropout), for ``params`` (default the member's) on ``x`` (default the probe batch)."""
        params = self.state.params if params is None else params
        return self.task.model.apply({"params": params, **self.state.model_state}, self.x if x is None else x,
                                     train=False, hparams=self.state.hparams)

    def loss(self, params=None, batch_stats: bool = True):
        """The training objective on the probe batch, dropout off (BatchNorm with the batch's
        statistics, or the running ones when ``batch_stats`` is False): differentiate it."""
        params = self.state.params if params is None else params
        return self.task.probe_loss(params, self.state, self.x, self.y, batch_stats)

    def layer_outputs(self, x=None) -> dict:
        """``{layer: output}`` the model sows in evaluation mode, on ``x`` (default the probe batch)."""
        return self.outputs_and_layers(x)[1]

    def outputs_and_layers(self, x=None) -> tuple:
        """``(outputs, {layer: output})`` in evaluation mode. The layer whose sown value IS the
        model's output (the same array) is its output layer: no nonlinearity follows it."""
        out, sown = self.task.model.apply({"params": self.state.params, **self.state.model_state},
                                          self.x if x is None else x, train=False, hparams=self.state.hparams,
                                          mutable=["intermediates"])
        return out, {name: values[-1] for name, values in sown.get("intermediates", {}).items()}


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
      fn: ``ProbeContext -> result`` for ONE member (``ctx.bind``: the member and the batch).
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
    # ``(result, options) -> message or None``, on the host after each evaluation (``result``:
    # the probe's metrics, ``{name: [K] or {layer: [K]}}``): said once per run, e.g. values
    # reported as NaN because an iterative method did not converge.
    warn: Callable | None = None


@dataclass(frozen=True)
class Every:
    """The option every probe has."""

    every: int = 1


def options_doc(cls) -> str:
    return ", ".join(f"{f}={getattr(cls, f)!r}" for f in cls.__dataclass_fields__)


__all__ = ["COSTS", "HISTOGRAMS", "Every", "Probe", "ProbeContext", "ProbeView", "field", "options_doc"]
