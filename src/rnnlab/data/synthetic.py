"""Synthetic sequence tasks generated on the fly: parity, the adding problem, copy (delayed recall).

Nothing is stored: batch ``i`` of epoch ``e`` is generated from a random generator seeded by
``(seed, split, e, i)``, so it is the same every time it is requested — a resumed run reads exactly the batches an
uninterrupted one would — and every epoch of the training split is fresh data. The validation and test data of a
run are the same task with another ``split`` name (an independent stream from the same seed); the trainer reads
them at epoch 0 only, so they are fixed sets.

Each task is a data object for ``rnnlab.train.Trainer`` (``batches(epoch, start)``, ``num_batches(epoch)``,
``batch_size``) whose batches are ``SeqBatch(x, lengths, y)``, batch first:

    task      x                                     lengths   y
    Parity    (B, T) int64 symbol ids (a=0, b=1)    (B,)      (B,) int64: 1 iff the string has an even number of b's
    Adding    (B, T, 2) float32 (value, marker)     (B,) = T  (B, 1) float32: the sum of the two marked values
    Copy      (B, T) int64 ids (symbols, blank, go) (B,)      (B, T) int64: the symbol due at each output step,
                                                                IGNORE (-100) at every other step

Positions at or after a sequence's length are padding (0 in ``x``, IGNORE in Copy's ``y``); models read
``lengths`` and never look at them. ``lengths`` is an int64 CPU tensor (what ``pack_padded_sequence`` needs).
"""
from __future__ import annotations

import zlib
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

IGNORE = -100  # the target of a step without a loss: torch's cross_entropy ignore_index default


class SeqBatch(NamedTuple):
    """One padded batch: inputs ``x`` (batch first), ``lengths`` (B,) int64 on the CPU, targets ``y``."""

    x: Tensor
    lengths: Tensor
    y: Tensor


def _check_int(name: str, value, lo: int, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}" + (f". {fix}" if fix else ""))
    return value


class SyntheticData:
    """Base class: seeding, batching and the trainer's data protocol. Subclasses define ``_generate``."""

    def __init__(self, batch_size: int, num_batches: int, seed: int, split: str) -> None:
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self._num_batches = _check_int("num_batches", num_batches, 1,
                                       "It is the number of batches per epoch (generated on the fly)")
        self.seed = _check_int("seed", seed, 0)
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string naming the data stream (e.g. 'train', 'valid', "
                             f"'test'); got {split!r}")
        self.split = split

    def num_batches(self, epoch: int = 0) -> int:
        return self._num_batches

    def generator(self, epoch: int, index: int) -> torch.Generator:
        """The CPU generator batch ``index`` of ``epoch`` is drawn from (a function of seed, split, epoch, index)."""
        entropy = [self.seed, zlib.crc32(self.split.encode("utf-8")), epoch, index]
        lo, hi = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
        return torch.Generator().manual_seed((int(hi) << 32 | int(lo)) & (2**63 - 1))

    def batch(self, epoch: int = 0, index: int = 0) -> SeqBatch:
        """Batch ``index`` of ``epoch``: the same tensors on every call."""
        if not 0 <= index < self._num_batches:
            raise IndexError(f"batch index must be in [0, {self._num_batches}); got {index}")
        return self._generate(self.generator(epoch, index), self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[SeqBatch]:
        for i in range(start, self._num_batches):
            yield self.batch(epoch, i)

    def _generate(self, gen: torch.Generator, batch_size: int) -> SeqBatch:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.describe()}; batch_size={self.batch_size}, "
                f"num_batches={self._num_batches}, seed={self.seed}, split={self.split!r})")

    def describe(self) -> str:
        raise NotImplementedError


class Parity(SyntheticData):
    """Parity (counting): strings over {a, b} of lengths uniform in [min_len, max_len], each symbol a fair coin;
    the label is 1 iff the number of b's is even (class 0: odd). The label depends on every symbol, so the model
    must carry one bit through the whole string; train on lengths 1-20 and test on 40-80 to see whether it learnt
    the rule or the training lengths.
    """

    SYMBOLS = ("a", "b")
    vocab_size = 2
    n_classes = 2

    def __init__(self,
                 batch_size: int = 64,  # enough rows for the CPU's matrix kernels, many updates per minute
                 num_batches: int = 100,  # an "epoch" of fresh data: how often the trainer validates and saves
                 *, min_len: int = 1, max_len: int = 20,  # the training lengths of the brief: test on 40-80
                 seed: int = 0, split: str = "train") -> None:
        super().__init__(batch_size, num_batches, seed, split)
        self.min_len = _check_int("min_len", min_len, 1, "A string needs at least one symbol")
        self.max_len = _check_int("max_len", max_len, 1)
        if min_len > max_len:
            raise ValueError(f"min_len must be <= max_len; got min_len={min_len}, max_len={max_len}. Swap them")

    def describe(self) -> str:
        return f"parity of a/b strings, lengths {self.min_len}-{self.max_len}"

    def _generate(self, gen, B):
        lengths = torch.randint(self.min_len, self.max_len + 1, (B,), generator=gen)  # (B,)
        T = int(lengths.max())
        valid = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
        x = torch.randint(0, 2, (B, T), generator=gen) * valid  # (B, T): padding is 0
        y = (x.sum(1) % 2 == 0).long()  # (B,): 1 iff the count of b's (ids 1) is even
        return SeqBatch(x, lengths, y)

    @classmethod
    def decode(cls, ids: Tensor, length: int | None = None) -> str:
        """The string of a row of ids (the first ``length`` of them)."""
        ids = ids.tolist()[:length]
        return "".join(cls.SYMBOLS[i] for i in ids)

    @classmethod
    def encode(cls, text: str) -> Tensor:
        """(T,) ids of a string over {a, b}."""
        bad = sorted(set(text) - set(cls.SYMBOLS))
        if bad or not text:
            raise ValueError(f"a parity string is a non-empty string over 'a' and 'b'; got {text!r}")
        return torch.tensor([cls.SYMBOLS.index(c) for c in text], dtype=torch.long)

    @staticmethod
    def label(text: str) -> int:
        """1 iff ``text`` has an even number of b's."""
        return int(text.count("b") % 2 == 0)


class Adding(SyntheticData):
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015): a length-T sequence of
    pairs (value ~ U(0, 1), marker in {0, 1}) with exactly two markers, one at a uniform position in the first half
    [0, T//2) and one in the second half [T//2, T); the target is the sum of the two marked values.

    Baseline: the target is the sum of two independent U(0, 1) values, with mean 1 and variance 2/12, so always
    predicting 1 has a mean squared error of 1/6 ≈ 0.167 (``BASELINE_MSE``). A model beats it only by finding the
    markers and carrying the first marked value through up to T steps.
    """

    input_size = 2
    n_outputs = 1
    BASELINE_MSE = 1.0 / 6.0  # Var(U1 + U2) = 2 * 1/12: the MSE of always predicting the mean, 1

    def __init__(self, batch_size: int = 64, num_batches: int = 100,  # as Parity's
                 *, length: int = 100,  # Hochreiter & Schmidhuber's shortest T; an LSTM solves it on a CPU
                 seed: int = 0, split: str = "train") -> None:
        super().__init__(batch_size, num_batches, seed, split)
        self.length = _check_int("length", length, 2, "One marker goes in each half, so T needs two steps")

    def describe(self) -> str:
        return f"adding problem, T = {self.length}"

    def _generate(self, gen, B):
        T = self.length
        values = torch.rand(B, T, generator=gen)  # (B, T)
        first = torch.randint(0, T // 2, (B,), generator=gen)  # (B,)
        second = torch.randint(T // 2, T, (B,), generator=gen)  # (B,)
        markers = torch.zeros(B, T)  # (B, T)
        rows = torch.arange(B)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = (values * markers).sum(1, keepdim=True)  # (B, 1)
        return SeqBatch(x, torch.full((B,), T, dtype=torch.long), y)


class Copy(SyntheticData):
    """Copy / delayed recall (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): ``n_symbols`` (K) symbols drawn
    uniformly from an alphabet of ``alphabet`` symbols, then ``delay`` blanks, then a "go" marker, then K blanks
    during which the model must output the K symbols in order. Many-to-many: ``y`` holds the symbol due at each of
    the last K steps and IGNORE everywhere else, so the loss is on the output steps only.

    Ids: symbols 0..alphabet-1, blank = alphabet, go = alphabet + 1 (``vocab_size = alphabet + 2``); targets are
    symbol ids (``n_classes = alphabet``). Length T = 2K + delay + 1. With ``max_delay`` > ``delay`` each sequence's
    delay is uniform in [delay, max_delay] (variable lengths, padded). Chance: 1/alphabet per symbol.
    """

    def __init__(self, batch_size: int = 64, num_batches: int = 100,  # as Parity's
                 *, n_symbols: int = 10, alphabet: int = 8,  # Arjovsky et al.'s copy task: 10 symbols of 8
                 delay: int = 20,  # within an LSTM's reach in minutes on a CPU (Arjovsky et al.: 100-2000)
                 max_delay: int | None = None,  # None: every sequence has the same delay (and length)
                 seed: int = 0, split: str = "train") -> None:
        super().__init__(batch_size, num_batches, seed, split)
        self.n_symbols = _check_int("n_symbols", n_symbols, 1, "It is the number of symbols to remember")
        self.alphabet = _check_int("alphabet", alphabet, 2, "With one symbol there is nothing to remember")
        self.delay = _check_int("delay", delay, 0)
        self.max_delay = delay if max_delay is None else _check_int("max_delay", max_delay, 0)
        if self.max_delay < self.delay:
            raise ValueError(f"max_delay must be >= delay; got delay={delay}, max_delay={max_delay}. Raise "
                             "max_delay or leave it unset for a fixed delay")
        self.blank, self.go = alphabet, alphabet + 1
        self.vocab_size = alphabet + 2
        self.n_classes = alphabet

    def describe(self) -> str:
        delay = f"{self.delay}" if self.max_delay == self.delay else f"{self.delay}-{self.max_delay}"
        return f"copy {self.n_symbols} symbols of {self.alphabet} after a delay of {delay}"

    def _generate(self, gen, B):
        K = self.n_symbols
        symbols = torch.randint(0, self.alphabet, (B, K), generator=gen)  # (B, K)
        delays = torch.randint(self.delay, self.max_delay + 1, (B,), generator=gen)  # (B,)
        lengths = 2 * K + delays + 1  # (B,)
        T = int(lengths.max())
        steps = torch.arange(T)[None, :]  # (1, T)
        go_at = (K + delays)[:, None]  # (B, 1)
        x = torch.full((B, T), self.blank, dtype=torch.long)  # (B, T)
        x[:, :K] = symbols
        x[steps == go_at] = self.go
        x[steps >= lengths[:, None]] = 0  # padding
        out_pos = (steps > go_at) & (steps < lengths[:, None])  # (B, T): the K output steps of each row
        y = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
        y[out_pos] = symbols.reshape(-1)  # row-major: row b's K output steps get row b's K symbols in order
        return SeqBatch(x, lengths, y)
