"""``run``: a study end to end, from the config to its ``Results``.

The top layer: it joins the training side (``training``, which trains and writes the run
folder) to the side that reads a run folder back (``analysis.Results``, ``report``).
Nothing in jaxdyn imports it but the package's ``__init__``.
"""

import numpy as np

from jaxdyn import distributed, results, rundir, training
from jaxdyn.analysis import Results
from jaxdyn.data import dataset_info
from jaxdyn.errors import is_disk_full
from jaxdyn.losses import logged_loss
from jaxdyn.report import plot_curves, plot_samples
from jaxdyn.atomic import write_atomic
from jaxdyn.tables import MetricParts


def run(config=None, *, overrides=(), out=None, resume=None, progress: bool = True, summary: bool = True,
        model=None, data=None, loss=None, probes=None) -> Results:
    """Run a study end to end and return its ``Results``.

    Args:
      config: a TOML path, a dict, a ``Config``, or None for the default study.
      overrides: ``"section.key=value"`` strings applied on top of ``config``.
      model: a ``flax.linen.Module`` of your own, called as ``apply(variables, x, train=...)``
        (``hparams=`` optional) and returning ``[B, n_out]``; replaces ``[model]``.
      data: your arrays: ``(x_train, y_train[, x_test, y_test])``, a dict with keys ``x, y,
        x_test, y_test``, a ``jaxdyn.data.Dataset``, or a function returning one of these.
        ``data.targets`` says whether ``y`` holds classes (default) or values.
      loss: a per-example loss ``(outputs [B, n_out], targets [B, ...]) -> [B]``.
      probes: ``{name: fn}``, each ``fn`` a pure function of a ``ProbeContext`` returning
        ``{metric: scalar or {layer: scalar}}``; ``[probes.<name>] every`` sets its cadence.
      Objects with an import path are recorded by it in ``config.toml``; one defined in
      ``__main__`` or a notebook runs, and a resume in another process needs it again.
      out: the run folder to create (must not exist or be empty); default
        ``runs/<study name>-<time>``.
      resume: an existing run folder to continue. Its saved config is used; a
        ``config``/``overrides`` that differ from it are refused with a diff.
      progress: show a progress bar.
      summary: print the table of final test accuracy per setting at the end.

    Raises:
      ConfigError: bad config, data or run folder, before anything compiles.
      RunInUse: another process holds the run folder.
      RunError: the disk filled up, or no checkpoint of a resumed run reads back.
      stopping.Interrupted: SIGTERM or Ctrl-C arrived; the run was checkpointed and
        can be resumed (``e.run_dir``).
    """
    trained = training.train(config, overrides=overrides, out=out, resume=resume, progress=progress,
                          model=model, data=data, loss=loss, probes=probes)
    if not distributed.is_writer():  # with several processes, process 0 plots and prints
        return Results(trained.run_dir, trained.members, trained.metrics)
    try:
        _plot_run(trained)
    except Exception as e:  # matplotlib reports a full disk as whatever its writer raised
        if is_disk_full(e):
            raise rundir.disk_full_error(trained.run_dir) from e
        raise
    if summary:
        results.print_summary(trained.members, metrics=trained.metrics,
                              metric=trained.cohorts[0].config.study.headline)
    return Results(trained.run_dir, trained.members, trained.metrics)


def _plot_run(trained: training.Trained) -> None:
    """``curves.png``, and ``samples.png`` for a task that generates (a GAN): what each member
    makes, over time."""
    run_dir = trained.run_dir
    cfg = trained.cohorts[0].config
    label = logged_loss(cfg.loss.name, dataset_info(cfg.data).regression) if cfg.task.kind == "supervised" else ""
    write_atomic(run_dir / "curves.png", lambda p: plot_curves(trained.members, trained.metrics, p, label))
    samples = MetricParts(run_dir, "samples_").read()
    if len(samples):
        info = dataset_info(trained.cohorts[0].config.data)
        centers, std = (None, None) if info.modes is None else (np.asarray(info.modes[0]), float(info.modes[1]))
        plot_samples(trained.members, samples, info.input_shape, run_dir / "samples.png", centers, std)
