"""A study: expand the grid into cohorts x members, and build what each cohort runs.

The rule for the two axes: an array can differ across members, a shape or a
Python choice cannot. Numeric optimizer hyperparameters and seeds become members
of one population; structural axes (``COHORT_AXES``) each make a cohort.
"""

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxdyn import runner
from jaxdyn.config import (
    COHORT_AXES, MAX_MEMBERS, Config, ConfigError, check_hparam, load_config, to_toml, validate,
)
from jaxdyn.data import DATASETS, cache_dir, load_dataset
from jaxdyn.models import build_model
from jaxdyn.optim import FAMILIES
from jaxdyn.population import make_mesh, replicate
from jaxdyn.progress import StudyProgress
from jaxdyn.report import plot_curves
from jaxdyn.results import MetricParts, Results, member_table, print_summary, write_atomic
from jaxdyn.tasks.supervised import Seeds, SupervisedTask


@dataclass(frozen=True)
class Cohort:
    """One structural setting and its members.

    Attributes:
      index: position of the cohort in the study.
      config: the study config with this cohort's structural values applied and no grid.
      settings: the structural grid values of this cohort, e.g. ``{"model.hidden": (100,)}``.
      members: one row per member: ``member, cohort, init_seed, data_seed`` and
        one column per hyperparameter of the cohort's optimizer family.
    """

    index: int
    config: Config
    settings: dict
    members: pd.DataFrame

    @property
    def hparam_names(self) -> list[str]:
        return list(FAMILIES[self.config.optim.name].defaults)

    def task(self) -> SupervisedTask:
        info = DATASETS[self.config.data.name]
        return SupervisedTask(
            model=build_model(self.config.model, info.n_classes),
            optimizer=FAMILIES[self.config.optim.name],
            batch_size=self.config.train.batch_size,
            input_shape=info.input_shape,
        )

    def member_arrays(self, pad) -> tuple[Seeds, dict]:
        """Seeds and hyperparameters as arrays ``[K_padded]``, padded by ``pad``."""
        col = lambda name, dtype: pad(self.members[name].to_numpy().astype(dtype))
        seeds = Seeds(col("init_seed", np.int32), col("data_seed", np.int32))
        return seeds, {h: col(h, np.float32) for h in self.hparam_names}


def _with(cfg: Config, key: str, value) -> Config:
    section, name = key.split(".")
    if section == "optim" and name != "name":
        hparams = dict(cfg.optim.hparams) | {name: float(value)}
        return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, hparams=tuple(sorted(hparams.items()))))
    sub = dataclasses.replace(getattr(cfg, section), **{name: value})
    return dataclasses.replace(cfg, **{section: sub})


def expand(cfg: Config) -> list[Cohort]:
    """All cohorts of a study with their member tables. Validates every value.

    Raises:
      ConfigError: on any bad value, before anything compiles.
    """
    cohort_axes = [(k, v) for k, v in cfg.grid if k in COHORT_AXES]
    member_axes = [(k, v) for k, v in cfg.grid if k not in COHORT_AXES]
    base = dataclasses.replace(cfg, grid=())
    cohorts, next_member = [], 0
    for values in itertools.product(*(v for _, v in cohort_axes)):
        settings = dict(zip((k for k, _ in cohort_axes), values))
        ccfg = base
        for key, value in settings.items():
            ccfg = _with(ccfg, key, value)
        validate(ccfg)
        family = FAMILIES[ccfg.optim.name]
        for key, _ in member_axes:
            name = key.split(".")[1]
            if name not in family.defaults:
                where = f" (cohort {settings})" if settings else ""
                raise ConfigError(
                    f"grid axis {key!r} is not a hyperparameter of optimizer {ccfg.optim.name!r}{where}; "
                    f"it takes {', '.join(family.defaults)}"
                )
        n_members = len(ccfg.seed_pairs()) * math.prod(len(v) for _, v in member_axes)
        if n_members > MAX_MEMBERS:
            raise ConfigError(
                f"the grid makes {n_members:,} members per cohort; at most {MAX_MEMBERS:,} fit in one "
                "study: use fewer seeds or grid values"
            )
        rows = []
        defaults = ccfg.optim_hparams()
        for point in itertools.product(*(v for _, v in member_axes)):
            hparams = defaults | {k.split(".")[1]: float(v) for (k, _), v in zip(member_axes, point)}
            for name, value in hparams.items():
                check_hparam(ccfg.optim.name, name, value)
            for init_seed, data_seed in ccfg.seed_pairs():
                rows.append({"member": next_member, "cohort": len(cohorts), "init_seed": init_seed,
                             "data_seed": data_seed, **hparams})
                next_member += 1
        cohorts.append(Cohort(len(cohorts), ccfg, settings, pd.DataFrame(rows)))
    return cohorts


def run(config=None, *, overrides=(), out=None, resume=None, progress: bool = True,
        summary: bool = True) -> Results:
    """Run a study end to end and return its ``Results``.

    Args:
      config: a TOML path, a dict, a ``Config``, or None for the default study.
      overrides: ``"section.key=value"`` strings applied on top of ``config``.
      out: the run folder to create (must not exist or be empty); default
        ``runs/<study name>-<time>``.
      resume: an existing run folder to continue. Its saved config is used; a
        ``config``/``overrides`` that differ from it are refused with a diff.
      progress: show a progress bar.
      summary: print the table of final test accuracy per setting at the end.

    Raises:
      ConfigError: bad config, data or run folder, before anything compiles.
      runner.Interrupted: SIGTERM or Ctrl-C arrived; the run was checkpointed and
        can be resumed (``e.run_dir``).
    """
    if resume is not None and out is not None:
        raise ConfigError("give either --out (a new run) or --resume (an existing run), not both")
    if resume is not None:
        saved = Path(resume) / "config.toml"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no config.toml there; is it a jaxdyn run folder?")
        cfg = load_config(config if config is not None else saved, overrides)
        # Compare normalised forms, so that a comment added to config.toml is no change.
        _refuse_changed(to_toml(load_config(saved)), to_toml(cfg), Path(resume))
    else:
        cfg = load_config(config, overrides)
    cohorts = expand(cfg)
    # NaN or malformed data fails here, before any folder or compile.
    datasets = {name: load_dataset(name) for name in dict.fromkeys(c.config.data.name for c in cohorts)}
    _check_memory(cohorts)
    run_info = {"config_sha256": hashlib.sha256(to_toml(cfg).encode()).hexdigest(),
                "versions": _versions(), "n_devices": len(jax.devices()),
                "platform": jax.devices()[0].platform}
    if resume is None:
        run_dir = _make_run_dir(out, cfg.study.name)
        write_atomic(run_dir / "config.toml", lambda p: p.write_text(to_toml(cfg)))
        write_atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(run_info, indent=2)))
    else:
        run_dir = Path(resume)
        _check_resume(run_dir, run_info)
    _enable_compile_cache()
    members = member_table(_run_cohorts(cohorts, datasets, run_dir, run_info, progress))
    write_atomic(run_dir / "members.csv", lambda p: members.to_csv(p, index=False))
    metrics = MetricParts(run_dir).read()
    write_atomic(run_dir / "metrics.parquet", lambda p: metrics.to_parquet(p, index=False))
    write_atomic(run_dir / "curves.png", lambda p: plot_curves(members, metrics, p))
    if summary:
        print_summary(members)
    return Results(run_dir, members, metrics)


def _run_cohorts(cohorts, datasets, run_dir: Path, run_info: dict, progress: bool) -> list[pd.DataFrame]:
    """Run the cohorts not finished yet, in turn; return every cohort's member table."""
    mesh = make_mesh()
    on_device = {}
    parts = MetricParts(run_dir)
    tables = []
    bar = StudyProgress(len(cohorts)) if progress else contextlib.nullcontext()
    with runner.StopFlag() as stop, bar:
        for cohort in cohorts:
            done_marker = parts.dir / f"members_c{cohort.index:03d}.csv"
            if not done_marker.exists():
                name = cohort.config.data.name
                if name not in on_device:  # each dataset goes to the devices once
                    on_device[name] = replicate(datasets[name], mesh)
                try:
                    table = runner.run_cohort(cohort, on_device[name], run_dir, mesh, run_info,
                                              bar if progress else None, stop)
                except runner.Interrupted as e:
                    e.run_dir = run_dir
                    raise
                parts.dir.mkdir(parents=True, exist_ok=True)
                write_atomic(done_marker, lambda p: table.to_csv(p, index=False))
            tables.append(pd.read_csv(done_marker))  # the same dtypes whether fresh or resumed
    return tables


# A chunk holds the donated state, the new state, and gradients/updates of the
# same size: about four copies of the member state at its peak.
WORKING_COPIES = 4


def member_state_bytes(cohort: Cohort) -> int:
    """Bytes of one member's state (params, optimizer state, keys, ...), from shapes alone."""
    seeds = Seeds(*(jax.ShapeDtypeStruct((), np.int32) for _ in Seeds._fields))
    hparams = {h: jax.ShapeDtypeStruct((), np.float32) for h in cohort.hparam_names}
    shapes = jax.eval_shape(cohort.task().init, seeds, hparams)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def available_bytes() -> int:
    """Memory the population may use: the devices' limit, or the host's available RAM on CPU."""
    devices = jax.devices()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] * len(devices)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            return 2**63  # unknown: do not refuse


def _check_memory(cohorts) -> None:
    """Refuse, before any folder or compile, a cohort whose state cannot fit."""
    from jaxdyn.population import plan_layout

    free = available_bytes()
    for cohort in cohorts:
        per_member = member_state_bytes(cohort)
        t = cohort.config.train
        layout = plan_layout(len(cohort.members), len(jax.devices()), t.member_group, jax.devices()[0].platform)
        need = layout.n_padded * per_member * WORKING_COPIES
        if need > free:
            raise ConfigError(
                f"cohort {cohort.index}{f' {cohort.settings}' if cohort.settings else ''} needs about {need / 2**30:.1f} GiB "
                f"({layout.n_padded:,} members x {per_member / 2**20:.2f} MiB of state x {WORKING_COPIES} "
                f"working copies) but {free / 2**30:.1f} GiB is available; use fewer members or a smaller model"
            )


def _check_resume(run_dir: Path, current: dict) -> None:
    """Refuse a resume that cannot continue bitwise; say so when library versions changed."""
    _probe_writable(run_dir, created=[], fix="make it writable to resume it")
    info_path = run_dir / "run.json"
    try:
        saved = json.loads(info_path.read_text())
        saved["n_devices"], saved["platform"], saved["versions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"--resume {run_dir}: run.json is missing or damaged ({type(e).__name__}: {e}); "
            "is it a jaxdyn run folder?"
        ) from None
    if saved["n_devices"] != current["n_devices"] or saved["platform"] != current["platform"]:
        raise ConfigError(
            f"cannot resume {run_dir} bitwise: it ran on {saved['n_devices']} {saved['platform']} "
            f"device(s), this process has {current['n_devices']} {current['platform']}; resume on the "
            "same devices (JAXDYN_CPU_DEVICES sets the CPU device count)"
        )
    changed = {k: (v, current["versions"].get(k)) for k, v in saved["versions"].items()
               if current["versions"].get(k) != v}
    if changed:
        runner.log("library versions changed since this run started, so results may differ in the last bits: "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))


def _refuse_changed(saved: str, current: str, run_dir: Path) -> None:
    if saved == current:
        return
    diff = "".join(difflib.unified_diff(
        saved.splitlines(True), current.splitlines(True), f"{run_dir}/config.toml", "requested config"
    ))
    raise ConfigError(
        f"refusing to resume {run_dir} with a changed config (a resume must continue the same study):\n"
        f"{diff}Start a new run with --out instead, or resume without changes."
    )


def _make_run_dir(out, name: str) -> Path:
    """Create the run folder and prove it is writable; on failure leave nothing behind."""
    if out is None:  # a fresh name: never share a folder with a run started in the same second
        stem = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = next(p for p in (stem.with_name(f"{stem.name}-{i}") if i else stem for i in itertools.count())
                       if not p.exists())
    else:
        run_dir = Path(out)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        what = "is a file" if not run_dir.is_dir() else "is not empty"
        raise ConfigError(f"output folder {run_dir} {what}; choose a new --out folder, or --resume {run_dir}")
    created = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
    _probe_writable(run_dir, created)
    return run_dir


def _probe_writable(run_dir: Path, created: list[Path], fix: str = "choose another --out folder") -> None:
    """Create ``run_dir`` and write a file in it; on failure remove the ``created`` folders."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        for path in created:  # innermost first
            try:
                path.rmdir()
            except OSError:
                pass
        raise ConfigError(
            f"output folder {run_dir} is not writable ({e.strerror or e}); {fix}"
        ) from None


def _enable_compile_cache() -> None:
    """Persist compiled programs under the cache folder, so a repeated study skips compiling
    (measured: a small study's wall time 4.0 s -> 1.3 s). A cache the user set is kept."""
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("jaxdyn", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
