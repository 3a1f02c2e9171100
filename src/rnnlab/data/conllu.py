"""Part-of-speech data: reading CoNLL-U (with the ``conllu`` library, an optional package: ``rnnlab[text]``), the
word / character / tag vocabularies a tagger needs, and writing tagged output.

CoNLL-U (https://universaldependencies.org/format.html): one line per word with 10 tab-separated columns

    ID  FORM  LEMMA  UPOS  XPOS  FEATS  HEAD  DEPREL  DEPS  MISC

sentences separated by a blank line, comment lines starting with ``#``. Two kinds of lines are not words of the
sentence, and are skipped here as the UD guidelines say:

- multiword-token ranges (ID ``1-2``, e.g. "don't" over the syntactic words "do" and "n't"): the surface token;
  the syntactic words that follow carry the tags;
- empty nodes (ID ``8.1``, enhanced dependencies only): not part of the surface sentence.

``column`` picks the tag: ``upos`` (the 17 universal tags) or ``xpos`` (the treebank's own, e.g. Penn tags).

Data flows: file → ``read_conllu`` / ``read_conllu_sentences`` → ``TaggingVocab.build`` (training sentences) →
``TaggingVocab.encode`` (ids) → batches (``rnnlab.train.tagging``); predictions → ``format_conllu`` (the input's
lines, the predicted tag written into the chosen column) or ``format_slash`` (``word/TAG``, a sentence per line).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .._optional import require
from .text import DataError, read_text

COLUMNS = {"upos": 3, "xpos": 4}  # the tag columns, as 0-based field indices of a word line
FIELDS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
PAD, UNK = "<pad>", "<unk>"
# Character features see at most this many characters of a word: longer "words" (URLs, e-mail addresses) keep their
# first and last MAX_WORD_CHARS // 2 characters, which still show their shape, prefix and suffix. 32 covers every
# ordinary English word whole (0.1% of EWT's training words are longer than 20 characters).
MAX_WORD_CHARS = 32
_FORMAT_HINT = ("CoNLL-U has one word per line with 10 tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD "
                "DEPREL DEPS MISC), '_' for an empty field, and a blank line after each sentence")


def _check_column(column: str) -> int:
    if column not in COLUMNS:
        raise ValueError(f"column must be one of {', '.join(COLUMNS)} (the tag column to read); got {column!r}")
    return COLUMNS[column]


@dataclass
class ConlluSentence:
    """One sentence as read: its syntactic words, their tags in the chosen column, and the raw lines (for writing
    the sentence back with predicted tags)."""

    words: list[str]
    tags: list[str] | None  # None: the column is empty ('_') in this sentence (allowed only without require_tags)
    lines: list[str]  # every line of the sentence as in the file: comments, ranges, empty nodes, words
    word_lines: list[int]  # lines[word_lines[i]] is word i's line
    line_no: int = 1  # the 1-based line number of lines[0] in the file


# -- reading -----------------------------------------------------------------------------------------------------
def _read_file(path: str | Path, what: str = "CoNLL-U file") -> str:
    return read_text(path, what, "a tagger needs sentences to read")


def _short(line: str, n: int = 40) -> str:
    return repr(line if len(line) <= n else line[:n] + "...")


def parse_conllu(text: str, name: str = "<string>", column: str = "upos",
                 require_tags: bool = True) -> list[ConlluSentence]:
    """The sentences of CoNLL-U ``text`` (``name`` is used in error messages). With ``require_tags`` every word
    must have a tag in ``column``; without it a sentence whose column is all '_' gets ``tags=None`` (text to tag)."""
    col = _check_column(column)
    conllu = require("conllu", purpose="reading CoNLL-U")  # imported here: `import rnnlab` does not need it
    lines = text.split("\n")
    sentences: list[ConlluSentence] = []
    block: list[str] = []
    start = 1
    for i, raw in enumerate(lines + [""], start=1):  # the extra "" ends a last sentence without a blank line
        line = raw.rstrip("\r")
        if line.strip():
            if not block:
                start = i
            block.append(line)
            continue
        if block:
            sent = _parse_block(conllu, block, start, name, column, col, require_tags)
            if sent is not None:
                sentences.append(sent)
            block = []
    if not sentences:
        raise DataError(f"{name}: no sentences (only comments); {_FORMAT_HINT}")
    return sentences


def _parse_block(conllu, block: list[str], start: int, name: str, column: str, col: int,
                 require_tags: bool) -> ConlluSentence | None:
    words, tags, word_lines = [], [], []
    missing: list[int] = []  # line numbers of words without a tag
    expected = 1
    for k, line in enumerate(block):
        n = start + k
        if line.startswith("#"):
            continue
        where = f"{name}: line {n}"
        fields = line.split("\t")
        if len(fields) != 10:
            if len(fields) == 1:
                raise DataError(f"{where}: {_short(line)} is not a CoNLL-U line (no tabs); is this a CoNLL-U file? "
                                f"{_FORMAT_HINT}")
            lacking = f"; the {column.upper()} column (column {col + 1}) is missing" if len(fields) <= col else ""
            raise DataError(f"{where}: {len(fields)} tab-separated columns{lacking}; {_FORMAT_HINT}")
        try:
            token = conllu.parser.parse_line(line, fields=conllu.parser.DEFAULT_FIELDS)
        except conllu.exceptions.ParseException as exc:
            raise DataError(f"{where}: {_short(line)} is not a CoNLL-U word line ({exc}); {_FORMAT_HINT}") from None
        tid = token["id"]
        if isinstance(tid, tuple):  # a multiword-token range (1, '-', 2) or an empty node (8, '.', 1): not a word
            continue
        if tid != expected:
            hint = ("a blank line must separate sentences" if tid == 1 else
                    "word IDs must count 1, 2, 3 ... within a sentence")
            raise DataError(f"{where}: word ID {tid} where {expected} was expected; {hint}")
        expected += 1
        tag = fields[col]
        if tag == "_" or not tag:
            missing.append(n)
        words.append(fields[1])
        tags.append(tag)
        word_lines.append(k)
    if not words:
        return None  # only comments (e.g. a document's closing metadata): nothing to tag
    if missing and (require_tags or len(missing) < len(words)):
        n = missing[0]
        word = words[[start + k for k in word_lines].index(n)]
        if require_tags:
            fix = (f"every word needs a tag to train or evaluate on. Fill the column, or choose the other one with "
                   f"--column {'xpos' if column == 'upos' else 'upos'} if that one is complete")
        else:
            fix = "a sentence to be tagged must have all its tags or none. Fill the column or set it to '_' throughout"
        raise DataError(f"{name}: line {n}: word {word!r} has no {column.upper()} tag ('_' in column {col + 1}); "
                        f"{fix}")
    return ConlluSentence(words, None if missing else tags, list(block), word_lines, start)


def read_conllu_sentences(path: str | Path, column: str = "upos", require_tags: bool = True) -> list[ConlluSentence]:
    """``parse_conllu`` of a file; a DataError naming the file (and line) when it is missing, empty, not UTF-8 or
    not CoNLL-U."""
    _check_column(column)
    return parse_conllu(_read_file(path), str(path), column, require_tags)


def read_conllu(path: str | Path, column: str = "upos") -> list[tuple[list[str], list[str]]]:
    """The file's sentences as ``(words, tags)``: the syntactic words (multiword-token ranges and empty nodes
    skipped) and their tags in ``column`` ('upos' or 'xpos')."""
    return [(s.words, s.tags) for s in read_conllu_sentences(path, column)]


def parse_plain(text: str, name: str = "<string>") -> list[ConlluSentence]:
    """Plain text to tag: one sentence per line, tokens separated by whitespace (already tokenised as the training
    data was); blank lines are skipped."""
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        words = line.split()
        if words:
            rows = [f"{j}\t{w}\t_\t_\t_\t_\t_\t_\t_\t_" for j, w in enumerate(words, start=1)]
            out.append(ConlluSentence(words, None, rows, list(range(len(words))), i))
    if not out:
        raise DataError(f"{name}: no words in the file; give one sentence per line, tokens separated by spaces")
    return out


def read_plain(path: str | Path) -> list[ConlluSentence]:
    """``parse_plain`` of a file."""
    return parse_plain(_read_file(path, "text file"), str(path))


# -- writing -------------------------------------------------------------------------------------------------------
def _check_tags(sentences, tags) -> None:
    if len(tags) != len(sentences):
        raise ValueError(f"need one tag list per sentence: got {len(tags)} tag lists for {len(sentences)} sentences")
    for i, (s, t) in enumerate(zip(sentences, tags)):
        words = s.words if isinstance(s, ConlluSentence) else s
        if len(t) != len(words):
            raise ValueError(f"sentence {i}: {len(t)} tags for {len(words)} words; give one tag per word")


def format_conllu(sentences: list[ConlluSentence], tags: list[list[str]], column: str = "upos") -> str:
    """CoNLL-U text: each sentence's lines as read, with ``tags`` written into ``column`` of its word lines
    (ranges, empty nodes and comments unchanged); sentences end with a blank line."""
    col = _check_column(column)
    _check_tags(sentences, tags)
    out = []
    for s, t in zip(sentences, tags):
        lines = list(s.lines)
        for k, tag in zip(s.word_lines, t):
            fields = lines[k].split("\t")
            fields[col] = tag
            lines[k] = "\t".join(fields)
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


def format_slash(sentences: list[ConlluSentence] | list[list[str]], tags: list[list[str]]) -> str:
    """``word/TAG word/TAG ...``, one sentence per line."""
    _check_tags(sentences, tags)
    out = []
    for s, t in zip(sentences, tags):
        words = s.words if isinstance(s, ConlluSentence) else s
        out.append(" ".join(f"{w}/{g}" for w, g in zip(words, t)) + "\n")
    return "".join(out)


# -- vocabularies --------------------------------------------------------------------------------------------------
@dataclass
class SymbolVocab:
    """Strings ↔ ids: the ``specials`` first (``<pad>`` = 0, ``<unk>`` = 1 when present), then the symbols by
    falling count (ties alphabetically, so the same data always gives the same ids)."""

    itos: list[str]
    specials: tuple[str, ...] = (PAD, UNK)

    def __post_init__(self) -> None:
        self.specials = tuple(self.specials)
        if list(self.itos[:len(self.specials)]) != list(self.specials):
            raise ValueError(f"the vocabulary must start with its specials {list(self.specials)}; got "
                             f"{self.itos[:len(self.specials)]}")
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("the vocabulary lists a symbol twice; every symbol needs one id")

    @classmethod
    def build(cls, counts: Counter, min_count: int = 1, specials: tuple[str, ...] = (PAD, UNK),
              keep=frozenset()) -> SymbolVocab:
        """Symbols seen at least ``min_count`` times, and those in ``keep`` seen at all (e.g. words that have a
        pretrained vector: they need no training examples to get a useful row)."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1 (the fewest occurrences a symbol needs to get its "
                             f"own id); got {min_count!r}")
        kept = sorted((s for s, c in counts.items() if (c >= min_count or s in keep) and s not in specials),
                      key=lambda s: (-counts[s], s))
        return cls(list(specials) + kept, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.stoi

    @property
    def pad_id(self) -> int | None:
        return self.stoi.get(PAD) if PAD in self.specials else None

    @property
    def unk_id(self) -> int | None:
        return self.stoi.get(UNK) if UNK in self.specials else None

    def id(self, symbol: str, default: int | None = None) -> int:
        """The symbol's id; an unknown symbol gets ``<unk>``'s id, else ``default``, else a KeyError."""
        i = self.stoi.get(symbol)
        if i is not None:
            return i
        if self.unk_id is not None:
            return self.unk_id
        if default is not None:
            return default
        raise KeyError(f"{symbol!r} is not in the vocabulary (and it has no {UNK})")

    def to_json(self) -> dict:
        return {"itos": list(self.itos), "specials": list(self.specials)}

    @classmethod
    def from_json(cls, obj: dict) -> SymbolVocab:
        return cls(list(obj["itos"]), tuple(obj["specials"]))


def word_chars(word: str, max_chars: int = MAX_WORD_CHARS) -> str:
    """The characters the char features read: the whole word, or its first and last ``max_chars // 2``."""
    if len(word) <= max_chars:
        return word
    half = max_chars // 2
    return word[:half] + word[len(word) - (max_chars - half):]


@dataclass
class TaggingVocab:
    """The three vocabularies of a tagger, built on the training sentences: words (``<pad>``, ``<unk>``, words seen
    at least ``min_count`` times), characters (``<pad>``, ``<unk>``, the training words' characters) and tags (no
    specials: exactly the training tags). ``column`` records which CoNLL-U column the tags came from."""

    words: SymbolVocab
    chars: SymbolVocab
    tags: SymbolVocab
    column: str = "upos"
    max_word_chars: int = MAX_WORD_CHARS

    @classmethod
    def build(cls, sentences, column: str = "upos", min_count: int = 1,
              max_word_chars: int = MAX_WORD_CHARS, keep=frozenset()) -> TaggingVocab:
        """``sentences``: ``(words, tags)`` pairs or ``ConlluSentence``s (the training data); ``keep``: words kept
        even when seen fewer than ``min_count`` times."""
        _check_column(column)
        wc, cc, tc = Counter(), Counter(), Counter()
        for s in sentences:
            words, tags = (s.words, s.tags) if isinstance(s, ConlluSentence) else s
            wc.update(words)
            cc.update(c for w in words for c in word_chars(w, max_word_chars))
            if tags is None:
                raise ValueError("a training sentence has no tags; the tag vocabulary is built from gold tags")
            tc.update(tags)
        if not tc:
            raise ValueError("no training words: the vocabularies need at least one tagged word")
        return cls(SymbolVocab.build(wc, min_count, keep=keep), SymbolVocab.build(cc), SymbolVocab.build(tc, specials=()),
                   column, max_word_chars)

    def is_unknown(self, word: str) -> bool:
        """True for a word the word vocabulary maps to ``<unk>`` (unseen in training, or rarer than min_count)."""
        return word not in self.words

    def encode_words(self, words: list[str]) -> list[int]:
        return [self.words.id(w) for w in words]

    def encode_chars(self, words: list[str]) -> list[list[int]]:
        return [[self.chars.id(c) for c in word_chars(w, self.max_word_chars)] or [self.chars.unk_id] for w in words]

    def encode_tags(self, tags: list[str], unseen: int = -100) -> list[int]:
        """Tag ids; a tag the training data did not have gets ``unseen`` (the loss's ignore index by default)."""
        return [self.tags.id(t, default=unseen) for t in tags]

    def decode_tags(self, ids) -> list[str]:
        return [self.tags.itos[int(i)] for i in ids]

    def to_json(self) -> dict:
        return {"words": self.words.to_json(), "chars": self.chars.to_json(), "tags": self.tags.to_json(),
                "column": self.column, "max_word_chars": self.max_word_chars}

    @classmethod
    def from_json(cls, obj: dict) -> TaggingVocab:
        try:
            return cls(SymbolVocab.from_json(obj["words"]), SymbolVocab.from_json(obj["chars"]),
                       SymbolVocab.from_json(obj["tags"]), obj["column"], int(obj["max_word_chars"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a tagging vocabulary (missing or bad field {exc})") from None
