"""The algorithmic datasets: modular arithmetic (grokking) and sparse parity (hidden progress).

Every expectation is computed here directly from the definitions (pairs, inverses by
``pow(b, -1, p)``, bit counts), never by calling jaxdyn's own generator a second way.
"""

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import jaxdyn
from jaxdyn.config import load_config
from jaxdyn.data import DATASETS, dataset_info, load_dataset
from jaxdyn.study import expand

LABEL = {"add": lambda a, b, p: (a + b) % p,
         "sub": lambda a, b, p: (a - b) % p,
         "mul": lambda a, b, p: (a * b) % p,
         "div": lambda a, b, p: (a * pow(b, -1, p)) % p}


def pairs_of(x, p, encoding):
    """``[(a, b), ...]`` read back from inputs, checking that each row is a well-formed encoding."""
    if encoding == "tokens":
        assert x.shape[1:] == (3,) and np.array_equal(x, np.round(x)) and (x[:, 2] == p).all()
        assert (0 <= x[:, :2]).all() and (x[:, :2] < p).all()
        return [(int(a), int(b)) for a, b in x[:, :2]]
    assert x.shape[1:] == (2 * p,) and set(np.unique(x)) <= {0.0, 1.0}
    assert (x[:, :p].sum(1) == 1).all() and (x[:, p:].sum(1) == 1).all()  # one hot in each half
    return [(int(a), int(b)) for a, b in zip(x[:, :p].argmax(1), x[:, p:].argmax(1))]


def test_registry_names_the_fields():
    assert DATASETS["modular"].fields == ("p", "op", "train_fraction", "encoding", "seed")
    assert DATASETS["parity"].fields == ("n", "k", "n_examples", "fresh", "encoding", "labels", "seed")
    assert dataset_info("mnist1d").vocab == 0 and dataset_info("adding").vocab == 0


@pytest.mark.parametrize("op, p, fraction", [("add", 12, 0.5), ("sub", 12, 0.3), ("mul", 13, 0.7),
                                             ("div", 13, 0.5), ("div", 97, 0.4), ("add", 2, 0.1)])
def test_modular_deals_every_pair_once_with_its_label(op, p, fraction):
    ds = load_dataset("modular", p=p, op=op, train_fraction=fraction)
    info = dataset_info("modular", p=p, op=op, train_fraction=fraction)
    want = [(a, b) for a in range(p) for b in range(1 if op == "div" else 0, p)]
    assert len(want) == (p * (p - 1) if op == "div" else p * p)
    train, test = pairs_of(ds.x_train, p, "tokens"), pairs_of(ds.x_test, p, "tokens")
    assert Counter(train + test) == Counter(want)  # each pair exactly once across the two sets
    assert len(train) == info.n_train and len(test) == info.n_test and len(train) >= 1 and len(test) >= 1
    assert abs(len(train) - fraction * len(want)) <= 0.5 or p == 2  # p = 2: 4 pairs, at least one trains
    assert (info.input_shape, info.n_classes, info.vocab, info.target_shape) == ((3,), p, p + 1, ())
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    for pairs, y in ((train, ds.y_train), (test, ds.y_test)):
        assert [int(v) for v in y] == [LABEL[op](a, b, p) for a, b in pairs]


def test_modular_onehot_decodes_to_the_same_split():
    p = 11
    tokens = load_dataset("modular", p=p, op="mul", seed=3)
    onehot = load_dataset("modular", p=p, op="mul", seed=3, encoding="onehot")
    info = dataset_info("modular", p=p, encoding="onehot")
    assert (info.input_shape, info.vocab, info.n_classes) == ((2 * p,), 0, p)
    for split in ("train", "test"):
        x_tok, x_hot = getattr(tokens, f"x_{split}"), getattr(onehot, f"x_{split}")
        pairs = pairs_of(x_hot, p, "onehot")
        assert pairs == pairs_of(x_tok, p, "tokens")  # the encoding changes the inputs, not the split
        assert [int(v) for v in getattr(onehot, f"y_{split}")] == [(a * b) % p for a, b in pairs]


def test_modular_split_is_fixed_by_the_seed():
    def train_pairs(seed, fraction=0.5):
        return pairs_of(load_dataset("modular", p=17, seed=seed, train_fraction=fraction).x_train, 17, "tokens")

    assert train_pairs(0) == train_pairs(0)
    assert set(train_pairs(0)) != set(train_pairs(1))  # another seed, another split
    assert train_pairs(0, 0.3) == train_pairs(0, 0.6)[:len(train_pairs(0, 0.3))]  # nested in the fraction
    # The training order is the permutation's, not the pairs' (data.n_train keeps a random subset).
    assert train_pairs(0) != sorted(train_pairs(0))


@pytest.mark.parametrize("encoding", ["signs", "tokens"])
@pytest.mark.parametrize("labels", ["classes", "signs"])
def test_parity_labels_are_the_parity_of_the_first_k_bits(encoding, labels):
    n_bits, k, n = 12, 3, 2000
    ds = load_dataset("parity", n=n_bits, k=k, n_examples=n, encoding=encoding, labels=labels, seed=5)
    info = dataset_info("parity", n=n_bits, k=k, n_examples=n, encoding=encoding, labels=labels)
    assert (info.n_train, info.n_test, info.input_shape) == (n, 1000, (n_bits,))
    assert info.n_classes == (2 if labels == "classes" else 0) and info.vocab == (2 if encoding == "tokens" else 0)
    assert ds.x_train.shape == (n, n_bits) and ds.x_test.shape == (1000, n_bits) and ds.x_train.dtype == np.float32
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        if encoding == "tokens":
            assert set(np.unique(x)) == {0.0, 1.0}
            bits = [[int(v) for v in row] for row in x]
        else:
            assert set(np.unique(x)) == {-1.0, 1.0}
            bits = [[0 if v == 1 else 1 for v in row] for row in x]  # the sign (-1)^bit
        parity = [sum(row[:k]) % 2 for row in bits]
        if labels == "classes":
            assert y.dtype == np.int32 and [int(v) for v in y] == parity
        else:
            assert y.dtype == np.float32 and [float(v) for v in y] == [(-1.0) ** q for q in parity]
            if encoding == "signs":  # the product of the first k signs
                np.testing.assert_array_equal(y, np.prod(x[:, :k], axis=1))
        ones = np.mean(bits)  # fair bits: within 5 standard errors of 1/2
        assert abs(ones - 0.5) < 5 * np.sqrt(0.25 / np.size(bits))
    assert 0.4 < np.mean([sum(r[:k]) % 2 for r in bits]) < 0.6  # both labels are common


def test_parity_data_is_fixed_by_the_seed_and_the_test_set_by_the_seed_alone():
    a = load_dataset("parity", n=10, k=2, n_examples=500, seed=1)
    again = load_dataset("parity", n=10, k=2, n_examples=500, seed=1)
    other = load_dataset("parity", n=10, k=2, n_examples=500, seed=2)
    more = load_dataset("parity", n=10, k=4, n_examples=800, seed=1)
    for got, want in zip(again, a):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(a.x_train, other.x_train) and not np.array_equal(a.x_test, other.x_test)
    np.testing.assert_array_equal(more.x_test, a.x_test)  # one test set across n_examples and k


def test_the_same_data_in_another_process():
    code = ("import hashlib, numpy as np; from jaxdyn.data import load_dataset; "
            "print(*(hashlib.sha256(b''.join(np.ascontiguousarray(a).tobytes() for a in load_dataset(n, **kw)))"
            ".hexdigest() for n, kw in (('modular', {'p': 23, 'op': 'div'}), ('parity', {'n': 9}))))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    import hashlib

    here = [hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in load_dataset(n, **kw))).hexdigest()
            for n, kw in (("modular", {"p": 23, "op": "div"}), ("parity", {"n": 9}))]
    assert other == here


def test_info_comes_from_the_config_alone(monkeypatch):
    # Neither set could be generated here (10^9 examples): the info must not try.
    info = dataset_info("modular", p=40_000, encoding="onehot")
    assert (info.n_train + info.n_test, info.input_shape, info.n_classes) == (40_000**2, (80_000,), 40_000)
    info = dataset_info("parity", n=1000, k=7, n_examples=10**9)
    assert (info.n_train, info.n_test, info.input_shape) == (10**9, 1000, (1000,))

    def no_generator(*args, **kwargs):
        raise AssertionError("dataset_info drew random numbers")

    monkeypatch.setattr(np.random, "default_rng", no_generator)
    monkeypatch.setattr(np.random, "SeedSequence", no_generator)
    dataset_info("modular", op="div")
    dataset_info("parity", labels="signs")


def _refused(config) -> str:
    with pytest.raises(jaxdyn.ConfigError) as err:
        expand(load_config(config))
    return str(err.value)


@pytest.mark.parametrize("data, field", [
    ({"name": "modular", "op": "div", "p": 12}, "data.p = 12"),
    ({"name": "modular", "op": "div", "p": 1}, "data.p = 1"),
    ({"name": "modular", "p": 1}, "data.p = 1"),
    ({"name": "modular", "op": "pow"}, "data.op = 'pow'"),
    ({"name": "modular", "train_fraction": 0.0}, "data.train_fraction = 0.0"),
    ({"name": "modular", "train_fraction": 1.0}, "data.train_fraction = 1.0"),
    ({"name": "modular", "encoding": "signs"}, "data.encoding = 'signs'"),
    ({"name": "parity", "encoding": "onehot"}, "data.encoding = 'onehot'"),
    ({"name": "parity", "labels": "values"}, "data.labels = 'values'"),
    ({"name": "parity", "k": 0}, "data.k = 0"),
    ({"name": "parity", "k": 31}, "data.k = 31"),
    ({"name": "parity", "n": 2, "k": 3}, "data.k = 3"),
    ({"name": "parity", "n": 0}, "data.n = 0"),
    ({"name": "parity", "n_examples": -1}, "data.n_examples = -1"),
    ({"name": "mnist1d", "n_examples": -1}, "data.n_examples = -1"),
    ({"name": "modular", "standardize": True}, "data.standardize = true"),
    ({"name": "modular", "noise_std": 0.1}, "data.noise_std = 0.1"),
    ({"name": "parity", "encoding": "tokens", "shift": 1}, "data.shift = 1"),
    ({"name": "parity", "encoding": "tokens", "standardize": True}, "data.standardize = true"),
    ({"name": "mnist1d", "p": 11}, "data.p = 11 is not read by data.name = 'mnist1d' (it is for modular)"),
    ({"name": "modular", "labels": "signs"}, "data.labels = 'signs' is not read by data.name = 'modular'"),
    ({"name": "adding", "encoding": "tokens"}, "(it is for modular, parity)"),
    ({"name": "mnist1d", "fresh": True}, "data.fresh = True is not read by data.name = 'mnist1d' (it is for parity)"),
    ({"name": "parity", "fresh": True, "standardize": True}, "data.standardize = true"),
])
def test_bad_values_are_refused_naming_the_field(data, field):
    message = _refused({"data": data})
    assert message.startswith(field) or field in message, message
    if field == "data.p = 12":
        assert "prime" in message


def test_member_input_noise_on_tokens_is_refused_and_real_valued_encodings_take_it():
    assert "data.noise_std = 0.2" in _refused({"data": {"name": "modular"}, "grid": {"data.noise_std": [0.0, 0.2]}})
    assert "data.label_noise" in _refused({"data": {"name": "parity", "labels": "signs", "label_noise": 0.1}})
    for data in ({"name": "modular", "encoding": "onehot", "standardize": True, "noise_std": 0.1},
                 {"name": "parity", "standardize": True, "shift": 1},
                 {"name": "modular", "label_noise": 0.2}):
        expand(load_config({"data": data}))  # no error


def test_fresh_parity_is_refused_where_it_cannot_work():
    message = _refused({"data": {"name": "parity", "fresh": True}, "train": {"full_batch": True}})
    assert "data.fresh = true" in message and "train.full_batch = true" in message, message
    message = _refused({"task": {"kind": "gan"}, "data": {"name": "parity", "fresh": True}})
    assert message.startswith("data.fresh = true: a GAN"), message


@pytest.mark.parametrize("encoding, labels", [("signs", "classes"), ("tokens", "signs")])
def test_fresh_parity_batches_are_new_bit_strings_labelled_by_their_parity(encoding, labels):
    import jax
    cfg = jaxdyn.data.data_config("parity", n=12, k=5, fresh=True, encoding=encoding, labels=labels)
    sample = jax.jit(DATASETS["parity"].sample(cfg), static_argnums=1)
    x, y = map(np.asarray, sample(jax.random.PRNGKey(3), 4096))
    assert x.shape == (4096, 12) and x.dtype == np.float32
    bits = x.astype(int) if encoding == "tokens" else (1 - x.astype(int)) // 2
    assert set(np.unique(bits)) == {0, 1} and abs(bits.mean() - 0.5) < 0.02  # fair bits
    parity = bits[:, :5].sum(axis=1) % 2
    assert np.array_equal(y, parity if labels == "classes" else 1 - 2 * parity)
    x2, _ = sample(jax.random.PRNGKey(4), 4096)
    assert (np.asarray(x2) != x).any(axis=1).mean() > 0.99  # another key, other examples


def test_a_fresh_parity_member_trains_on_the_batch_its_data_key_draws(tmp_path):
    """With learning rate 0 the weights stay at their init, so step t's logged batch loss is the
    initial model's cross-entropy on ``sample(fold_in(fold_in(data key, BATCH), t))``."""
    import jax
    import optax
    from jaxdyn.streams import Stream, key
    data = {"name": "parity", "n": 8, "k": 2, "fresh": True}
    train = {"steps": 3, "chunk_steps": 3, "log_every": 1, "eval_every": 3, "batch_size": 16}
    run = tmp_path / "fresh"
    res = jaxdyn.run({"data": data, "model": {"hidden": [16]}, "optim": {"name": "sgd", "learning_rate": 0.0},
                      "train": train}, out=run, progress=False, summary=False)
    member = jaxdyn.extract_member(run, 0)
    sample = DATASETS["parity"].sample(jaxdyn.data.data_config("parity", n=8, k=2, fresh=True))
    logged = res.frame("train_loss").set_index("step")["value"]
    for step in (0, 1):
        x, y = sample(key(jax.random.PRNGKey(int(res.members.data_seed[0])), Stream.BATCH, step), 16)
        out = member.model.apply(member.variables, x, train=False, hparams=member.hparams)
        want = float(optax.softmax_cross_entropy_with_integer_labels(out, y).mean())
        assert logged[step + 1] == pytest.approx(want, rel=1e-5)
    assert logged[1] != pytest.approx(logged[2], rel=1e-3)  # two steps, two batches


def test_tiny_runs_end_to_end(tmp_path):
    train = {"steps": 200, "batch_size": 32, "chunk_steps": 200, "log_every": 100}
    runs = {"modular": {"name": "modular", "p": 11, "encoding": "onehot", "label_noise": 0.1},
            "parity": {"name": "parity", "n": 8, "k": 2},
            "fresh": {"name": "parity", "n": 8, "k": 2, "fresh": True, "label_noise": 0.1}}
    for name, data in runs.items():
        cfg = {"study": {"seeds": 2}, "data": data, "model": {"hidden": [16]}, "train": train}
        res = jaxdyn.run(cfg, out=tmp_path / name, progress=False, summary=False)
        acc = res.members.final_test_accuracy
        assert len(acc) == 2 and ((0.0 <= acc) & (acc <= 1.0)).all(), acc
