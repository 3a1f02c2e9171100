"""The synthetic tasks of rnnlab.data.synthetic: labels and targets checked against a plain re-derivation, lengths in
range, padding, determinism per (seed, split, epoch, batch), the trainer's data protocol, the adding problem's
0.167 baseline measured on many samples, and bad arguments."""
from __future__ import annotations

import pytest
import torch

from rnnlab.data.synthetic import IGNORE, Adding, Copy, Parity, SeqBatch


def test_parity_labels_lengths_and_padding():
    data = Parity(128, 4, min_len=3, max_len=11, seed=5)
    seen_lengths = set()
    for batch in data.batches(0):
        assert isinstance(batch, SeqBatch)
        x, lengths, y = batch
        assert x.dtype == torch.long and lengths.dtype == torch.long and y.dtype == torch.long
        assert x.shape == (128, int(lengths.max())) and y.shape == (128,)
        assert int(lengths.min()) >= 3 and int(lengths.max()) <= 11
        for row, n, label in zip(x, lengths.tolist(), y.tolist()):
            s = Parity.decode(row, n)
            assert len(s) == n and set(s) <= {"a", "b"}
            assert label == (1 if s.count("b") % 2 == 0 else 0) == Parity.label(s)
            assert row[n:].eq(0).all()  # padding
            seen_lengths.add(n)
    assert seen_lengths == set(range(3, 12))  # every length occurs, none outside
    # both classes occur in roughly equal numbers (each symbol is a fair coin)
    ys = torch.cat([b.y for b in data.batches(0)]).float()
    assert 0.4 < float(ys.mean()) < 0.6


def test_parity_encode_decode_label():
    ids = Parity.encode("abba")
    assert ids.tolist() == [0, 1, 1, 0] and Parity.decode(ids) == "abba"
    assert Parity.label("abba") == 1 and Parity.label("ab") == 0 and Parity.label("aaa") == 1
    with pytest.raises(ValueError, match="over 'a' and 'b'; got 'abc'"):
        Parity.encode("abc")


def test_parity_fixed_length():
    x, lengths, _ = Parity(16, 1, min_len=40, max_len=40).batch(0, 0)
    assert x.shape == (16, 40) and lengths.eq(40).all()


def test_adding_structure_and_targets():
    T = 9
    x, lengths, y = Adding(256, 1, length=T, seed=1).batch(0, 0)
    assert x.shape == (256, T, 2) and x.dtype == torch.float32 and y.shape == (256, 1)
    assert lengths.eq(T).all()
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert markers.sum(1).eq(2).all()  # exactly two markers
    assert markers[:, : T // 2].sum(1).eq(1).all()  # one in the first half [0, 4)
    assert markers[:, T // 2:].sum(1).eq(1).all()  # one in the second half [4, 9)
    for v, m, target in zip(values, markers, y[:, 0]):
        assert torch.isclose(v[m.bool()].sum(), target)


def test_adding_baseline_mse_is_one_sixth():
    # y = U1 + U2 has mean 1 and variance 1/6; (y - 1)^2 has sd ~0.197, so over 131072 samples its mean is within
    # ~0.0006 of 1/6 (one standard error); the bound below is ~5 standard errors.
    data = Adding(4096, 32, length=4, seed=123)
    y = torch.cat([b.y for b in data.batches(0)])
    assert y.numel() == 131072
    mse = float(((y.double() - 1.0) ** 2).mean())
    assert abs(mse - Adding.BASELINE_MSE) < 0.003, mse
    assert abs(Adding.BASELINE_MSE - 0.1667) < 1e-4
    assert abs(float(y.double().mean()) - 1.0) < 0.005


def test_copy_targets_are_the_symbols_after_the_go_marker():
    K, A = 4, 5
    data = Copy(64, 2, n_symbols=K, alphabet=A, delay=2, max_delay=6, seed=3)
    assert data.vocab_size == A + 2 and data.n_classes == A and data.blank == A and data.go == A + 1
    seen_delays = set()
    for x, lengths, y in data.batches(0):
        assert x.shape == y.shape == (64, int(lengths.max()))
        for row, n, target in zip(x, lengths.tolist(), y):
            delay = n - 2 * K - 1
            seen_delays.add(delay)
            assert 2 <= delay <= 6
            symbols = row[:K]
            assert symbols.lt(A).all()
            assert row[K:K + delay].eq(A).all()  # blanks
            assert int(row[K + delay]) == A + 1  # go
            assert row[K + delay + 1:n].eq(A).all()  # blanks while the model answers
            assert torch.equal(target[K + delay + 1:n], symbols)  # the answer: the symbols in order
            assert target[:K + delay + 1].eq(IGNORE).all() and target[n:].eq(IGNORE).all()
            assert row[n:].eq(0).all()  # padding
    assert seen_delays == set(range(2, 7))


def test_copy_fixed_delay_has_one_length():
    data = Copy(8, 1, n_symbols=10, alphabet=8, delay=20)
    x, lengths, y = data.batch(0, 0)
    assert lengths.eq(41).all() and x.shape == (8, 41)
    assert int((y != IGNORE).sum()) == 8 * 10


@pytest.mark.parametrize("make", [
    lambda **kw: Parity(8, 5, min_len=2, max_len=30, **kw),
    lambda **kw: Adding(8, 5, length=12, **kw),
    lambda **kw: Copy(8, 5, n_symbols=3, delay=1, max_delay=4, **kw),
])
def test_batches_are_a_function_of_seed_split_epoch_and_index(make):
    data = make(seed=7)
    again = make(seed=7)
    assert data.batch_size == 8 and data.num_batches(0) == data.num_batches(3) == 5
    first = list(data.batches(2))
    assert len(first) == 5
    for a, b in zip(first, again.batches(2)):  # another object, same seed: the same batches
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    for a, b in zip(first[3:], data.batches(2, start=3)):  # resuming mid-epoch reads the same batches
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(torch.equal(u, v) for u, v in zip(first[1], data.batch(2, 1)))

    def differs(a, b):
        return any(u.shape != v.shape or not torch.equal(u, v) for u, v in zip(a, b))

    assert differs(first[0], first[1])  # batches within an epoch differ
    assert differs(first[0], data.batch(3, 0))  # every epoch is fresh data
    assert differs(first[0], make(seed=8).batch(2, 0))
    assert differs(first[0], make(seed=7, split="test").batch(2, 0))


def test_batch_index_out_of_range():
    with pytest.raises(IndexError, match=r"\[0, 5\); got 5"):
        Parity(4, 5).batch(0, 5)


@pytest.mark.parametrize("make, match", [
    (lambda: Parity(0, 5), "batch_size must be an integer >= 1; got 0"),
    (lambda: Parity(4, 0), "num_batches must be an integer >= 1; got 0"),
    (lambda: Parity(4, 5, seed=-1), "seed must be an integer >= 0; got -1"),
    (lambda: Parity(4, 5, split=""), "split must be a non-empty string"),
    (lambda: Parity(4, 5, min_len=0), "min_len must be an integer >= 1; got 0. A string needs at least one symbol"),
    (lambda: Parity(4, 5, min_len=9, max_len=3), "min_len must be <= max_len; got min_len=9, max_len=3. Swap them"),
    (lambda: Parity(4, 5, max_len=2.5), r"max_len must be an integer >= 1; got 2.5"),
    (lambda: Adding(4, 5, length=1), "length must be an integer >= 2; got 1. One marker goes in each half"),
    (lambda: Copy(4, 5, n_symbols=0), "n_symbols must be an integer >= 1; got 0"),
    (lambda: Copy(4, 5, alphabet=1), "alphabet must be an integer >= 2; got 1"),
    (lambda: Copy(4, 5, delay=-1), "delay must be an integer >= 0; got -1"),
    (lambda: Copy(4, 5, delay=5, max_delay=2), "max_delay must be >= delay; got delay=5, max_delay=2"),
])
def test_bad_arguments_name_the_rule_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
