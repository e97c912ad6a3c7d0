"""``jaxdyn run | list``: a thin shell over the Python API."""

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxdyn", description=__import__("jaxdyn").__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (the default study when no CONFIG is given)")
    run.add_argument("config", nargs="?", help="study TOML file; omit for the default study")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set optim.learning_rate=0.01 "
                          "or --set grid.optim.learning_rate=[1e-3,1e-2] (repeatable)")
    run.add_argument("--out", help="run folder to create (default runs/<name>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run folder")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (the summary table is still printed)")
    sub.add_parser("list", help="list datasets, models, activations, initialisers and optimizers")
    return parser


def _list() -> None:
    from jaxdyn.config import COHORT_AXES
    from jaxdyn.data import DATASETS
    from jaxdyn.models import ACTIVATIONS, INITIALIZERS, MODELS
    from jaxdyn.optim import FAMILIES

    print("datasets:     " + ", ".join(f"{k} ({v.doc})" for k, v in DATASETS.items()))
    print("models:       " + ", ".join(MODELS))
    print("activations:  " + ", ".join(ACTIVATIONS))
    print("initialisers: " + ", ".join(INITIALIZERS))
    print("optimizers:")
    for name, fam in FAMILIES.items():
        hp = ", ".join(f"{k}={v:g}" for k, v in fam.defaults.items())
        print(f"  {name:<9} {fam.doc}; member hyperparameters: {hp}")
    print("cohort grid axes: " + ", ".join(COHORT_AXES) + "; member grid axes: optim.<hyperparameter>")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import jaxdyn

    if args.command == "list":
        _list()
        return 0
    try:
        results = jaxdyn.run(args.config, overrides=args.overrides, out=args.out,
                             resume=args.resume, progress=not args.no_progress)
    except jaxdyn.ConfigError as e:
        print(f"jaxdyn: error: {e}", file=sys.stderr)
        return 2
    except jaxdyn.Interrupted as e:
        print(f"jaxdyn: {e}; continue with: jaxdyn run --resume {e.run_dir}", file=sys.stderr)
        return e.exit_code
    print(f"results in {results.run_dir}")
    return 0
