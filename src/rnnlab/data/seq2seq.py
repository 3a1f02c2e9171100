"""Sequence-to-sequence data: ``source<TAB>target`` files, their vocabularies, and built-in tasks generated on the fly
(reverse, sort, copy over a symbol alphabet; date-format normalisation).

Data flows: file → ``read_pairs`` (UTF-8, one pair per line, checked) → ``Seq2SeqVocab.build`` (training pairs;
separate source and target vocabularies) → ``encode_pairs`` (ids) → ``SentenceBatches(..., collate_fn=collate_pairs)``
(``rnnlab.train.tagging``: bucketed by source length, shuffled per (seed, epoch)). The built-in tasks produce the
same ``Seq2SeqBatch`` directly.

Tokens: ``char`` (every character is a token; spaces too) or ``word`` (whitespace-separated words). Both
vocabularies start with the specials ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3 (``SPECIALS``; the
models' default ids). A batch, batch first:

    src          (B, S) int64 source ids, <pad> after each sequence's end
    src_lengths  (B,)   int64 on the CPU (what pack_padded_sequence needs)
    tgt_in       (B, T) int64 decoder input: <bos> y_1 ... y_n, then <pad>
    tgt_out      (B, T) int64 targets: y_1 ... y_n <eos>, then IGNORE (-100: no loss)
    tgt_lengths  (B,)   int64: n + 1, the target steps with a loss

Built-in tasks (``SymbolTask``, ``DateTask``): batch ``i`` of epoch ``e`` is generated from a generator seeded by
``(seed, split, e, i)`` (``rnnlab.data.synthetic.SyntheticData``), so it is the same on every call and a resumed run
reads what an uninterrupted one would. Bucketing without a pool: each batch first draws a bucket of source lengths
(with probability proportional to the number of lengths in it), then its sequences' lengths uniformly within the
bucket, so the lengths over many batches are exactly uniform over [min_len, max_len] while a batch pads little.
"""
from __future__ import annotations

import datetime
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from .conllu import SymbolVocab
from .synthetic import IGNORE, SyntheticData
from .text import DataError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3 in every vocabulary
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
LEVELS = ("char", "word")
SYMBOL_TASKS = ("reverse", "sort", "copy")
TASKS = SYMBOL_TASKS + ("dates",)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Seq2SeqBatch(NamedTuple):
    """One padded batch (see the module doc for the shapes)."""

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lengths: Tensor


# -- tokens and vocabularies -----------------------------------------------------------------------------------------
def tokenize(text: str, level: str) -> list[str]:
    """Characters or whitespace-separated words."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    return list(text) if level == "char" else text.split()


def detokenize(tokens: list[str], level: str) -> str:
    return "".join(tokens) if level == "char" else " ".join(tokens)


@dataclass
class Seq2SeqVocab:
    """Source and target vocabularies (each ``SPECIALS`` first, then the training tokens by falling count) and the
    token level. Tokens outside a vocabulary become <unk>."""

    src: SymbolVocab
    tgt: SymbolVocab
    level: str = "char"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {self.level!r}")
        for name, v in (("source", self.src), ("target", self.tgt)):
            if tuple(v.specials) != SPECIALS:
                raise ValueError(f"the {name} vocabulary must start with the specials {list(SPECIALS)}; got "
                                 f"{list(v.specials)}")

    @classmethod
    def build(cls, pairs, level: str = "char", min_count: int = 1) -> Seq2SeqVocab:
        """From training ``pairs`` (``Pair``s or (source, target) string tuples)."""
        sc, tc = Counter(), Counter()
        for p in pairs:
            s, t = (p.source, p.target) if isinstance(p, Pair) else p
            sc.update(tokenize(s, level))
            tc.update(tokenize(t, level))
        return cls(SymbolVocab.build(sc, min_count, SPECIALS), SymbolVocab.build(tc, min_count, SPECIALS), level)

    @classmethod
    def from_symbols(cls, src_symbols, tgt_symbols, level: str = "char") -> Seq2SeqVocab:
        """Fixed vocabularies (the built-in tasks): the specials, then the symbols in the given order."""
        return cls(SymbolVocab(list(SPECIALS) + list(src_symbols), SPECIALS),
                   SymbolVocab(list(SPECIALS) + list(tgt_symbols), SPECIALS), level)

    def encode_source(self, text: str) -> list[int]:
        return [self.src.id(t) for t in tokenize(text, self.level)]

    def encode_target(self, text: str) -> list[int]:
        return [self.tgt.id(t) for t in tokenize(text, self.level)]

    def decode_target(self, ids) -> str:
        """Target ids → text; decoding stops at <eos>, <pad> and <bos> are dropped."""
        out = []
        for i in (ids.tolist() if isinstance(ids, Tensor) else ids):
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            out.append(self.tgt.itos[i])
        return detokenize(out, self.level)

    def source_tokens(self, text: str) -> list[str]:
        return tokenize(text, self.level)

    def to_json(self) -> dict:
        return {"src": self.src.to_json(), "tgt": self.tgt.to_json(), "level": self.level}

    @classmethod
    def from_json(cls, obj: dict) -> Seq2SeqVocab:
        try:
            return cls(SymbolVocab.from_json(obj["src"]), SymbolVocab.from_json(obj["tgt"]), obj["level"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a seq2seq vocabulary (missing or bad field {exc})") from None


# -- files --------------------------------------------------------------------------------------------------------
@dataclass
class Pair:
    """One line of a pairs file: ``target`` is None for a line without a tab when targets are optional."""

    source: str
    target: str | None
    line: int


def read_pairs(path: str | Path, level: str = "char", *, require_target: bool = True) -> list[Pair]:
    """The ``source<TAB>target`` lines of a UTF-8 file (blank lines skipped; a final newline optional). Every line
    needs exactly one tab and a non-empty source and target — else a DataError naming the file, the line and the fix.
    With ``require_target=False`` (text to translate) a line without a tab is a source alone."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a source<TAB>target file; pass a file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{p}: line {line}: invalid UTF-8 (byte offset {exc.start}); convert the file to UTF-8, e.g. "
                        f"'iconv -f latin1 -t utf-8 {p} > {p.stem}.utf8{p.suffix}'") from None
    pairs = parse_pairs(text, str(p), level, require_target=require_target)
    if not pairs:
        raise DataError(f"{p}: the file has no pairs (it is empty or blank); write one 'source<TAB>target' per line")
    return pairs


def parse_pairs(text: str, name: str = "<string>", level: str = "char", *,
                require_target: bool = True) -> list[Pair]:
    """``read_pairs`` on a string (``name`` is used in messages)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    out = []
    for k, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) == 1 and not require_target:
            source, target = cells[0], None
        elif len(cells) != 2:
            what = "no tab" if len(cells) == 1 else f"{len(cells) - 1} tabs"
            raise DataError(f"{name}: line {k}: {what}; every line must be 'source<TAB>target' with exactly one tab "
                            f"(got {_short(line)})")
        else:
            source, target = cells
        if not tokenize(source, level) or not source.strip():
            raise DataError(f"{name}: line {k}: the source (before the tab) is empty; give every line a source")
        if target is not None and (not target.strip() or not tokenize(target, level)):
            raise DataError(f"{name}: line {k}: the target (after the tab) is empty; give every line a target, or "
                            "drop the line")
        out.append(Pair(source, target, k))
    return out


def _short(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


@dataclass
class EncodedPair:
    """One pair as ids. ``words`` is the source (``SentenceBatches`` buckets by its length)."""

    words: list[int]
    target: list[int] | None


def encode_pairs(pairs: list[Pair], vocab: Seq2SeqVocab) -> list[EncodedPair]:
    return [EncodedPair(vocab.encode_source(p.source), None if p.target is None else vocab.encode_target(p.target))
            for p in pairs]


def make_batch(sources: list[list[int]], targets: list[list[int] | None]) -> Seq2SeqBatch:
    """Pad id lists into a ``Seq2SeqBatch`` (a missing target: just <eos>, for decoding)."""
    B = len(sources)
    targets = [t if t is not None else [] for t in targets]
    S = max(len(s) for s in sources)
    T = max(len(t) for t in targets) + 1
    src = torch.full((B, S), PAD_ID, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((B, T), PAD_ID, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    for b, (s, t) in enumerate(zip(sources, targets)):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, :len(t) + 1] = torch.tensor([BOS_ID] + t, dtype=torch.long)
        tgt_out[b, :len(t) + 1] = torch.tensor(t + [EOS_ID], dtype=torch.long)
    src_lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)  # (B,)
    tgt_lengths = torch.tensor([len(t) + 1 for t in targets], dtype=torch.long)  # (B,)
    return Seq2SeqBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)


def collate_pairs(items: list[EncodedPair], index: list[int], pad_id: int = PAD_ID) -> Seq2SeqBatch:
    """``SentenceBatches``' collate function for ``EncodedPair``s (``index`` is not part of the batch)."""
    return make_batch([e.words for e in items], [e.target for e in items])


# -- built-in tasks -----------------------------------------------------------------------------------------------
class _GeneratedTask(SyntheticData):
    """Generated pairs as ``Seq2SeqBatch``es; subclasses define ``pairs(gen, n)`` → [(source tokens, target tokens)]
    and ``vocab``."""

    vocab: Seq2SeqVocab

    def _generate(self, gen: torch.Generator, batch_size: int) -> Seq2SeqBatch:
        pairs = self.pairs(gen, batch_size)
        return make_batch([self.vocab.encode_source(detokenize(s, "char")) for s, _ in pairs],
                          [self.vocab.encode_target(detokenize(t, "char")) for _, t in pairs])

    def examples(self, epoch: int = 0, index: int = 0) -> list[tuple[str, str]]:
        """Batch ``index`` of ``epoch`` as (source, target) strings."""
        if not 0 <= index < self._num_batches:
            raise IndexError(f"batch index must be in [0, {self._num_batches}); got {index}")
        return [("".join(s), "".join(t)) for s, t in self.pairs(self.generator(epoch, index), self.batch_size)]

    def pairs(self, gen: torch.Generator, n: int) -> list[tuple[list[str], list[str]]]:
        raise NotImplementedError


class SymbolTask(_GeneratedTask):
    """reverse, sort or copy strings of ``alphabet`` symbols (the letters a, b, c ...), source lengths uniform in
    [min_len, max_len]; each symbol uniform over the alphabet. Targets: the string reversed, sorted, or as is."""

    def __init__(self, task: str = "reverse",
                 batch_size: int = 64,  # enough rows for the CPU's matrix kernels, many updates per minute
                 num_batches: int = 100,  # an "epoch" of fresh data: how often the trainer validates and saves
                 *, min_len: int = 5, max_len: int = 50,  # long enough that attention matters (no fixed vector)
                 alphabet: int = 10,  # 10 symbols: chance is 10% per symbol, 10^L strings of length L
                 bucket_width: int = 5,  # a batch's lengths span at most 5: little padding
                 seed: int = 0, split: str = "train") -> None:
        super().__init__(batch_size, num_batches, seed, split)
        if task not in SYMBOL_TASKS:
            raise ValueError(f"task must be one of {', '.join(SYMBOL_TASKS)}; got {task!r}")
        self.task = task
        self.min_len = _check_int("min_len", min_len, 1, "A string needs at least one symbol")
        self.max_len = _check_int("max_len", max_len, 1)
        if min_len > max_len:
            raise ValueError(f"min_len must be <= max_len; got min_len={min_len}, max_len={max_len}. Swap them")
        self.alphabet = _check_int("alphabet", alphabet, 2, "With one symbol every task is trivial")
        if alphabet > len(LETTERS):
            raise ValueError(f"alphabet must be at most {len(LETTERS)} (the letters a-z); got {alphabet}")
        self.bucket_width = _check_int("bucket_width", bucket_width, 1)
        self.symbols = LETTERS[:alphabet]
        self.vocab = Seq2SeqVocab.from_symbols(self.symbols, self.symbols, "char")

    def describe(self) -> str:
        return f"{self.task} strings of {self.alphabet} symbols, lengths {self.min_len}-{self.max_len}"

    def pairs(self, gen, n):
        lengths = _bucketed_lengths(gen, n, self.min_len, self.max_len, self.bucket_width)
        out = []
        for L in lengths:
            src = [self.symbols[i] for i in torch.randint(0, self.alphabet, (L,), generator=gen).tolist()]
            out.append((src, target_of(self.task, src)))
        return out


def target_of(task: str, source: list[str]) -> list[str]:
    """The target of a symbol task for ``source`` tokens."""
    if task == "reverse":
        return source[::-1]
    if task == "sort":
        return sorted(source)
    if task == "copy":
        return list(source)
    raise ValueError(f"task must be one of {', '.join(SYMBOL_TASKS)}; got {task!r}")


def _bucketed_lengths(gen: torch.Generator, n: int, lo: int, hi: int, width: int) -> list[int]:
    """n lengths from one bucket [a, b] of [lo, hi], the bucket drawn with probability ∝ its size: over many
    batches, exactly uniform on [lo, hi]."""
    starts = list(range(lo, hi + 1, width))
    sizes = torch.tensor([min(s + width - 1, hi) - s + 1 for s in starts], dtype=torch.float64)
    k = int(torch.multinomial(sizes, 1, generator=gen))
    a, b = starts[k], min(starts[k] + width - 1, hi)
    return torch.randint(a, b + 1, (n,), generator=gen).tolist()


# -- dates ------------------------------------------------------------------------------------------------------
# English names written out rather than strftime's %B / %a: strftime follows the C library's locale.
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Human renderings of a date. Fields: {d} day, {dd} zero-padded day, {m}/{mm} month, {month} name, {mon} 3-letter
# name, {MON} upper case, {yyyy}/{yy} year, {weekday}/{wd} weekday. No format is ambiguous: day-first and
# month-first numeric orders use different separators.
DATE_FORMATS = {
    "long": "{month} {d}, {yyyy}",  # March 5, 2019
    "long_day_first": "{d} {month} {yyyy}",  # 5 March 2019
    "short": "{mon} {d}, {yyyy}",  # Mar 5, 2019
    "short_day_first": "{dd} {mon} {yyyy}",  # 05 Mar 2019
    "weekday": "{weekday}, {month} {d}, {yyyy}",  # Tuesday, March 5, 2019
    "weekday_short": "{wd} {d} {mon} {yy}",  # Tue 5 Mar 19
    "upper": "{d} {MON} {yyyy}",  # 5 MAR 2019
    "dotted": "{dd}.{mm}.{yyyy}",  # 05.03.2019 (day first)
    "us_slashes": "{m}/{d}/{yyyy}",  # 3/5/2019 (month first)
    "year_first": "{yyyy}/{mm}/{dd}",  # 2019/03/05
}
# The held-out format of holdout="formats": its parts (zero-padded day, 3-letter month, 4-digit year, day first)
# all occur in the training formats, only not in this combination.
HELD_OUT_FORMAT = "short_day_first"
DATE_MIN, DATE_MAX = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)  # two-digit years are unambiguous here
HOLDOUTS = ("dates", "formats")


def render_date(date: datetime.date, fmt: str) -> str:
    """``date`` in the DATE_FORMATS format named ``fmt``."""
    if fmt not in DATE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(DATE_FORMATS)}; got {fmt!r}")
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    return DATE_FORMATS[fmt].format(d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}",
                                    month=month, mon=month[:3], MON=month[:3].upper(), yyyy=f"{date.year:04d}",
                                    yy=f"{date.year % 100:02d}", weekday=weekday, wd=weekday[:3])


def date_split(date: datetime.date) -> str:
    """Which split a date belongs to ('train', 'valid' or 'test'): 5% of the dates each for valid and test, fixed
    by a hash of the date, so training never sees a valid or test date."""
    k = zlib.crc32(date.isoformat().encode("ascii")) % 20
    return "test" if k == 0 else ("valid" if k == 1 else "train")


class DateTask(_GeneratedTask):
    """Date-format normalisation: a random date between 1950-01-01 and 2049-12-31 rendered in one of several human
    formats (``DATE_FORMATS``) → the ISO date ``YYYY-MM-DD``. Character level.

    Held out for the valid and test splits: always the dates themselves (``date_split``: the training split never
    draws a valid or test date); with ``holdout="formats"`` the test split also uses only ``HELD_OUT_FORMAT``,
    which train and valid never show (a test of composing known parts).
    """

    def __init__(self, batch_size: int = 64, num_batches: int = 100,  # as SymbolTask's
                 *, holdout: str = "dates", seed: int = 0, split: str = "train") -> None:
        super().__init__(batch_size, num_batches, seed, split)
        if holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {', '.join(HOLDOUTS)}; got {holdout!r}")
        self.holdout = holdout
        if holdout == "formats":
            self.formats = [HELD_OUT_FORMAT] if split == "test" else [f for f in DATE_FORMATS if f != HELD_OUT_FORMAT]
        else:
            self.formats = list(DATE_FORMATS)
        self._split_of = "train" if split not in ("valid", "test") else split  # other stream names draw train dates
        src_chars = sorted(set("".join(MONTHS) + "".join(WEEKDAYS) + "".join(MONTHS).upper() + "0123456789 ,./"))
        self.vocab = Seq2SeqVocab.from_symbols(src_chars, list("0123456789-"), "char")

    def describe(self) -> str:
        return f"dates in {len(self.formats)} formats → YYYY-MM-DD (held out: {self.holdout})"

    def pairs(self, gen, n):
        span = (DATE_MAX - DATE_MIN).days + 1
        out = []
        while len(out) < n:
            date = DATE_MIN + datetime.timedelta(days=int(torch.randint(0, span, (1,), generator=gen)))
            fmt = self.formats[int(torch.randint(0, len(self.formats), (1,), generator=gen))]
            if date_split(date) != self._split_of:
                continue  # rejection keeps the draw a function of the generator alone
            out.append((list(render_date(date, fmt)), list(date.isoformat())))
        return out


def _check_int(name: str, value, lo: int, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}" + (f". {fix}" if fix else ""))
    return value


__all__ = ["BOS", "DATE_FORMATS", "EOS", "HELD_OUT_FORMAT", "LEVELS", "PAD", "SPECIALS", "TASKS", "UNK", "DateTask",
           "EncodedPair", "Pair", "Seq2SeqBatch", "Seq2SeqVocab", "SymbolTask", "collate_pairs", "date_split",
           "detokenize", "encode_pairs", "make_batch", "parse_pairs", "read_pairs", "render_date", "target_of",
           "tokenize"]
