"""Generated datasets: the adding and copy problems, a random teacher, and 2D Gaussian mixtures.

Each is a pure function of its ``[data]`` fields: numpy's PCG64 generator seeded
with ``data.seed`` makes the same arrays in every process and on every machine, so
nothing is cached and the train/test split is fixed by construction (the test set
is drawn after the training set from the same stream).
"""

import math

import numpy as np

from jaxdyn.data.dataset import Dataset, DatasetInfo

# ---------------------------------------------------------------------------- adding

ADDING_SIZES = (10_000, 1_000)


def adding_info(cfg) -> DatasetInfo:
    return DatasetInfo(*ADDING_SIZES, input_shape=(cfg.seq_len, 2), n_classes=0)


def load_adding(cfg) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997), in the form of Le, Jaitly &
    Hinton (2015) and Arjovsky, Shah & Bengio (2016).

    An input is ``[T, 2]``: channel 0 holds T values drawn from U(0, 1), channel 1
    marks two positions with 1 (one uniformly in the first half, ``t < T // 2``, one
    in the second) and is 0 elsewhere. The target is the sum of the two marked
    values, a float32 scalar. Predicting the mean, 1, scores MSE = Var = 2/12 ≈ 0.167,
    the baseline a model must beat to have learned anything.
    """
    rng = np.random.default_rng(cfg.seed)
    return Dataset(*_adding(rng, ADDING_SIZES[0], cfg.seq_len), *_adding(rng, ADDING_SIZES[1], cfg.seq_len))


def _adding(rng, n: int, t: int):
    values = rng.uniform(0.0, 1.0, (n, t)).astype(np.float32)
    half = t // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, t, n)
    marks = np.zeros((n, t), np.float32)
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = np.stack([values, marks], axis=-1)
    y = values[rows, first] + values[rows, second]
    return x, y.astype(np.float32)


# ------------------------------------------------------------------------------ copy

COPY_SIZES = (5_000, 1_000)
COPY_SYMBOLS = 8  # symbol classes 0..7; input channel 8 is the blank, 9 the recall marker
COPY_LENGTH = 10  # symbols to remember


def copy_info(cfg) -> DatasetInfo:
    return DatasetInfo(*COPY_SIZES, input_shape=(COPY_LENGTH + cfg.seq_len, COPY_SYMBOLS + 2),
                       n_classes=COPY_SYMBOLS, target_shape=(COPY_LENGTH,))


def load_copy(cfg) -> Dataset:
    """The copy (memory) task of Arjovsky, Shah & Bengio (2016), read out as one vector.

    An input is ``[10 + T, 10]`` one-hot steps (T = ``data.seq_len``, the delay):
    10 symbols drawn uniformly from 8 classes, then T - 1 blanks (class 8), then the
    recall marker (class 9). The target is the 10 symbols, int32 ``[10]``, which the
    model outputs all at once from what it holds at the end (``10 × 8`` logits), as
    opposed to the paper's symbol-by-symbol output over 10 more steps. Guessing
    scores accuracy 1/8 and cross-entropy ln 8 ≈ 2.08.
    """
    rng = np.random.default_rng(cfg.seed)
    return Dataset(*_copy(rng, COPY_SIZES[0], cfg.seq_len), *_copy(rng, COPY_SIZES[1], cfg.seq_len))


def _copy(rng, n: int, delay: int):
    symbols = rng.integers(0, COPY_SYMBOLS, (n, COPY_LENGTH))
    tokens = np.full((n, COPY_LENGTH + delay), COPY_SYMBOLS, np.int64)
    tokens[:, :COPY_LENGTH] = symbols
    tokens[:, -1] = COPY_SYMBOLS + 1
    x = np.eye(COPY_SYMBOLS + 2, dtype=np.float32)[tokens]
    return x, symbols.astype(np.int32)


# --------------------------------------------------------------------------- teacher

TEACHER_SIZES = (4_000, 1_000)


def teacher_info(cfg) -> DatasetInfo:
    return DatasetInfo(*TEACHER_SIZES, input_shape=(cfg.input_dim,), n_classes=0)


def load_teacher(cfg) -> Dataset:
    """Teacher-student regression: a random tanh MLP labels Gaussian inputs.

    Inputs are ``x ~ N(0, I)`` of ``data.input_dim`` dimensions. The teacher has
    ``data.teacher_depth`` hidden tanh layers of ``data.teacher_width`` units, weights
    ``N(0, 1 / fan_in)`` and zero biases, and one linear output, all drawn from
    ``data.seed``. Its output is scaled so that the clean training targets have std 1
    (so predicting their mean scores MSE ≈ 1). Training targets carry Gaussian noise of
    std ``data.teacher_noise``; test targets are the teacher's clean outputs, so the
    test MSE measures how well a student recovered the teacher itself.
    """
    rng = np.random.default_rng(cfg.seed)
    sizes = [cfg.input_dim] + [cfg.teacher_width] * cfg.teacher_depth + [1]
    weights = [rng.normal(0.0, 1.0 / math.sqrt(a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]

    def teacher(x):
        for w in weights[:-1]:
            x = np.tanh(x @ w)
        return (x @ weights[-1])[:, 0]

    x_train = rng.normal(size=(TEACHER_SIZES[0], cfg.input_dim))
    x_test = rng.normal(size=(TEACHER_SIZES[1], cfg.input_dim))
    f_train, f_test = teacher(x_train), teacher(x_test)
    scale = 1.0 / max(float(f_train.std()), 1e-12)
    y_train = scale * f_train + cfg.teacher_noise * rng.normal(size=TEACHER_SIZES[0])
    return Dataset(x_train.astype(np.float32), y_train.astype(np.float32),
                   x_test.astype(np.float32), (scale * f_test).astype(np.float32))


# -------------------------------------------------------------------------- mixtures

MIXTURE_SIZES = (100_000, 2_500)


def mixture(name: str) -> tuple[np.ndarray, float]:
    """``(centers [M, 2], std)`` of the ``ring`` or ``grid`` mixture.

    The sizes are those of the mode-collapse benchmarks as PacGAN (Lin et al. 2018,
    §5.1, after VEEGAN, Srivastava et al. 2017) set them:

    - ``ring``: 8 modes at ``(cos 2πk/8, sin 2πk/8)``, radius 1, std 0.01.
    - ``grid``: 25 modes at ``{-4, -2, 0, 2, 4}²``, std 0.05.

    Unrolled GAN (Metz et al. 2017) used a ring of radius 2 with std 0.02: the same
    shape, twice the scale. PacGAN scores 2,500 generated samples; a sample is high
    quality within 3 std of its nearest mode.
    """
    if name == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        return np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.01
    if name == "grid":
        ticks = np.arange(-4.0, 5.0, 2.0)
        return np.array([(a, b) for a in ticks for b in ticks]), 0.05
    raise KeyError(name)


def mixture_info(name: str):
    def info(cfg) -> DatasetInfo:
        centers, std = mixture(name)
        return DatasetInfo(*MIXTURE_SIZES, input_shape=(2,), n_classes=len(centers),
                           modes=(tuple(map(tuple, centers.tolist())), float(std)))
    return info


def load_mixture(name: str):
    def load(cfg) -> Dataset:
        """Points of the mixture, each mode equally likely; the label is its mode's index."""
        centers, std = mixture(name)
        rng = np.random.default_rng(cfg.seed)
        arrays = []
        for n in MIXTURE_SIZES:
            modes = rng.integers(0, len(centers), n)
            points = centers[modes] + std * rng.normal(size=(n, 2))
            arrays += [points.astype(np.float32), modes.astype(np.int32)]
        return Dataset(*arrays)
    return load
