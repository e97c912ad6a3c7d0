"""``jaxdyn run | report | export | list``: a thin shell over the Python API."""

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import traceback

from rich.console import Console

import jaxdyn
from jaxdyn import distributed
from jaxdyn.aggregate import AGGREGATES
from jaxdyn.config import load_config
from jaxdyn.axes import COHORT_AXES, MEMBER_HPARAMS
from jaxdyn.data import COMMON_FIELDS, DATASETS, dataset_info
from jaxdyn.errors import debug_enabled
from jaxdyn.export import export_tensorboard
from jaxdyn.losses import LOSSES
from jaxdyn.models import ACTIVATIONS, INITIALIZERS, MODELS
from jaxdyn.optim import FAMILIES
from jaxdyn.federated.config import federated_plan
from jaxdyn.pbt.config import pbt_plan
from jaxdyn.probes import DEFAULT_BATCH, PROBES
from jaxdyn.probes.base import options_doc
from jaxdyn.replay import parse_target, replay_study
from jaxdyn.report import write_report
from jaxdyn.report.compare import write_comparison
from jaxdyn.schedules import SCHEDULES
from jaxdyn.study import plan
from jaxdyn.tasks.kinds import TASK_KINDS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxdyn", description=jaxdyn.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (the default study when no CONFIG is given)")
    run.add_argument("config", nargs="?", help="study TOML file; omit for the default study")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set optim.learning_rate=0.01 "
                          "or --set grid.optim.learning_rate=[1e-3,1e-2] (repeatable)")
    run.add_argument("--out", help="run folder to create (default runs/<name>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run folder (--set train.steps=N continues a finished one)")
    run.add_argument("--replay", metavar="RUN_DIR:MEMBER",
                     help="train one fresh member on the hyperparameter schedule PBT found for MEMBER")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (the summary table is still printed)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the cohorts x members, the programs to compile and the memory per member; "
                          "train nothing")
    run.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    dist = run.add_argument_group(
        "several processes (jax.distributed; README: Scaling out)",
        "Every process runs the same command; the member axis is sharded over all their devices. Without "
        "--coordinator/--num-processes/--process-id, JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
        "JAX_PROCESS_ID are read, else jax detects SLURM or a TPU pod.")
    dist.add_argument("--distributed", action="store_true",
                      help="join the other processes of this run (also JAXDYN_DISTRIBUTED=1)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process")
    dist.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    dist.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 ... N-1")
    dist.add_argument("--init-timeout", type=float, metavar="SECONDS",
                      help=f"wait this long for every process to join, then stop with a message "
                           f"(default {distributed.DEFAULT_INIT_TIMEOUT}; JAXDYN_INIT_TIMEOUT)")
    dist.add_argument("--heartbeat-timeout", type=float, metavar="SECONDS",
                      help=f"a process silent this long counts as lost and every process stops "
                           f"(default {distributed.DEFAULT_HEARTBEAT_TIMEOUT}; JAXDYN_HEARTBEAT_TIMEOUT)")
    report = sub.add_parser("report", help="write RUN_DIR/report.html (also for a run still going or interrupted); "
                                           "with several runs, one comparison report: --out DIR")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", metavar="DIR", help="the folder for a comparison of several runs (DIR/index.html)")
    report.add_argument("--label", dest="labels", action="append", metavar="NAME",
                        help="a name per run of a comparison, in order (repeatable; default: the folder names)")
    _grouping(report)
    export = sub.add_parser("export", help="export a run's tables to another tool")
    export.add_argument("format", choices=["tensorboard"], help="tensorboard: one TensorBoard run per member")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("out", metavar="OUT", help="folder to write (TensorBoard's --logdir)")
    sub.add_parser("list", help="list datasets, models, activations, initialisers and optimizers")
    return parser


def _grouping(parser) -> None:
    parser.add_argument("--aggregate", default="mean_std", choices=list(AGGREGATES),
                        # argparse formats help with %: a literal one (95%) must be doubled
                        help="how seeds are combined: " + "; ".join(f"{k}: {v}" for k, v in AGGREGATES.items())
                        .replace("%", "%%"))
    parser.add_argument("--by", action="append", metavar="COLUMN",
                        help="a members.csv column that makes a setting (repeatable; default: every varying "
                             "hyperparameter and cohort setting, not the seeds)")


def _list() -> None:
    print(f"datasets (data.name; every one takes data.{', data.'.join(COMMON_FIELDS[1:])}):")
    for name, spec in DATASETS.items():
        fields = f"\n          fields: {', '.join(spec.fields)}" if spec.fields else ""
        print(f"  {name:<16} {spec.doc}{fields}")
    print("activations:  " + ", ".join(ACTIVATIONS))
    print("initialisers: " + ", ".join(INITIALIZERS) + " (model.init: a member choice; a grid over it is one cohort, "
          "each member initialised with its own scheme)")
    print("optimizers:")
    for name, fam in FAMILIES.items():
        hp = ", ".join(f"{k}={v:g}" for k, v in fam.defaults.items())
        print(f"  {name:<9} {fam.doc}; member hyperparameters: {hp}")
    print("schedules (optim.schedule; step counts structural, their numbers members):")
    for name, sched in SCHEDULES.items():
        numbers = ", ".join(f"{k}={h.default:g}" for k, h in sched.hparams.items())
        print(f"  {name:<14} {sched.doc}" + (f"; member numbers: {numbers}" if numbers else ""))
    print("models (model.kind) and their fields:")
    for name, spec in MODELS.items():
        fields = ", ".join(f.name for f in dataclasses.fields(spec.config) if f.name != "kind")
        print(f"  {name:<7} {spec.doc}\n          fields: {fields}")
    print("losses (loss.name): " + ", ".join(LOSSES) + " (auto: cross_entropy for classes, mse for values)")
    print("other member hyperparameters (grid axes, --set keys, members.csv columns):")
    for key, hp in MEMBER_HPARAMS.items():
        print(f"  {key:<21} {hp.describe()}")
    print(f"probes ([probes.<name>] turns one on; every = chunks between runs, 0 = off; probe batch: the first "
          f"probes.batch_size training examples, by default {DEFAULT_BATCH}, or all under train.full_batch):")
    for name, probe in PROBES.items():
        default = "on by default" if probe.default_on else "off unless configured"
        print(f"  {name:<14} {probe.kind}, {probe.cost}, {default}: {probe.doc}\n{'':16} options: "
              f"{options_doc(probe.options)}")
    print("tasks (task.kind):")
    for name, kind in TASK_KINDS.items():
        print(f"  {name:<11} {kind.doc}" + (f"\n  {kind.section_doc}" if kind.section_doc else ""))
    print("cohort grid axes: " + ", ".join(COHORT_AXES))
    print("member grid axes: optim.<hyperparameter> and the keys above (no compile per value)")
    print("your own components, by import path (docs/extending.md), or handed to jaxdyn.run(model=, data=, loss=, "
          "probes=):\n"
          "  [model] kind = \"pkg.mod:Class\"      a flax.linen.Module; its fields beside kind (cohort axes), its "
          "declared hparams members\n"
          "  [data] name = \"pkg.mod:function\"    returning (x, y[, x_test, y_test]); data.targets = classes | values\n"
          "  [loss] name = \"pkg.mod:function\"    (outputs [B, n_out], targets [B, ...]) -> [B]\n"
          "  [probes.\"pkg.mod:function\"]         ProbeContext -> {metric: scalar or {layer: scalar}}\n"
          "  [task] kind = \"pkg.mod:NAME\"        a jaxdyn.TaskKind building a jaxdyn.Task (init, step, evaluate)")


def _quiet_libraries() -> None:
    """Keep Orbax's and asyncio's own error logs and thread tracebacks off the terminal:
    jaxdyn reports the failure itself, in one message (JAXDYN_DEBUG=1 shows them all)."""
    for name in ("absl", "asyncio", "orbax"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        try:
            _list()
        except BrokenPipeError:  # `jaxdyn list | head`: the reader has what it wanted
            sys.stdout = open(os.devnull, "w")
        return 0
    debug = debug_enabled()
    if not debug:
        _quiet_libraries()
    hint = "" if debug else " (JAXDYN_DEBUG=1 shows the traceback)"
    try:
        if args.command == "run" and _wants_distributed(args):  # before anything uses a device
            distributed.initialize(distributed.Settings(args.coordinator, args.num_processes, args.process_id,
                                                        args.init_timeout, args.heartbeat_timeout))
        if getattr(args, "replay", None) is not None:
            if args.config is not None or args.resume is not None:
                raise jaxdyn.ConfigError("--replay builds its own study: give no CONFIG and no --resume with it")
            args.config = replay_study(*parse_target(args.replay))
        if getattr(args, "dry_run", False):
            _dry_run(args)
            return 0
        if args.command == "report":
            return _report_command(args)
        if args.command == "export":
            try:
                written = export_tensorboard(args.run_dir, args.out)
            except (FileNotFoundError, FileExistsError) as e:
                print(f"jaxdyn: error: {e}", file=sys.stderr)
                return 2
            print(f"{len(written)} TensorBoard runs in {args.out}; view with: tensorboard --logdir {args.out}")
            return 0
        results = jaxdyn.run(args.config, overrides=args.overrides, out=args.out,
                             resume=args.resume, progress=not args.no_progress)
    except (jaxdyn.ConfigError, jaxdyn.RunError) as e:
        _report(debug, f"jaxdyn: error: {e}")
        return e.exit_code
    except jaxdyn.Interrupted as e:
        _report(debug, f"jaxdyn: {e}; continue with: {distributed.resume_command(e.run_dir)}")
        return e.exit_code
    except KeyboardInterrupt:
        _report(debug, "jaxdyn: aborted by Ctrl-C; committed checkpoints are kept, and if a run folder "
                       "was made, jaxdyn run --resume RUN_DIR continues from its last one")
        return 130
    except Exception as e:  # noqa: BLE001 -- our bug: say so briefly, show the traceback on request
        if distributed.is_lost_peer(e):
            if debug:
                traceback.print_exc()
            first_line = (str(e).splitlines() or [""])[0][:300]
            run_dir = getattr(args, "resume", None) or getattr(args, "out", None) or "RUN_DIR"
            distributed.exit_lost_peer(
                f"jaxdyn: error: process {distributed.index()} of {distributed.count()}: another process of this "
                f"run stopped or cannot be reached ({first_line}); every process stops. Committed checkpoints "
                f"are kept; continue with: {distributed.resume_command(run_dir)}")
        first_line = (str(e).splitlines() or [""])[0][:300]
        _report(debug, f"jaxdyn: internal error: {type(e).__name__}: {first_line}{hint}; please report it")
        return 1
    several = distributed.count() > 1
    if not distributed.leave():  # process 0 says where the results are and writes the report
        return 0
    print(f"results in {results.run_dir}")
    if args.no_report:
        return 0
    if several:  # the report in a process of its own (distributed.leave)
        return subprocess.call([sys.executable, "-m", "jaxdyn", "report", str(results.run_dir)])
    return _write_report(results.run_dir)


def _wants_distributed(args) -> bool:
    given = (args.coordinator, args.num_processes, args.process_id, args.init_timeout, args.heartbeat_timeout)
    if any(v is not None for v in given) and not args.distributed:
        raise jaxdyn.ConfigError("--coordinator, --num-processes, --process-id and the timeouts join several "
                                 "processes: add --distributed")
    return args.distributed or os.environ.get("JAXDYN_DISTRIBUTED", "") not in ("", "0")


def _write_report(run_dir, aggregate: str = "mean_std", by=None) -> int:
    try:
        with Console(stderr=True).status("writing the report") as status:
            report = write_report(run_dir, aggregate, by, lambda title: status.update(f"report: {title}"))
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxdyn: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a read-only folder: the run's own tables are already written
        print(f"jaxdyn: error: cannot write the report in {run_dir} ({e.strerror or e}); free space or fix "
              f"the folder's permissions, then: jaxdyn report {run_dir}", file=sys.stderr)
        return 1
    print(f"report: {report.path} ({len(report.views)} views, {len(report.images)} images in {report.path.parent / 'report'})")
    return _failed_parts(report.failed, "report's", "view")


def _report_command(args) -> int:
    """One run: its own ``report.html``; several: one comparison page in ``--out``."""
    if len(args.run_dirs) == 1:
        if args.out is not None or args.labels:
            raise jaxdyn.ConfigError(f"--out and --label are for a comparison of several runs; one run's report is "
                                     f"written in it: jaxdyn report {args.run_dirs[0]}")
        return _write_report(args.run_dirs[0], args.aggregate, args.by)
    if args.out is None:
        raise jaxdyn.ConfigError(f"{len(args.run_dirs)} runs make one comparison report: give the folder to write "
                                 "it in, e.g. --out runs/compare")
    try:
        with Console(stderr=True).status("writing the comparison") as status:
            page = write_comparison(args.run_dirs, args.out, args.labels, args.aggregate, args.by,
                                    lambda title: status.update(f"comparison: {title}"))
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxdyn: error: {e}", file=sys.stderr)
        return 2
    print(f"comparison of {len(page.runs)} runs: {page.path} ({len(page.images)} images in {page.path.parent / 'figures'})")
    return _failed_parts(page.failed, "comparison's", "section")


def _failed_parts(failed: dict, whose: str, noun: str) -> int:
    """Say each part of a page that could not be drawn; the exit status: 1 if any, else 0."""
    for key, error in failed.items():
        print(f"jaxdyn: the {whose} {key} {noun} failed ({error}); the others were written; please report it",
              file=sys.stderr)
    return 1 if failed else 0


def _dry_run(args) -> None:
    table = plan(args.config, overrides=args.overrides)
    shown = table.assign(MiB_per_member=(table.bytes_per_member / 2**20).round(3),
                         GiB_peak=(table.peak_bytes / 2**30).round(2)).drop(columns=["bytes_per_member", "peak_bytes"])
    print(shown.to_string(index=False))
    cfg = load_config(args.config, args.overrides)
    if "part" in table:
        limit = cfg.train.max_members_per_program
        why = f"train.max_members_per_program = {limit}" if limit else "split to fit in memory"
        print(f"{why}: the cohorts run as {len(table)} programs one after another (a split setting: one row "
              "per part, GiB_peak each)")
    if cfg.pbt is not None:
        print(pbt_plan(cfg))
    if cfg.federated is not None:
        print(federated_plan(cfg, int(table.members.sum()), dataset_info(cfg.data)))
    if cfg.init is not None:
        i = cfg.init
        source = f"member {i.member}" if i.member >= 0 else "the member of the same id"
        step = "its newest checkpoint" if i.step < 0 else f"step {i.step}"
        carried = "parameters, model state and optimizer state" if i.keep_optimizer else "parameters and model state"
        print(f"init: every member starts from {source} of {i.run} at {step} ({carried}; its own seeds and "
              "hyperparameters)")
    if cfg.replay is not None:
        changes = ", ".join(f"{name} -> {list(values)}" for name, values in cfg.replay.hparams)
        print(f"replay: hyperparameters change after steps {list(cfg.replay.steps)}: {changes}")
    print(f"{len(table)} cohorts, {int(table.members.sum())} members ({int(table.padded.sum())} with padding), "
          f"{int(table.programs.sum())} programs to compile; nothing was trained")


def _report(debug: bool, message: str) -> None:
    if debug:
        traceback.print_exc()
    print(message, file=sys.stderr, flush=True)
