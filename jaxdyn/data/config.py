"""The ``[data]`` section: which dataset, its generator's settings, and augmentation.

One dataclass for every dataset. A field that only some datasets read (``seq_len``,
``path``, ...) is an error on any other dataset when it differs from its default,
so that a setting never silently does nothing (``validation.check_data_fields``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"
    n_train: int = 0  # the first N training examples; 0 = all
    standardize: bool = False  # z-score each input feature with training-set statistics
    label_noise: float = 0.0  # member hyperparameter: fraction of training labels replaced
    # Generated datasets
    seed: int = 0  # adding, copy, teacher, ring, grid, modular, parity, and the split of a user file: fixes the data
    seq_len: int = 50  # adding: sequence length T; copy: the delay between the symbols and the recall
    input_dim: int = 20  # teacher: dimension of the Gaussian inputs
    teacher_width: int = 64  # teacher: hidden units per layer
    teacher_depth: int = 2  # teacher: hidden layers
    teacher_noise: float = 0.0  # teacher: std of Gaussian noise on the training targets
    # Algorithmic datasets
    p: int = 97  # modular: the modulus, p classes; any p >= 2 (div: a prime), the literature uses 97
    op: str = "add"  # modular: "add", "sub", "mul" or "div" (b in 1..p-1): the label is (a op b) mod p
    train_fraction: float = 0.5  # modular: the fraction of the pairs that trains, the rest tests; split by data.seed
    # modular: "tokens" ([a, b, =] as ids, vocab p + 1) or "onehot"; parity: "signs" (bits as -1/+1) or
    # "tokens" (ids 0/1); "" is the dataset's default, the first named
    encoding: str = ""
    n: int = 30  # parity: random bits per example
    k: int = 3  # parity: the label is the parity of the first k bits
    # parity, mnist1d: training examples generated; 0 = the dataset's default (parity 10,000, mnist1d 4,000)
    n_examples: int = 0
    # parity: a fresh batch of new examples each step, drawn on the device from the member's data seed
    # (online SGD); the fixed training set of n_examples then only measures train_loss/accuracy and feeds probes
    fresh: bool = False
    labels: str = "classes"  # parity: "classes" (0/1, two classes) or "signs" (-1/+1, regression targets)
    # The user's own files
    path: str = ""  # npz: the .npz file; idx: an images file, or a folder of the four MNIST files
    test_fraction: float = 0.2  # npz/idx without a test split: the fraction held out, fixed by data.seed
    targets: str = "classes"  # npz and your own arrays: "classes" (integer labels) or "values" (regression targets)
    # Augmentation of training batches, on the device (never in evaluation)
    shift: int = 0  # sequences: roll each example by a random -shift..shift positions
    noise_std: float = 0.0  # member hyperparameter; sequences: add Gaussian noise of this std
    crop: int = 0  # images: zero-pad by this many pixels, then crop back at a random offset
    flip: bool = False  # images: mirror left-right with probability 1/2

    def source(self) -> "DataConfig":
        """This config without its augmentation: what the arrays depend on (a cache key)."""
        return DataConfig(**{**self.__dict__, **{k: getattr(DataConfig, k) for k in AUGMENT_FIELDS}})


# Fields every dataset reads; the others belong to the datasets that declare them.
AUGMENT_FIELDS = ("shift", "noise_std", "crop", "flip")
COMMON_FIELDS = ("name", "n_train", "standardize", "label_noise", *AUGMENT_FIELDS)
