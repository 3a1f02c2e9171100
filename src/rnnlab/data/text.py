"""Text for language modelling: reading files, tokenising (char / word / BPE), the vocabulary, and the classic
token streams that a recurrent LM reads in chunks.

Data flows: file → ``read_text`` (UTF-8, checked) → ``Vocab`` (built on the training text) → token ids →
``LMStream`` (the id stream cut into B columns, read ``bptt`` steps at a time). The hidden state is carried from
one chunk to the next by the training step, which also detaches it there (see ``rnnlab.train.lm``).

Levels:
- ``char``: every Unicode code point is a token. The vocabulary is the training text's characters; ``<unk>`` is
  added only when the validation/test text has characters the training text lacks.
- ``word``: whitespace-separated words, one ``<eos>`` at the end of each line (the Penn Treebank convention of
  Mikolov et al. / pytorch's word_language_model); words seen fewer than ``min_count`` times, or outside the
  ``max_size`` most frequent, become ``<unk>``.
- ``bpe``: a byte-level BPE (HF ``tokenizers``, in ``rnnlab[text]``) trained on the training text; any text
  encodes, nothing is unknown.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .._optional import require

LEVELS = ("char", "word", "bpe")
UNK, EOS = "<unk>", "<eos>"
# nanoGPT's split for tiny shakespeare: the last 10% of the text is the validation set.
DEFAULT_VALID_FRACTION = 0.1
# A byte-level BPE starts from 256 byte tokens; 1024 leaves ~770 merges, enough for common words of a small corpus
# while keeping the softmax cheap on a CPU.
DEFAULT_BPE_VOCAB = 1024


class DataError(ValueError):
    """A problem with the user's text data (missing, empty, not UTF-8, too short ...); the message names the file
    and the fix. The CLI prints it as one line."""


# -- reading files -------------------------------------------------------------------------------------------------
def read_text(path: str | Path, what: str = "text file",
              needs: str = "a language model needs text to read") -> str:
    """The file's text, decoded as strict UTF-8; a clear DataError when it is missing, empty or not UTF-8. Every
    reader of a user's text file (corpora, CoNLL-U, labelled text) goes through here; ``what`` names the kind of
    file and ``needs`` says why an empty one will not do."""
    p = check_file(path, what)
    raw = p.read_bytes()
    if not raw.strip():
        raise empty_file(p, needs)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_utf8(p, exc.start, raw[exc.start:exc.start + 4], raw.count(b"\n", 0, exc.start) + 1) from None


def check_file(path: str | Path, what: str = "text file") -> Path:
    """``path`` as a Path; a DataError when it does not exist or is a directory (the checks of ``read_text``, shared
    with the token cache, which reads a file in chunks)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a {what}; pass a file")
    return p


def empty_file(p: Path, needs: str = "a language model needs text to read") -> DataError:
    return DataError(f"{p}: the file is empty (or only whitespace); {needs}")


def invalid_utf8(p: Path, offset: int, bad: bytes, line: int) -> DataError:
    """The error of a file that is not UTF-8: its first invalid ``bad`` bytes at byte ``offset``, on ``line``."""
    return DataError(f"{p}: line {line}: invalid UTF-8 (byte offset {offset}, bytes {bad!r}); convert the file to "
                     f"UTF-8, e.g. 'iconv -f latin1 -t utf-8 {p} > {p.stem}.utf8{p.suffix}'")


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stdlib_corpus(max_bytes: int = 400_000) -> str:
    """Python source text every machine with Python has: the standard library's top-level ``*.py`` files, in name
    order, concatenated up to ``max_bytes`` (UTF-8) and cut at a line end. Deterministic for a given Python."""
    if max_bytes <= 0:
        raise ValueError(f"stdlib_corpus: max_bytes must be positive; got {max_bytes!r}")
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    # Names starting with '_' are left out: many are generated tables (_sysconfigdata_*, _pydecimal's constants ...).
    for f in sorted(root.glob("*.py")):
        if f.name.startswith("_"):
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        n = len(text.encode("utf-8"))
        if size + n > max_bytes:
            room = text.encode("utf-8")[:max_bytes - size].decode("utf-8", errors="ignore")
            parts.append(room[:room.rfind("\n") + 1])
            break
        parts.append(text)
        size += n
    corpus = "".join(parts)
    if not corpus:
        raise DataError(f"{root}: found no readable *.py files in the Python standard library")
    return corpus


# -- tokenising ----------------------------------------------------------------------------------------------------
def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the file's final newline ends the last line; it does not start a new one
        lines.pop()
    return lines


def words_of(text: str, final_eos: bool = True) -> list[str]:
    """Whitespace tokens with one ``<eos>`` after each line (the last one only if ``final_eos`` or the text ends
    with a newline)."""
    out: list[str] = []
    lines = _lines(text)
    for i, line in enumerate(lines):
        out.extend(line.split())
        if i < len(lines) - 1 or final_eos or text.endswith("\n"):
            out.append(EOS)
    return out


def _bpe_module():
    # Imported here, not at the top: `import rnnlab` does not need it (a MissingExtra names the extra to install).
    return require("tokenizers", purpose="the BPE level (--level bpe)")


def _train_bpe(lines: Iterable[str | list[str]], vocab_size: int):
    """A byte-level BPE trained on ``lines`` (strings, or lists of strings): an iterator, so a corpus is never held
    whole (the token cache passes the training file's lines block by block)."""
    tk = _bpe_module()
    tok = tk.Tokenizer(tk.models.BPE())
    # Byte-level: every string maps to bytes first, so no text is ever unknown (Unicode-safe by construction).
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok


# -- the vocabulary ------------------------------------------------------------------------------------------------
@dataclass
class Vocab:
    """Token ↔ id for one tokenisation level. ``itos[i]`` is token i; ``stoi`` the inverse. ``bpe`` holds the
    trained tokenizer as its JSON string (level 'bpe' only)."""

    level: str
    itos: list[str]
    specials: list[str] = field(default_factory=list)
    bpe: str | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"Vocab level must be one of {', '.join(LEVELS)}; got {self.level!r}")
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            dup = next(s for s, n in Counter(self.itos).items() if n > 1)
            raise ValueError(f"Vocab tokens must be unique; {dup!r} appears more than once")
        self._tok = None
        if self.level == "bpe":
            if self.bpe is None:
                raise ValueError("a 'bpe' Vocab needs its tokenizer (the bpe JSON string)")
            tokenizers = _bpe_module()  # a MissingExtra (an ImportError) when the package is missing
            try:
                self._tok = tokenizers.Tokenizer.from_str(self.bpe)
            except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception type for a bad JSON
                raise ValueError(f"a 'bpe' Vocab's tokenizer does not load ({' '.join(str(exc).split())[:200]})") \
                    from None

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def unk_id(self) -> int | None:
        return self.stoi.get(UNK) if UNK in self.specials else None

    @property
    def eos_id(self) -> int | None:
        return self.stoi.get(EOS) if EOS in self.specials else None

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, text: str, level: str, *, min_count: int = 1, max_size: int | None = None,
              bpe_vocab: int = DEFAULT_BPE_VOCAB, extra_texts: tuple[str, ...] = ()) -> Vocab:
        """The vocabulary of ``text`` (the training text). ``extra_texts`` (validation/test) only decide whether a
        char vocabulary needs ``<unk>``; their tokens never enter it."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        if level == "char":
            chars = sorted(set(text))
            return cls.of_chars(chars, unseen=any(set(t) - set(chars) for t in extra_texts))
        if level == "word":
            # The words of words_of(text) are those of text.split() (a line split on "\n", then on whitespace):
            # counted straight from the text, without the list of all its tokens.
            return cls.of_word_counts(Counter(text.split()), min_count=min_count, max_size=max_size)
        return cls.of_bpe(text.splitlines(keepends=True), bpe_vocab)

    @classmethod
    def of_chars(cls, chars: list[str], unseen: bool) -> Vocab:
        """The char vocabulary of the training text's sorted ``chars``, with ``<unk>`` first when ``unseen`` (the
        validation/test text has characters the training text lacks)."""
        return cls("char", ([UNK] if unseen else []) + chars, [UNK] if unseen else [])

    @classmethod
    def of_word_counts(cls, counts: Counter, *, min_count: int = 1, max_size: int | None = None) -> Vocab:
        """The word vocabulary of the training text's word ``counts`` (a Counter updated in text order; the literal
        words ``<unk>`` and ``<eos>`` are ignored: they are the specials)."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1; got {min_count!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 3):
            raise ValueError(f"max vocabulary size must be an integer >= 3 (it includes {UNK} and {EOS}); "
                             f"got {max_size!r}")
        # Most frequent first; ties keep first-appearance order (Counter is insertion-ordered): deterministic.
        words = [w for w, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= min_count and w not in (UNK, EOS)]
        if max_size is not None:
            words = words[:max_size - 2]
        return cls("word", [UNK, EOS] + words, [UNK, EOS])

    @classmethod
    def of_bpe(cls, lines: Iterable[str | list[str]], bpe_vocab: int = DEFAULT_BPE_VOCAB) -> Vocab:
        """A byte-level BPE vocabulary trained on the training text's ``lines`` (``str.splitlines(keepends=True)``
        pieces, or lists of them), read once from the iterator."""
        if isinstance(bpe_vocab, bool) or not isinstance(bpe_vocab, int) or bpe_vocab < 257:
            raise ValueError(f"BPE vocabulary size must be an integer >= 257 (256 byte tokens + merges); "
                             f"got {bpe_vocab!r}")
        tok = _train_bpe(lines, bpe_vocab)
        itos = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
        return cls("bpe", itos, [], tok.to_str())

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode(self, text: str, name: str = "text", final_eos: bool = True) -> list[int]:
        """Token ids of ``text``. Unknown tokens become ``<unk>`` when the vocabulary has it, else a DataError that
        names ``name`` and the position. ``final_eos``: word level, close an unterminated last line with ``<eos>``."""
        if self.level == "bpe":
            return list(self._tok.encode(text).ids)
        if self.level == "char":
            ids = [self.stoi.get(c, -1) for c in text]
            if -1 in ids:
                if self.unk_id is None:
                    pos = ids.index(-1)
                    c = text[pos]
                    raise DataError(f"{name}: character {c!r} (U+{ord(c):04X}) at character offset {pos} is not in "
                                    f"the model's vocabulary (which has no {UNK}); remove it, or train on text "
                                    f"that contains it")
                ids = [self.unk_id if i == -1 else i for i in ids]
            return ids
        unk = self.unk_id
        return [self.stoi.get(w, unk) for w in words_of(text, final_eos)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.level == "bpe":
            return self._tok.decode(ids, skip_special_tokens=False)
        toks = [self.itos[i] for i in ids]
        if self.level == "char":
            return "".join(toks)
        out = []
        for t in toks:  # words joined by spaces, <eos> back to a line end
            if t == EOS:
                out.append("\n")
            else:
                out.append(t if not out or out[-1] == "\n" else " " + t)
        return "".join(out)

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"level": self.level, "itos": self.itos, "specials": self.specials, "bpe": self.bpe}

    @classmethod
    def from_json(cls, obj: dict) -> Vocab:
        try:
            return cls(obj["level"], list(obj["itos"]), list(obj.get("specials", [])), obj.get("bpe"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a vocabulary: missing or malformed field {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# -- train / valid / test ------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """The vocabulary and the token-id streams (1-D integer tensors: int64, or uint8 / int16 / int32 memory-mapped
    from the token cache) of the three splits; ``valid``/``test`` may be None. ``sources`` records where each split
    came from (path or description, sha256 of its text)."""

    vocab: Vocab
    train: Tensor
    valid: Tensor | None = None
    test: Tensor | None = None
    sources: dict = field(default_factory=dict)


def split_text(text: str, valid_fraction: float, level: str) -> tuple[str, str]:
    """(train, valid): the last ``valid_fraction`` of the text is the validation part. Char level cuts at that
    exact character (as nanoGPT does); word and BPE levels move the cut back to the start of its line (forward to
    the next line when that would leave no training text), so no word is split in two."""
    cut = int(len(text) * (1 - valid_fraction))
    if level != "char":
        line_start = text.rfind("\n", 0, cut) + 1
        if line_start == 0:
            nl = text.find("\n", cut)
            line_start = nl + 1 if nl != -1 else len(text)
        cut = line_start
    return text[:cut], text[cut:]


def build_corpus(train: str, valid: str | None = None, test: str | None = None, *, level: str = "char",
                 valid_fraction: float = DEFAULT_VALID_FRACTION, min_count: int = 1, max_vocab: int | None = None,
                 bpe_vocab: int = DEFAULT_BPE_VOCAB, vocab: Vocab | None = None,
                 names: tuple[str, str, str] = ("train text", "valid text", "test text")) -> Corpus:
    """Token streams from texts. Without ``valid`` the last ``valid_fraction`` of ``train`` becomes the validation
    split (0 = no validation). The vocabulary is built on the training part unless ``vocab`` is given."""
    if level not in LEVELS:
        raise DataError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) or not 0 <= valid_fraction < 1:
        raise DataError(f"valid fraction must be a number in [0, 1); got {valid_fraction!r}")
    sources = {"train": {"name": names[0], "sha256": sha256_of(train)}}
    if valid is None and valid_fraction > 0:
        train, valid = split_text(train, valid_fraction, level)
        sources["valid"] = {"name": f"last {valid_fraction:g} of {names[0]}"}
        names = (names[0], f"the last {valid_fraction:g} of {names[0]}", names[2])
        if not valid.strip():
            raise DataError(f"{names[0]}: too short to split off a validation part ({len(train)} characters); "
                            f"give a validation file or use a longer text")
    elif valid is not None:
        sources["valid"] = {"name": names[1], "sha256": sha256_of(valid)}
    if test is not None:
        sources["test"] = {"name": names[2], "sha256": sha256_of(test)}
    if vocab is None:
        vocab = Vocab.build(train, level, min_count=min_count, max_size=max_vocab, bpe_vocab=bpe_vocab,
                            extra_texts=tuple(t for t in (valid, test) if t is not None))
    elif vocab.level != level:
        raise DataError(f"the vocabulary is {vocab.level}-level but level {level!r} was requested")

    def ids(text, name):
        return None if text is None else torch.tensor(vocab.encode(text, name), dtype=torch.long)  # (N,)

    return Corpus(vocab, ids(train, names[0]), ids(valid, names[1]), ids(test, names[2]), sources)


def load_corpus(train: str | Path, valid: str | Path | None = None, test: str | Path | None = None, *,
                cache_dir: str | Path | None = None, **kwargs) -> Corpus:
    """``build_corpus`` on UTF-8 files (same keyword options); errors name the file. With ``cache_dir``, through
    the token cache there (``rnnlab.data.token_cache``): the same corpus, its id streams memory-mapped."""
    names = tuple(str(p) if p is not None else "" for p in (train, valid, test))
    if cache_dir is not None:
        from .token_cache import cached_corpus  # it imports this module

        corpus = cached_corpus(train, valid, test, cache_dir=cache_dir, names=names, **kwargs)[0]
    else:
        texts = [None if p is None else read_text(p) for p in (train, valid, test)]
        corpus = build_corpus(*texts, names=names, **kwargs)
    for split, p in (("train", train), ("valid", valid), ("test", test)):
        if p is not None:
            corpus.sources[split]["path"] = str(Path(p).resolve())
    return corpus


# -- streams -------------------------------------------------------------------------------------------------------
def batchify(tokens: Tensor, batch_size: int, name: str = "stream") -> Tensor:
    """Cut a 1-D token stream into ``batch_size`` contiguous columns: column b is the b-th slice of the stream, read
    top to bottom. The tail that does not fill a row is dropped (< batch_size tokens)."""
    rows = _rows(tokens.numel(), batch_size, name)
    return tokens[:rows * batch_size].view(batch_size, rows).t().contiguous()  # (rows, B)


def _rows(n: int, batch_size: int, name: str) -> int:
    """The rows of ``batchify``'s layout of ``n`` tokens in ``batch_size`` columns (a DataError below 2)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch size must be an integer >= 1; got {batch_size!r}")
    rows = n // batch_size
    if rows < 2:  # an input step and its target at the least
        raise DataError(f"{name}: {n} tokens are too few for batch size {batch_size} (each of the "
                        f"{batch_size} columns needs at least 2 tokens); use a smaller batch size or more text")
    return rows


class LMStream:
    """The classic LM batches: ``batchify`` columns read in chunks of ``bptt`` steps, ``(x, y)`` with ``y`` the
    next token of each ``x`` position, both (T, B). Consecutive chunks continue each column, so a model can carry
    its state from one chunk to the next.

    ``random_bptt`` (AWD-LSTM, Merity et al. 2017): each chunk's length is ``bptt`` with p = 0.95 else ``bptt/2``,
    then drawn from N(that, 5), at least 1 — so the chunk boundaries move between epochs and every position gets to
    be early and late in a chunk. The lengths are a function of (seed, epoch), so the stream is resumable at any
    (epoch, batch) by ``batches(epoch, start=batch)``.
    """

    def __init__(self, tokens: Tensor, batch_size: int, bptt: int, *, random_bptt: bool = False, seed: int = 0,
                 name: str = "stream") -> None:
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise DataError(f"bptt must be an integer >= 1 (steps per chunk); got {bptt!r}")
        if tokens.dim() != 1:
            raise ValueError(f"{name}: tokens must be a 1-D stream of ids; got shape {tuple(tokens.shape)}")
        # The stream stays as it is (it may be a memory map of the token cache, in uint8/int16/int32): each chunk is
        # gathered from it by index, the batchify layout is never built. Column b is tokens[b*rows : (b+1)*rows].
        self.rows = _rows(tokens.numel(), batch_size, name)
        self.tokens = tokens  # (N,)
        self._starts = torch.arange(batch_size) * self.rows  # (B,) where each column starts in the stream
        # A stream the token cache mapped is read from its file (pread): a page of a memory map stays in the
        # process's RSS once touched (a whole 2 MB folio on recent kernels), so B columns moving through a large
        # file would add up to the file's size; the page cache holds the same data outside the RSS.
        self._file = getattr(tokens, "_rnnlab_file", None) if hasattr(os, "pread") else None
        self._memo = None  # (epoch, its random chunk lengths)
        self.batch_size, self.bptt, self.random_bptt, self.seed, self.name = batch_size, bptt, random_bptt, seed, name

    @property
    def data(self) -> Tensor:
        """The ``batchify`` layout (rows, B) as int64, built on each call: for inspecting small streams (training
        reads chunks without it)."""
        return batchify(self.tokens[:self.rows * self.batch_size].long(), self.batch_size, self.name)

    def chunk_lengths(self, epoch: int) -> list[int]:
        """The T of every chunk of ``epoch`` (the last one may be shorter: the stream ends)."""
        steps = self.rows - 1  # the last row is only ever a target
        if not self.random_bptt:
            return [min(self.bptt, steps - i) for i in range(0, steps, self.bptt)]
        return list(self._random_lengths(epoch))

    def _random_lengths(self, epoch: int) -> tuple[int, ...]:
        # Kept for the last epoch computed: the trainer reads the count at every log line, and a large corpus has
        # millions of chunks an epoch.
        if self._memo is not None and self._memo[0] == epoch:
            return self._memo[1]
        steps = self.rows - 1
        rng = random.Random(self.seed * 1_000_003 + epoch)
        lengths, i = [], 0
        while i < steps:
            base = self.bptt if rng.random() < 0.95 else self.bptt / 2
            n = min(max(1, int(rng.gauss(base, 5))), steps - i)
            lengths.append(n)
            i += n
        self._memo = (epoch, tuple(lengths))
        return self._memo[1]

    def num_batches(self, epoch: int = 0) -> int:
        if not self.random_bptt:
            return -(-(self.rows - 1) // self.bptt)  # ceil: the last chunk may be shorter
        return len(self._random_lengths(epoch))

    @property
    def tokens_per_epoch(self) -> int:
        return (self.rows - 1) * self.batch_size

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The chunks of ``epoch`` from chunk index ``start`` on."""
        steps = self.rows - 1
        if self.random_bptt:
            lengths = self._random_lengths(epoch)
            i, todo = sum(lengths[:start]), lengths[start:]
        else:  # without a list: a large corpus has millions of chunks an epoch
            i = min(start * self.bptt, steps)
            todo = (min(self.bptt, steps - j) for j in range(i, steps, self.bptt))
        for n in todo:
            rows = self._read(i, n + 1) if self._file is not None else \
                self.tokens[torch.arange(i, i + n + 1).unsqueeze(1) + self._starts].long()  # (T + 1, B)
            yield rows[:-1], rows[1:]  # (T, B) inputs, (T, B) next tokens: rows i .. i+n of data
            i += n

    def _read(self, i: int, n: int) -> Tensor:
        """Rows i .. i+n-1 of the batchify layout, read from the token cache's file: (n, B) int64."""
        file, offset, dtype = self._file
        size = np.dtype(dtype).itemsize
        out = np.empty((self.batch_size, n), dtype=dtype)
        for b in range(self.batch_size):
            raw = os.pread(file.fd, n * size, offset + (b * self.rows + i) * size)
            if len(raw) != n * size:
                raise DataError(f"{file.path}: the token cache file was cut short while in use; run again (a "
                                "damaged cache is rebuilt)")
            out[b] = np.frombuffer(raw, dtype=dtype)
        return torch.from_numpy(out.T.astype(np.int64))  # (n, B)

    def __iter__(self):
        return self.batches(0)

    def __len__(self) -> int:
        return self.num_batches(0)

