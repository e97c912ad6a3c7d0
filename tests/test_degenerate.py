"""Degenerate configurations refused before any folder or compile, and a probe batch that
measures the loss training follows (the whole set under full batch) against a closed form."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxdyn
from jaxdyn.cli import main
from jaxdyn.config import load_config
from jaxdyn.data import load_dataset
from jaxdyn.losses import logged_loss
from jaxdyn.report import plot_curves
from jaxdyn.population import make_mesh
from jaxdyn.study import check_traced, expand, plan

QUICK = ["study.seeds=1", "train.steps=20", "train.chunk_steps=10", "train.log_every=10"]
# 8x8 digits through three stride-2 convs: the third conv's map is 1x1.
DIGITS_CNN = ["data.name=digits", "model.kind=cnn", "model.norm=batch", "model.channels=[2, 2, 2]",
              "model.kernels=[3, 3, 3]", "model.strides=[2, 2, 2]", "model.padding=same"]


@pytest.mark.parametrize("overrides, message", [
    (["model.norm=batch", "train.batch_size=1"],
     "BatchNorm layer 'norm_0' gets input [1, 100] in training (train.batch_size = 1): one value per channel"),
    ([*DIGITS_CNN, "train.batch_size=1"], "BatchNorm layer 'conv_norm_2' gets input [1, 1, 1, 2] in training"),
    (["model.norm=batch", "probes.batch_size=1", "probes.hessian.every=1"],
     "probes.batch_size = 1: the probes see BatchNorm layer 'norm_0' with input [1, 100], one value per channel"),
    (["model.kind=linear", "data.name=digits", "probes.hessian.k=651", "probes.hessian.iters=700"],
     "probes.hessian.k = 651: the model has only 650 parameters"),
    (["model.kind=linear", "data.name=digits", "probes.hessian.iters=651"],
     "probes.hessian.iters = 651: the model has only 650 parameters"),
    (["probes.batch_size=4001"], "probes.batch_size = 4001 is larger than the training set (4000 examples)"),
    (["data.n_train=3", "train.batch_size=3", "probes.cka.every=1", "probes.cka.debiased=true"],
     "probes.cka needs probes.batch_size >= 4 (debiased = true: the unbiased HSIC divides by (n - 1)(n - 2) and "
     "n(n - 3), or set it false); it is 3 (the whole training set of 3): raise it, or use more training examples"),
])
def test_degenerate_configs_are_refused_before_any_folder(overrides, message, tmp_path, capsys):
    with pytest.raises(jaxdyn.ConfigError) as err:
        plan(None, overrides=overrides)
    assert message in str(err.value)
    assert main(["run", "--out", str(tmp_path / "run"), *[a for o in overrides for a in ("--set", o)]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _traced_checks(overrides) -> None:
    """What refuses the configs above (the traced shape checks), without compiling anything."""
    mesh = make_mesh()
    for cohort in expand(load_config(None, overrides)):
        task = cohort.task()
        check_traced(cohort, task, cohort.probes(task, mesh))


def test_the_same_configs_one_step_from_degenerate_pass():
    # Two values per channel: the batch statistics exist (the MLP, and the CNN's 1x1 map, at batch 2).
    _traced_checks(["model.norm=batch", "train.batch_size=2"])
    _traced_checks([*DIGITS_CNN, "train.batch_size=2"])
    _traced_checks(["model.kind=linear", "data.name=digits", "probes.hessian.k=650", "probes.hessian.iters=650"])


def test_full_batch_probes_the_whole_training_set(tmp_path):
    """Under full batch the sharpness is the top eigenvalue of the whole set's Hessian. For a
    linear model under ½·mean squared error it is the closed form XᵀX/n with X the inputs and a
    column of ones (the bias), whatever the weights; the default probe batch of the first 256
    would give another number."""
    overrides = [*QUICK, "data.name=teacher", "data.n_train=300", "model.kind=linear", "train.full_batch=true",
                 "optim.name=sgd", "optim.learning_rate=0.05", "probes.hessian.every=1",
                 "probes.hessian.preconditioned=false"]
    [cohort] = expand(load_config(None, overrides))
    assert cohort.probe_batch_size() == 300
    res = jaxdyn.run(None, overrides=overrides, out=tmp_path / "run", progress=False, summary=False)
    x = np.asarray(load_dataset(cohort.config.data.source()).x_train, np.float64)
    assert x.shape[0] == 300
    ones = np.c_[x, np.ones(len(x))]
    whole, first = (np.linalg.eigvalsh(a.T @ a / len(a))[-1] for a in (ones, ones[:256]))
    sharpness = res.frame("sharpness").value.to_numpy()
    assert len(sharpness) == 3  # steps 0, 10 and 20: the same curvature at every weight
    np.testing.assert_allclose(sharpness, whole, rtol=1e-4)
    assert abs(first - whole) > 1e-2 * whole  # the subset's curvature is measurably another number
    [half] = expand(load_config(None, [*overrides, "probes.batch_size=150"]))
    assert half.probe_batch_size() == 150  # a smaller probe batch given is kept


@pytest.mark.parametrize("name, regression, label", [
    ("auto", False, "cross-entropy"), ("cross_entropy", False, "cross-entropy"),
    ("mse", False, "cross-entropy; objective mse"), ("bce", False, "cross-entropy; objective bce"),
    ("auto", True, "mean squared error"), ("mse", True, "mean squared error"),
    ("pkg.mod:hinge", False, "cross-entropy; objective pkg.mod:hinge")])
def test_loss_curves_say_what_they_measure(name, regression, label):
    """The logged loss is the plain cross-entropy (classes) or squared error (values) whatever
    the objective, so runs compare; a curve of it names the objective where that is another."""
    assert logged_loss(name, regression) == label
    members = pd.DataFrame({"member": [0], "cohort": [0]})
    metrics = pd.DataFrame({"member": [0, 0], "step": [10, 10], "metric": ["train_loss", "test_loss"],
                            "value": [0.5, 0.6], "layer": ["", ""]})
    fig = plot_curves(members, metrics, Path(os.devnull), label)
    assert [ax.get_title() for ax in fig.axes[:2]] == [f"Training loss (window mean) ({label})\ntrain_loss",
                                                        f"Test loss ({label})\ntest_loss"]
