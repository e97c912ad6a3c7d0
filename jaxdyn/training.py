"""Train a study into a run folder: expand it, check it fits, open the folder (in every process
of a distributed run), run its cohorts in turn and write the run folder's tables.

This is the training side: reading the tables back, plotting them and the ``Results`` a user
gets sit above it (``results``, ``report``, ``api``); what a study is (cohorts, members, the
split, the plan) is ``study``'s, and the run folder's life ``rundir``'s.
"""

import contextlib
import dataclasses
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from jaxdyn import distributed, processes, rundir, runner, stopping
from jaxdyn.atomic import write_atomic
from jaxdyn.config import load_config, to_toml
from jaxdyn.data import arrays, cache_dir, load_dataset
from jaxdyn.errors import ConfigError, as_path, is_disk_full
from jaxdyn.federated import setup
from jaxdyn.handover import handed_over
from jaxdyn.population import enable_compile_cache, make_mesh, replicate
from jaxdyn.progress import study_progress
from jaxdyn.study import Cohort, check_traced, expand, fit_memory
from jaxdyn.tables import MetricParts, member_table


class Trained(NamedTuple):
    """What ``train`` leaves: the run folder, its cohorts, and the member and metric tables written there."""

    run_dir: Path
    cohorts: list[Cohort]
    members: pd.DataFrame
    metrics: pd.DataFrame


def train(config=None, *, overrides=(), out=None, resume=None, progress: bool = True,
          model=None, data=None, loss=None, probes=None) -> Trained:
    """Train a study into a run folder and write its tables: ``jaxdyn.run`` (``api.run``)
    without the plots, the printed summary and the ``Results``, with its arguments and errors.
    """
    if resume is not None and out is not None:
        raise ConfigError("give either --out (a new run) or --resume (an existing run), not both")
    out = as_path(out, "out") if out is not None else None
    resume = as_path(resume, "resume") if resume is not None else None
    given = handed_over(model, data, loss, probes)
    if resume is not None:
        saved = Path(resume) / "config.toml"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no config.toml there; is it a jaxdyn run folder?")
        saved_cfg = rundir.load_run_config(resume)  # first: it adopts the arrays the folder keeps
        cfg = load_config(config if config is not None else saved, overrides, given)
        cfg = dataclasses.replace(cfg, kept_structural=saved_cfg.kept_structural)  # the folder's cohorts
        # Compare normalised forms, so that a comment added to config.toml is no change.
        extended_from = rundir.resume_change(saved_cfg, cfg, Path(resume))
    else:
        cfg, extended_from = load_config(config, overrides, given), None
    cohorts = expand(cfg)
    # NaN or malformed data fails here, before any folder or compile.
    datasets = {d: load_dataset(d) for d in dict.fromkeys(c.config.data.source() for c in cohorts)}
    # The run folder is refused here, before the memory check compiles the programs.
    if resume is None:
        processes.check_first(partial(rundir.check_new, out))
    else:
        processes.check_first(partial(rundir.check_existing, resume, rundir.run_info(cfg)))
    mesh = make_mesh()
    for cohort in cohorts:  # a probe of the user's that fails, fails here: shapes only, nothing compiles
        task = cohort.task()
        check_traced(cohort, task, cohort.probes(task, mesh))
    enable_compile_cache(cache_dir() / "xla")  # the programs the check compiles are kept for the run
    cfg, cohorts, estimates = fit_memory(cfg, cohorts, mesh, may_split=resume is None)
    if distributed.count() > 1:  # each process checked its own memory: they must run the same split
        differs = distributed.writer_text(to_toml(cfg)) != to_toml(cfg)
        if distributed.any_process(differs):
            raise ConfigError("the processes split the cohorts differently to fit their memory (a process with "
                              "less free memory split further); set train.max_members_per_program to the smallest "
                              "split any of them printed, so that all run the same programs")
    programs = {e.cohort: e.programs for e in estimates}  # compiled: the run reuses them
    info = rundir.run_info(cfg)
    if resume is None:
        folder = partial(rundir.open_new, out, cfg.study.name, to_toml(cfg), info)
    else:
        folder = partial(rundir.open_existing, resume, info)

    def prepare(run_dir: Path) -> None:  # in process 0 only, when there are several
        if extended_from is not None:
            rundir.extend(run_dir, to_toml(cfg), extended_from, cfg.train.steps)
        _keep_arrays(cohorts, run_dir)
        partition = setup.partition_frame(cohorts)  # first: a report of a run still going shows it
        if len(partition):
            write_atomic(run_dir / "partition.parquet", lambda p: partition.to_parquet(p, index=False))

    with processes.open_run(folder, prepare) as (run_dir, tables):
        try:
            return _run_and_write(cohorts, datasets, run_dir, info, progress, mesh, programs, tables)
        except Exception as e:  # Orbax reports a full disk from its threads as a plain Exception
            if is_disk_full(e):
                raise rundir.disk_full_error(run_dir) from e
            raise


def _keep_arrays(cohorts, run_dir: Path) -> None:
    """A copy of the arrays handed to ``run`` in the run folder (``arrays/<digest>.npz``): the
    folder alone then resumes, extracts and reports in any process."""
    for name in dict.fromkeys(c.config.data.name for c in cohorts):
        if name.startswith(arrays.PREFIX):
            path = arrays.run_copies(run_dir) / f"{name[len(arrays.PREFIX):]}.npz"
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                arrays.write_copy(name, path)


def _run_and_write(cohorts, datasets, run_dir: Path, info: dict, progress: bool, mesh, programs: dict,
                   tables: Path) -> Trained:
    """Run the cohorts, then write the run's tables (process 0; the others only wait for it).

    ``tables``: where this process writes its table parts (``processes.open_run``)."""
    enable_compile_cache(cache_dir() / "xla")
    # A checkpoint records the study without its length (a continued run still matches it).
    layout_info = {k: v for k, v in info.items() if k not in ("env", "config_sha256")}
    progress = progress and distributed.is_writer()
    members = member_table(_run_cohorts(cohorts, datasets, run_dir, layout_info, progress, mesh, programs, tables))
    if not distributed.is_writer():
        processes.finish(run_dir)
        return Trained(run_dir, cohorts, members, MetricParts(tables).read())
    write_atomic(run_dir / "members.csv", lambda p: members.to_csv(p, index=False))
    metrics = MetricParts(run_dir).read()
    write_atomic(run_dir / "metrics.parquet", lambda p: metrics.to_parquet(p, index=False))
    for prefix, name in (("hist_", "histograms.parquet"), ("pairs_", "pairs.parquet"), ("samples_", "samples.parquet"),
                         ("lineage_", "lineage.parquet")):
        table = MetricParts(run_dir, prefix).read()
        if len(table):
            write_atomic(run_dir / name, lambda p, table=table: table.to_parquet(p, index=False))
    timing = MetricParts(run_dir, "time_").read()
    write_atomic(run_dir / "timing.csv", lambda p: timing.to_csv(p, index=False))
    processes.finish(run_dir)
    return Trained(run_dir, cohorts, members, metrics)


def _run_cohorts(cohorts, datasets, run_dir: Path, run_info: dict, progress: bool, mesh,
                 programs: dict, tables_dir: Path) -> list[pd.DataFrame]:
    """Run the cohorts not finished yet, in turn, with their ``programs`` (cohort index ->
    ``CohortPrograms``, compiled by the memory check); return every cohort's member table."""
    on_device = {}
    parts = MetricParts(tables_dir)
    tables = []
    bar = study_progress(len(cohorts)) if progress else contextlib.nullcontext()
    with stopping.StopFlag() as stop, bar:
        for cohort in cohorts:
            done_marker = parts.dir / f"members_c{cohort.index:03d}.csv"
            if not done_marker.exists():
                name = cohort.config.data.source()  # the arrays: dataset, subset, standardisation
                if name not in on_device:  # each dataset goes to the devices once
                    on_device[name] = replicate(datasets[name], mesh)
                try:
                    table = runner.run_cohort(cohort, on_device[name], run_dir, mesh, run_info,
                                              bar if progress else None, stop, programs.get(cohort.index), tables_dir)
                except stopping.Interrupted as e:
                    e.run_dir = run_dir
                    raise
                parts.dir.mkdir(parents=True, exist_ok=True)
                write_atomic(done_marker, lambda p: table.to_csv(p, index=False))
            tables.append(pd.read_csv(done_marker))  # the same dtypes whether fresh or resumed
    return tables
