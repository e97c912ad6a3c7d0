"""jaxdyn: train populations of small networks as one compiled JAX program and measure how they learn."""

from jaxdyn import _cpu_devices

_cpu_devices.configure()  # must precede the first jax import; see _cpu_devices

from jaxdyn import distributed  # noqa: E402 (jaxdyn.distributed.initialize: several processes)
from jaxdyn.analysis import Results, compare, load  # noqa: E402
from jaxdyn.api import run  # noqa: E402
from jaxdyn.config import Config, load_config  # noqa: E402
from jaxdyn.errors import ConfigError, RunError, RunInUse  # noqa: E402
from jaxdyn.extract import Member, extract_member  # noqa: E402
from jaxdyn.hparams import HParam  # noqa: E402
from jaxdyn.probes.base import ProbeContext  # noqa: E402
from jaxdyn.report import write_report  # noqa: E402
from jaxdyn.stopping import Interrupted  # noqa: E402
from jaxdyn.tasks import Task, TaskKind  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "HParam", "Interrupted", "Member", "ProbeContext", "Results", "RunError", "RunInUse",
           "Task", "TaskKind", "compare", "distributed", "extract_member", "load", "load_config", "run",
           "write_report"]
